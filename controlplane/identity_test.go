package controlplane_test

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/controlplane"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/identity"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// trust is an in-memory identity.Trust.
type trust struct {
	enr     map[string]registry.TrustedEnrollment
	revoked map[string]bool
}

func (f *trust) Enrollment(id string) (registry.TrustedEnrollment, bool) {
	e, ok := f.enr[id]
	return e, ok
}

func (f *trust) X509Enrollments() []registry.TrustedEnrollment {
	var out []registry.TrustedEnrollment
	for _, e := range f.enr {
		if e.Kind == registry.EnrollmentX509 {
			out = append(out, e)
		}
	}
	return out
}

func (f *trust) Revoked(id string) bool { return f.revoked[id] }

// tlsFixture is a control plane on real TLS on loopback, with identity on.
type tlsFixture struct {
	addr     string
	ca       *testutil.TestCA
	store    *fakeStore
	verifier *token.Verifier
}

func startTLS(t *testing.T, tr identity.Trust, open bool) *tlsFixture {
	t.Helper()
	priv, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := token.NewSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := token.NewVerifier(nil, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	auth, err := identity.New(tr, open, nil)
	if err != nil {
		t.Fatal(err)
	}
	groups, execs := twoGroups()
	cache := &fakeCache{snap: registry.NewSnapshot(1, groups, execs), records: map[string]registry.Assignment{}}
	store := &fakeStore{cache: cache}
	srv, err := controlplane.New(controlplane.DefaultConfig(), cache, store, signer, nil, controlplane.WithAuthenticator(auth))
	if err != nil {
		t.Fatal(err)
	}
	serverCA := testutil.NewTestCA(t, "servers")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverCA.ServerTLS(t))))
	srv.Register(gs)
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &tlsFixture{addr: lis.Addr().String(), ca: serverCA, store: store, verifier: verifier}
}

// assign calls Assign over a fresh TLS connection presenting cert (none
// when nil), with md as metadata.
func (f *tlsFixture) assign(t *testing.T, cert *tls.Certificate, md metadata.MD, device string) (*controlplanev1.AssignResponse, error) {
	t.Helper()
	cc, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(f.ca.ClientTLS(cert))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	if md != nil {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	return controlplanev1.NewControlPlaneServiceClient(cc).Assign(ctx, &controlplanev1.AssignRequest{DeviceId: device})
}

func TestAssignIdentity(t *testing.T) {
	factory := testutil.NewTestCA(t, "factory")
	stranger := testutil.NewTestCA(t, "stranger")
	pool, err := registry.ParseCAPool(factory.PEM)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, registry.SymmetricKeySize)
	key[0] = 7
	tr := &trust{
		enr: map[string]registry.TrustedEnrollment{
			"factory": {Enrollment: registry.Enrollment{ID: "factory", Kind: registry.EnrollmentX509, CAPEM: factory.PEM}, Pool: pool},
			"sensors": {Enrollment: registry.Enrollment{ID: "sensors", Kind: registry.EnrollmentSymmetric, Key: key}},
			"retired": {Enrollment: registry.Enrollment{ID: "retired", Kind: registry.EnrollmentSymmetric, Key: key, Disabled: true}},
		},
		revoked: map[string]bool{"dev-stolen": true},
	}
	good := factory.Issue(t, testutil.LeafOptions{DeviceURI: "dev-1"})
	expired := factory.Issue(t, testutil.LeafOptions{DeviceURI: "dev-1", Expired: true})
	foreign := stranger.Issue(t, testutil.LeafOptions{DeviceURI: "dev-1"})
	stolen := factory.Issue(t, testutil.LeafOptions{DeviceURI: "dev-stolen"})
	sig := func(enr, dev string, exp time.Duration) metadata.MD {
		return metadata.Pairs(identity.SignatureHeader, identity.Sign(enr, identity.DeviceKey(key, dev), dev, time.Now().Add(exp)))
	}
	forged := metadata.Pairs(identity.SignatureHeader, identity.Sign("sensors", identity.DeviceKey([]byte("not the key"), "dev-s"), "dev-s", time.Now().Add(time.Minute)))

	tests := []struct {
		name        string
		open        bool
		cert        *tls.Certificate
		md          metadata.MD
		device      string
		want        codes.Code
		wantBinding token.Binding
	}{
		{"good cert", false, &good, nil, "dev-1", codes.OK, token.Binding{Thumbprint: identity.Thumbprint(good.Leaf), Enrollment: "factory"}},
		{"good cert, device_id left empty", false, &good, nil, "", codes.OK, token.Binding{Thumbprint: identity.Thumbprint(good.Leaf), Enrollment: "factory"}},
		{"cert from another CA", false, &foreign, nil, "dev-1", codes.Unauthenticated, token.Binding{}},
		{"expired cert", false, &expired, nil, "dev-1", codes.Unauthenticated, token.Binding{}},
		{"impostor: another device's id", false, &good, nil, "dev-2", codes.PermissionDenied, token.Binding{}},
		{"revoked device", false, &stolen, nil, "dev-stolen", codes.PermissionDenied, token.Binding{}},
		{"good signature", false, nil, sig("sensors", "dev-s", time.Minute), "dev-s", codes.OK, token.Binding{Enrollment: "sensors"}},
		{"expired signature", false, nil, sig("sensors", "dev-s", -time.Minute), "dev-s", codes.Unauthenticated, token.Binding{}},
		{"forged signature", false, nil, forged, "dev-s", codes.Unauthenticated, token.Binding{}},
		{"signature replayed for another id", false, nil, sig("sensors", "dev-s", time.Minute), "dev-t", codes.Unauthenticated, token.Binding{}},
		{"disabled enrollment", false, nil, sig("retired", "dev-s", time.Minute), "dev-s", codes.PermissionDenied, token.Binding{}},
		{"no credentials, enrollment closed", false, nil, nil, "dev-1", codes.Unauthenticated, token.Binding{}},
		{"no credentials, open enrollment", true, nil, nil, "dev-1", codes.OK, token.Binding{}},
		{"good cert, open enrollment: still bound", true, &good, nil, "dev-1", codes.OK, token.Binding{Thumbprint: identity.Thumbprint(good.Leaf), Enrollment: "factory"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startTLS(t, tr, tc.open)
			resp, err := f.assign(t, tc.cert, tc.md, tc.device)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("Assign: code %v (%v), want %v", got, err, tc.want)
			}
			if tc.want != codes.OK {
				if f.store.writes != 0 {
					t.Errorf("a refused Assign wrote %d assignment records, want 0", f.store.writes)
				}
				return
			}
			c, err := f.verifier.Verify(resp.GetDestination().GetToken())
			if err != nil {
				t.Fatal(err)
			}
			if c.Binding != tc.wantBinding {
				t.Errorf("token binding = %+v, want %+v", c.Binding, tc.wantBinding)
			}
			if c.DeviceID == "" || f.store.cache.records[c.DeviceID].Thumbprint != tc.wantBinding.Thumbprint {
				t.Errorf("assignment record of %q does not carry the binding %+v", c.DeviceID, tc.wantBinding)
			}
		})
	}
}
