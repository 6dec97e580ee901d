package registry_test

import (
	"encoding/pem"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

func TestEnrollmentValidate(t *testing.T) {
	ca := testutil.NewTestCA(t, "factory")
	key := make([]byte, registry.SymmetricKeySize)
	tests := []struct {
		name string
		e    registry.Enrollment
		ok   bool
	}{
		{"x509", registry.Enrollment{ID: "f", Kind: registry.EnrollmentX509, CAPEM: ca.PEM}, true},
		{"symmetric", registry.Enrollment{ID: "s", Kind: registry.EnrollmentSymmetric, Key: key}, true},
		{"bad id", registry.Enrollment{ID: "a/b", Kind: registry.EnrollmentSymmetric, Key: key}, false},
		{"dot-dot id", registry.Enrollment{ID: "..", Kind: registry.EnrollmentSymmetric, Key: key}, false},
		{"unknown kind", registry.Enrollment{ID: "u", Kind: "tpm"}, false},
		{"x509 without CA", registry.Enrollment{ID: "f", Kind: registry.EnrollmentX509}, false},
		{"x509 with a key", registry.Enrollment{ID: "f", Kind: registry.EnrollmentX509, CAPEM: ca.PEM, Key: key}, false},
		{"short key", registry.Enrollment{ID: "s", Kind: registry.EnrollmentSymmetric, Key: key[:16]}, false},
		{"symmetric with a CA", registry.Enrollment{ID: "s", Kind: registry.EnrollmentSymmetric, Key: key, CAPEM: ca.PEM}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.e.Validate()
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, registry.ErrInvalid)) {
				t.Errorf("Validate() = %v, want ok %v", err, tc.ok)
			}
		})
	}
	if _, err := registry.ParseCAPool(string(leafPEM(t, ca))); err == nil {
		t.Error("ParseCAPool accepted a leaf certificate")
	}
}

// leafPEM returns a leaf certificate of ca in PEM.
func leafPEM(t *testing.T, ca *testutil.TestCA) []byte {
	t.Helper()
	c := ca.Issue(t, testutil.LeafOptions{CommonName: "leaf"})
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
}

// TestTrustView follows enrollments and revocations through the watch, and
// tells subscribers of the changes that close streams.
func TestTrustView(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	ca := testutil.NewTestCA(t, "factory")
	if err := e.reg.CreateEnrollment(ctx, registry.Enrollment{ID: "factory", Kind: registry.EnrollmentX509, CAPEM: ca.PEM, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.CreateEnrollment(ctx, registry.Enrollment{ID: "factory", Kind: registry.EnrollmentX509, CAPEM: ca.PEM}); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("creating an existing enrollment: %v, want ErrConflict", err)
	}
	if err := e.reg.PutRevocation(ctx, registry.Revocation{DeviceID: "dev-old", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	v := e.reg.NewTrustView(nil)
	var mu sync.Mutex
	var changes []registry.TrustChange
	v.OnChange(func(c registry.TrustChange) {
		mu.Lock()
		changes = append(changes, c)
		mu.Unlock()
	})
	seen := func(c registry.TrustChange) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.Contains(changes, c)
		}
	}
	goRun(t, v.Run)
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if !v.Revoked("dev-old") || len(v.X509Enrollments()) != 1 || v.X509Enrollments()[0].Pool == nil {
		t.Fatalf("after the first listing: revoked(dev-old) %v, x509 enrollments %v", v.Revoked("dev-old"), v.X509Enrollments())
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the listing reporting dev-old", seen(registry.TrustChange{RevokedDevice: "dev-old"}))

	if err := e.reg.PutRevocation(ctx, registry.Revocation{DeviceID: "dev-1", Reason: "stolen", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Second, "dev-1 revoked in the view", func() bool { return v.Revoked("dev-1") })
	testutil.WaitFor(t, 2*time.Second, "dev-1's revocation told", seen(registry.TrustChange{RevokedDevice: "dev-1"}))
	if _, err := e.reg.DeleteRevocation(ctx, "dev-1"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Second, "dev-1's revocation lifted", func() bool { return !v.Revoked("dev-1") })

	if _, err := e.reg.SetEnrollmentDisabled(ctx, "factory", true); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Second, "factory disabled in the view", func() bool {
		en, ok := v.Enrollment("factory")
		return ok && en.Disabled
	})
	testutil.WaitFor(t, 2*time.Second, "factory's disabling told", seen(registry.TrustChange{ClosedEnrollment: "factory"}))
	if _, err := e.reg.SetEnrollmentDisabled(ctx, "nope", true); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("disabling an unknown enrollment: %v, want ErrNotFound", err)
	}
	if found, err := e.reg.DeleteEnrollment(ctx, "factory"); err != nil || !found {
		t.Fatalf("DeleteEnrollment = %v, %v", found, err)
	}
	testutil.WaitFor(t, 2*time.Second, "factory gone from the view", func() bool {
		_, ok := v.Enrollment("factory")
		return !ok
	})
}
