package pki_test

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/berthproject/berth/pki"
)

func TestIssueChainsAndNames(t *testing.T) {
	ca, err := pki.NewCA("test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	srv, err := ca.IssueServer([]string{"cp.example", "127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := ca.IssueDevice("printer-7", 0)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.IssueClient("billing", 0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		p       *pki.Pair
		opts    x509.VerifyOptions
		wantCN  string
		wantURI string
	}{
		{"server by name", srv, x509.VerifyOptions{Roots: pool, DNSName: "cp.example"}, "cp.example", ""},
		{"server by IP", srv, x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1"}, "cp.example", ""},
		{"device", dev, x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, "printer-7", "berth://device/printer-7"},
		{"service", svc, x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, "billing", "berth://service/billing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.p.Cert.Verify(tc.opts); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got := tc.p.Cert.Subject.CommonName; got != tc.wantCN {
				t.Errorf("CN = %q, want %q", got, tc.wantCN)
			}
			var got string
			if len(tc.p.Cert.URIs) > 0 {
				got = tc.p.Cert.URIs[0].String()
			}
			if got != tc.wantURI {
				t.Errorf("URI = %q, want %q", got, tc.wantURI)
			}
		})
	}
	// A device certificate is no server certificate.
	if _, err := dev.Cert.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
		t.Error("device certificate verified for server auth")
	}
	// A leaf cannot issue.
	if _, err := dev.IssueDevice("other", 0); !errors.Is(err, pki.ErrNotCA) {
		t.Errorf("issue from a leaf: err = %v, want ErrNotCA", err)
	}
}

func TestBadInput(t *testing.T) {
	ca, err := pki.NewCA("ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", ".", "..", "a/b", "a b", string(make([]byte, 129))} {
		if _, err := ca.IssueDevice(id, 0); !errors.Is(err, pki.ErrBadName) {
			t.Errorf("IssueDevice(%q): err = %v, want ErrBadName", id, err)
		}
		if _, err := ca.IssueClient(id, 0); !errors.Is(err, pki.ErrBadName) {
			t.Errorf("IssueClient(%q): err = %v, want ErrBadName", id, err)
		}
	}
	if _, err := ca.IssueServer([]string{" "}, 0); !errors.Is(err, pki.ErrNoHosts) {
		t.Errorf("IssueServer(blank): err = %v, want ErrNoHosts", err)
	}
}

func TestWriteLoad(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	ca, err := pki.NewCA("ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(cf, kf, false); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]os.FileMode{cf: 0o644, kf: 0o600} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s mode = %v, want %v", filepath.Base(f), got, want)
		}
	}
	other, err := pki.NewCA("other", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Write(cf, kf, false); !errors.Is(err, pki.ErrExists) {
		t.Fatalf("second Write: err = %v, want ErrExists", err)
	}
	got, err := pki.Load(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	if got.Fingerprint() != ca.Fingerprint() {
		t.Error("Load after a refused overwrite: the file changed")
	}
	if _, err := got.IssueDevice("d1", 0); err != nil {
		t.Errorf("issue with a loaded CA: %v", err)
	}
	if err := other.Write(cf, kf, true); err != nil {
		t.Fatalf("Write with overwrite: %v", err)
	}
	if got, err = pki.Load(cf, kf); err != nil || got.Fingerprint() != other.Fingerprint() {
		t.Errorf("Load after overwrite: err %v, same as the new CA %v", err, err == nil && got.Fingerprint() == other.Fingerprint())
	}
}
