package identity_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/berthproject/berth/device"
	"github.com/berthproject/berth/identity"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// fakeTrust is an in-memory identity.Trust.
type fakeTrust struct {
	enr     map[string]registry.TrustedEnrollment
	revoked map[string]bool
}

var _ identity.Trust = (*fakeTrust)(nil)

func (f *fakeTrust) Enrollment(id string) (registry.TrustedEnrollment, bool) {
	e, ok := f.enr[id]
	return e, ok
}

func (f *fakeTrust) X509Enrollments() []registry.TrustedEnrollment {
	var out []registry.TrustedEnrollment
	for _, e := range f.enr {
		if e.Kind == registry.EnrollmentX509 {
			out = append(out, e)
		}
	}
	return out
}

func (f *fakeTrust) Revoked(id string) bool { return f.revoked[id] }

func x509Enrollment(t *testing.T, id string, ca *testutil.TestCA, disabled bool) registry.TrustedEnrollment {
	t.Helper()
	pool, err := registry.ParseCAPool(ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	return registry.TrustedEnrollment{Enrollment: registry.Enrollment{ID: id, Kind: registry.EnrollmentX509, CAPEM: ca.PEM, Disabled: disabled}, Pool: pool}
}

// withPeer returns a context as gRPC gives a handler on a TLS connection
// presenting cert (none when nil), and intermediates after it.
func withPeer(cert *tls.Certificate, intermediates ...*x509.Certificate) context.Context {
	var state tls.ConnectionState
	if cert != nil {
		state.PeerCertificates = append([]*x509.Certificate{cert.Leaf}, intermediates...)
	}
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{}, AuthInfo: credentials.TLSInfo{State: state}})
}

func withSig(ctx context.Context, sig string) context.Context {
	return metadata.NewIncomingContext(ctx, metadata.Pairs(identity.SignatureHeader, sig))
}

func TestAuthenticate(t *testing.T) {
	now := time.Now()
	factory := testutil.NewTestCA(t, "factory")
	old := testutil.NewTestCA(t, "old-line")
	stranger := testutil.NewTestCA(t, "stranger")
	symKey := make([]byte, registry.SymmetricKeySize)
	for i := range symKey {
		symKey[i] = byte(i)
	}
	trust := &fakeTrust{
		enr: map[string]registry.TrustedEnrollment{
			"factory":  x509Enrollment(t, "factory", factory, false),
			"old-line": x509Enrollment(t, "old-line", old, true),
			"sensors":  {Enrollment: registry.Enrollment{ID: "sensors", Kind: registry.EnrollmentSymmetric, Key: symKey}},
			"retired":  {Enrollment: registry.Enrollment{ID: "retired", Kind: registry.EnrollmentSymmetric, Key: symKey, Disabled: true}},
		},
		revoked: map[string]bool{"dev-stolen": true},
	}
	good := factory.Issue(t, testutil.LeafOptions{CommonName: "ignored", DeviceURI: "dev-1"})
	byCN := factory.Issue(t, testutil.LeafOptions{CommonName: "dev-cn"})
	expired := factory.Issue(t, testutil.LeafOptions{DeviceURI: "dev-1", Expired: true})
	foreign := stranger.Issue(t, testutil.LeafOptions{DeviceURI: "dev-1"})
	oldLine := old.Issue(t, testutil.LeafOptions{DeviceURI: "dev-1"})
	stolen := factory.Issue(t, testutil.LeafOptions{DeviceURI: "dev-stolen"})
	serverOnly := factory.Issue(t, testutil.LeafOptions{CommonName: "dev-1", Server: true})
	line := factory.Intermediate(t, "line-3")
	viaLine := line.Issue(t, testutil.LeafOptions{DeviceURI: "dev-3"})
	bare := withPeer(nil)
	sig := func(enr string, key []byte, dev string, exp time.Time) context.Context {
		return withSig(bare, identity.Sign(enr, identity.DeviceKey(key, dev), dev, exp))
	}
	otherKey := append([]byte(nil), symKey...)
	otherKey[0] ^= 1

	tests := []struct {
		name      string
		ctx       context.Context
		open      bool
		requested string
		want      identity.Identity
		wantErr   error
	}{
		{"cert, SAN URI names the device", withPeer(&good), false, "", identity.Identity{DeviceID: "dev-1", Kind: identity.KindX509, Enrollment: "factory", Thumbprint: identity.Thumbprint(good.Leaf)}, nil},
		{"cert, matching device_id", withPeer(&good), false, "dev-1", identity.Identity{DeviceID: "dev-1", Kind: identity.KindX509, Enrollment: "factory", Thumbprint: identity.Thumbprint(good.Leaf)}, nil},
		{"cert, CN names the device", withPeer(&byCN), false, "", identity.Identity{DeviceID: "dev-cn", Kind: identity.KindX509, Enrollment: "factory", Thumbprint: identity.Thumbprint(byCN.Leaf)}, nil},
		{"cert, another device's id", withPeer(&good), false, "dev-2", identity.Identity{}, identity.ErrForbidden},
		{"cert through an intermediate it sent", withPeer(&viaLine, line.Cert), false, "dev-3", identity.Identity{DeviceID: "dev-3", Kind: identity.KindX509, Enrollment: "factory", Thumbprint: identity.Thumbprint(viaLine.Leaf)}, nil},
		{"cert through an intermediate it did not send", withPeer(&viaLine), false, "dev-3", identity.Identity{}, identity.ErrUnauthenticated},
		{"cert from another CA", withPeer(&foreign), false, "dev-1", identity.Identity{}, identity.ErrUnauthenticated},
		{"expired cert", withPeer(&expired), false, "dev-1", identity.Identity{}, identity.ErrUnauthenticated},
		{"cert without client auth usage", withPeer(&serverOnly), false, "dev-1", identity.Identity{}, identity.ErrUnauthenticated},
		{"cert of a disabled enrollment", withPeer(&oldLine), false, "dev-1", identity.Identity{}, identity.ErrForbidden},
		{"cert of a revoked device", withPeer(&stolen), false, "", identity.Identity{}, identity.ErrForbidden},
		{"cert from another CA, open enrollment", withPeer(&foreign), true, "dev-1", identity.Identity{}, identity.ErrUnauthenticated},
		{"good signature", sig("sensors", symKey, "dev-s", now.Add(time.Minute)), false, "dev-s", identity.Identity{DeviceID: "dev-s", Kind: identity.KindSymmetric, Enrollment: "sensors"}, nil},
		{"signature for another device", sig("sensors", symKey, "dev-s", now.Add(time.Minute)), false, "dev-t", identity.Identity{}, identity.ErrUnauthenticated},
		{"expired signature", sig("sensors", symKey, "dev-s", now.Add(-time.Second)), false, "dev-s", identity.Identity{}, identity.ErrUnauthenticated},
		{"signature too far ahead", sig("sensors", symKey, "dev-s", now.Add(2*time.Hour)), false, "dev-s", identity.Identity{}, identity.ErrUnauthenticated},
		{"forged signature", sig("sensors", otherKey, "dev-s", now.Add(time.Minute)), false, "dev-s", identity.Identity{}, identity.ErrUnauthenticated},
		{"unknown enrollment", sig("nobody", symKey, "dev-s", now.Add(time.Minute)), false, "dev-s", identity.Identity{}, identity.ErrUnauthenticated},
		{"signature naming an x509 enrollment", sig("factory", symKey, "dev-s", now.Add(time.Minute)), false, "dev-s", identity.Identity{}, identity.ErrUnauthenticated},
		{"signature of a disabled enrollment", sig("retired", symKey, "dev-s", now.Add(time.Minute)), false, "dev-s", identity.Identity{}, identity.ErrForbidden},
		{"signature of a revoked device", sig("sensors", symKey, "dev-stolen", now.Add(time.Minute)), false, "dev-stolen", identity.Identity{}, identity.ErrForbidden},
		{"malformed signature", withSig(bare, "sensors-no-dots"), false, "dev-s", identity.Identity{}, identity.ErrUnauthenticated},
		{"non-numeric expiry", withSig(bare, "sensors.soon.AAAA"), false, "dev-s", identity.Identity{}, identity.ErrUnauthenticated},
		{"no credentials, enrollment closed", bare, false, "dev-1", identity.Identity{}, identity.ErrUnauthenticated},
		{"no peer at all, enrollment closed", context.Background(), false, "dev-1", identity.Identity{}, identity.ErrUnauthenticated},
		{"no credentials, open enrollment", bare, true, "dev-1", identity.Identity{DeviceID: "dev-1", Kind: identity.KindOpen}, nil},
		{"no credentials, open enrollment, revoked", bare, true, "dev-stolen", identity.Identity{}, identity.ErrForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := identity.New(trust, tc.open, func() time.Time { return now })
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Authenticate(tc.ctx, tc.requested)
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("Authenticate() error = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("Authenticate() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDeviceKeyAndSign(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	// Derived keys differ per device and are stable.
	if a, b := identity.DeviceKey(key, "a"), identity.DeviceKey(key, "b"); string(a) == string(b) {
		t.Error("two devices got the same derived key")
	}
	exp := time.Unix(1_800_000_000, 0)
	got := identity.Sign("en.with.dots", identity.DeviceKey(key, "d"), "d", exp)
	if want := "en.with.dots.1800000000."; len(got) <= len(want) || got[:len(want)] != want {
		t.Errorf("Sign() = %q, want prefix %q", got, want)
	}
	a, err := identity.New(&fakeTrust{enr: map[string]registry.TrustedEnrollment{
		"en.with.dots": {Enrollment: registry.Enrollment{ID: "en.with.dots", Kind: registry.EnrollmentSymmetric, Key: key}},
	}}, false, func() time.Time { return exp.Add(-time.Minute) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(withSig(withPeer(nil), got), "d"); err != nil {
		t.Errorf("an enrollment id with dots: %v", err)
	}
}

// TestDeviceSDKSignature checks that the device SDK's signatures, made
// without this package, are the ones Authenticate accepts.
func TestDeviceSDKSignature(t *testing.T) {
	enrKey := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	if got, want := device.DeriveDeviceKey(enrKey, "dev-9"), identity.DeviceKey(enrKey, "dev-9"); string(got) != string(want) {
		t.Fatal("device.DeriveDeviceKey and identity.DeviceKey differ")
	}
	a, err := identity.New(&fakeTrust{enr: map[string]registry.TrustedEnrollment{
		"sensors": {Enrollment: registry.Enrollment{ID: "sensors", Kind: registry.EnrollmentSymmetric, Key: enrKey}},
	}}, false, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		key     device.SymmetricKey
		wantErr error
	}{
		{"default life", device.SymmetricKey{EnrollmentID: "sensors", DeviceKey: device.DeriveDeviceKey(enrKey, "dev-9")}, nil},
		{"longest life", device.SymmetricKey{EnrollmentID: "sensors", DeviceKey: device.DeriveDeviceKey(enrKey, "dev-9"), Life: device.MaxSignatureLife}, nil},
		{"another device's key", device.SymmetricKey{EnrollmentID: "sensors", DeviceKey: device.DeriveDeviceKey(enrKey, "dev-8")}, identity.ErrUnauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Authenticate(withSig(withPeer(nil), tc.key.Sign("dev-9", now)), "dev-9")
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Errorf("Authenticate() = %v, want %v", err, tc.wantErr)
			}
		})
	}
}
