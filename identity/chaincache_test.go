package identity_test

import (
	"errors"
	"testing"
	"time"

	"github.com/berthproject/berth/identity"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// genTrust is a fakeTrust that tells its enrollments' generation and
// counts how often the enrollments were read for a verification.
type genTrust struct {
	*fakeTrust
	gen   uint64
	reads int
}

func (g *genTrust) EnrollmentGeneration() uint64 { return g.gen }

func (g *genTrust) X509Enrollments() []registry.TrustedEnrollment {
	g.reads++
	return g.fakeTrust.X509Enrollments()
}

// A verified chain is remembered while the enrollments are unchanged and
// the certificate is valid; revocation and the requested id are checked
// on every call.
func TestCertificateChainCache(t *testing.T) {
	factory := testutil.NewTestCA(t, "factory")
	trust := &genTrust{fakeTrust: &fakeTrust{
		enr:     map[string]registry.TrustedEnrollment{"factory": x509Enrollment(t, "factory", factory, false)},
		revoked: map[string]bool{},
	}}
	now := time.Now()
	clock := func() time.Time { return now }
	a, err := identity.New(trust, false, clock)
	if err != nil {
		t.Fatal(err)
	}
	cert := factory.Issue(t, testutil.LeafOptions{DeviceURI: "dev-1"})
	ctx := withPeer(&cert)
	steps := []struct {
		name      string
		change    func()
		requested string
		wantErr   error
		wantReads int // enrollment reads so far
	}{
		{name: "first: verified", requested: "dev-1", wantReads: 1},
		{name: "again: from the cache", requested: "dev-1", wantReads: 1},
		{name: "another id asked: refused from the cache", requested: "dev-2", wantErr: identity.ErrForbidden, wantReads: 1},
		{name: "revoked: refused from the cache", change: func() { trust.revoked["dev-1"] = true }, requested: "dev-1", wantErr: identity.ErrForbidden, wantReads: 1},
		{name: "unrevoked", change: func() { delete(trust.revoked, "dev-1") }, requested: "dev-1", wantReads: 1},
		{name: "enrollment disabled: verified again, refused", change: func() {
			trust.enr["factory"] = x509Enrollment(t, "factory", factory, true)
			trust.gen++
		}, requested: "dev-1", wantErr: identity.ErrForbidden, wantReads: 2},
		{name: "enabled again: verified again", change: func() {
			trust.enr["factory"] = x509Enrollment(t, "factory", factory, false)
			trust.gen++
		}, requested: "dev-1", wantReads: 3},
		{name: "cached again", requested: "dev-1", wantReads: 3},
		{name: "past the certificate's expiry: verified again, refused", change: func() { now = now.Add(10 * 365 * 24 * time.Hour) },
			requested: "dev-1", wantErr: identity.ErrUnauthenticated, wantReads: 4},
	}
	for _, st := range steps {
		if st.change != nil {
			st.change()
		}
		id, err := a.Authenticate(ctx, st.requested)
		switch {
		case st.wantErr != nil && !errors.Is(err, st.wantErr):
			t.Fatalf("%s: Authenticate = %v; want %v", st.name, err, st.wantErr)
		case st.wantErr == nil && (err != nil || id.DeviceID != "dev-1" || id.Enrollment != "factory" || id.Thumbprint == ""):
			t.Fatalf("%s: Authenticate = %+v, %v; want dev-1 of factory", st.name, id, err)
		}
		if trust.reads != st.wantReads {
			t.Errorf("%s: enrollments read %d times; want %d", st.name, trust.reads, st.wantReads)
		}
	}
}
