package executor_test

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/identity"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// fakeTrust is an executor.Trust the test changes by hand, telling the
// subscribers as a TrustView's watch would.
type fakeTrust struct {
	mu       sync.Mutex
	revoked  map[string]bool
	disabled map[string]bool
	subs     []func(registry.TrustChange)
}

var _ executor.Trust = (*fakeTrust)(nil)

func newFakeTrust() *fakeTrust {
	return &fakeTrust{revoked: map[string]bool{}, disabled: map[string]bool{}}
}

func (f *fakeTrust) Revoked(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.revoked[id]
}

func (f *fakeTrust) Enrollment(id string) (registry.TrustedEnrollment, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return registry.TrustedEnrollment{Enrollment: registry.Enrollment{ID: id, Kind: registry.EnrollmentX509, Disabled: f.disabled[id]}}, true
}

func (f *fakeTrust) OnChange(fn func(registry.TrustChange)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = append(f.subs, fn)
}

func (f *fakeTrust) change(apply func(), c registry.TrustChange) {
	f.mu.Lock()
	apply()
	subs := f.subs
	f.mu.Unlock()
	for _, fn := range subs {
		fn(c)
	}
}

func (f *fakeTrust) revoke(device string) {
	f.change(func() { f.revoked[device] = true }, registry.TrustChange{RevokedDevice: device})
}

func (f *fakeTrust) disable(enrollment string) {
	f.change(func() { f.disabled[enrollment] = true }, registry.TrustChange{ClosedEnrollment: enrollment})
}

// tlsHarness is an executor on real TLS on loopback, with a trust view.
type tlsHarness struct {
	*harness
	addr     string
	serverCA *testutil.TestCA
	trust    *fakeTrust
}

func startTLSExecutor(t *testing.T) *tlsHarness {
	t.Helper()
	serverCA := testutil.NewTestCA(t, "servers")
	trust := newFakeTrust()
	cfg := testConfig()
	key, signer, verifier := testKeys(t)
	reg := newFakeRegistrar()
	srv, err := executor.New(cfg, verifier, reg, nil,
		executor.WithTrust(trust), executor.WithCredentials(credentials.NewTLS(serverCA.ServerTLS(t))))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	h := &harness{cfg: cfg, srv: srv, reg: reg, key: key, signer: signer, stop: stop, done: make(chan error, 1)}
	go func() { h.done <- srv.Run(ctx, lis) }()
	t.Cleanup(func() {
		stop()
		if err := h.wait(t); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &tlsHarness{harness: h, addr: lis.Addr().String(), serverCA: serverCA, trust: trust}
}

// as returns a harness whose streams go over a TLS connection presenting
// cert (none when nil).
func (h *tlsHarness) as(t *testing.T, cert *tls.Certificate) *harness {
	t.Helper()
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(h.serverCA.ClientTLS(cert))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := *h.harness
	c.client = executorv1.NewExecutorServiceClient(conn)
	return &c
}

// bound mints a token for device bound to b.
func (h *tlsHarness) bound(t *testing.T, device string, b token.Binding) string {
	t.Helper()
	tok, _, err := h.signer.SignBound(device, testGroup, "default", 1, time.Minute, b)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestConnectBoundToken(t *testing.T) {
	h := startTLSExecutor(t)
	devices := testutil.NewTestCA(t, "devices")
	mine := devices.Issue(t, testutil.LeafOptions{DeviceURI: "dev-1"})
	thief := devices.Issue(t, testutil.LeafOptions{DeviceURI: "dev-2"})
	boundToMine := token.Binding{Thumbprint: identity.Thumbprint(mine.Leaf), Enrollment: "factory"}
	h.trust.revoke("dev-revoked")
	h.trust.disable("retired")

	tests := []struct {
		name    string
		cert    *tls.Certificate
		device  string
		binding token.Binding
		want    codes.Code
	}{
		{"bound token on its certificate", &mine, "dev-1", boundToMine, codes.OK},
		{"bound token replayed with another certificate", &thief, "dev-1", boundToMine, codes.Unauthenticated},
		{"bound token replayed without a certificate", nil, "dev-1", boundToMine, codes.Unauthenticated},
		{"unbound token (open enrollment), no certificate", nil, "dev-1", token.Binding{}, codes.OK},
		{"symmetric-key token (enrollment, no cnf)", nil, "dev-1", token.Binding{Enrollment: "sensors"}, codes.OK},
		{"revoked device", nil, "dev-revoked", token.Binding{}, codes.PermissionDenied},
		{"disabled enrollment", nil, "dev-1", token.Binding{Enrollment: "retired"}, codes.PermissionDenied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := h.as(t, tc.cert).hello(t, tc.device, h.bound(t, tc.device, tc.binding))
			if tc.want == codes.OK {
				d.next(t, "Welcome", func(f *executorv1.ConnectResponse) bool { return f.GetWelcome() != nil })
				d.leave(t)
				return
			}
			if got := status.Code(d.closed(t)); got != tc.want {
				t.Errorf("stream ended with %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRevocationClosesStreams(t *testing.T) {
	tests := []struct {
		name    string
		binding token.Binding
		act     func(*fakeTrust)
	}{
		{"device revoked", token.Binding{}, func(f *fakeTrust) { f.revoke("dev-1") }},
		{"enrollment disabled", token.Binding{Enrollment: "sensors"}, func(f *fakeTrust) { f.disable("sensors") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := startTLSExecutor(t)
			c := h.as(t, nil)
			d := c.hello(t, "dev-1", h.bound(t, "dev-1", tc.binding))
			d.next(t, "Welcome", func(f *executorv1.ConnectResponse) bool { return f.GetWelcome() != nil })
			other := c.hello(t, "dev-2", h.bound(t, "dev-2", token.Binding{Enrollment: "factory"}))
			other.next(t, "Welcome", func(f *executorv1.ConnectResponse) bool { return f.GetWelcome() != nil })
			start := time.Now()
			tc.act(h.trust)
			g := d.next(t, "Goodbye", func(f *executorv1.ConnectResponse) bool { return f.GetGoodbye() != nil }).GetGoodbye()
			if g.GetReason() != executorv1.GoodbyeReason_GOODBYE_REASON_REVOKED {
				t.Errorf("Goodbye reason = %v, want REVOKED", g.GetReason())
			}
			if got := status.Code(d.closed(t)); got != codes.PermissionDenied {
				t.Errorf("stream ended with %v, want PermissionDenied", got)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("stream closed %v after the revocation; want within 2s", took)
			}
			if got := h.srv.Stats().Revoked; got != 1 {
				t.Errorf("Stats().Revoked = %d, want 1", got)
			}
			// Another device's stream stays.
			if got := h.srv.Sessions(); got != 1 {
				t.Errorf("sessions after the revocation = %d, want 1 (the other device's)", got)
			}
			// The revoked identity cannot come back with its token.
			again := c.hello(t, "dev-1", h.bound(t, "dev-1", tc.binding))
			if got := status.Code(again.closed(t)); got != codes.PermissionDenied {
				t.Errorf("reconnect after revocation ended with %v, want PermissionDenied", got)
			}
			other.leave(t)
		})
	}
}
