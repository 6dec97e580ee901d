package device

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/pki"
)

// serverCreds issues a server certificate for host and returns the
// server's TLS credentials.
func serverCreds(t *testing.T, ca *pki.Pair, host string) grpc.ServerOption {
	t.Helper()
	p, err := ca.IssueServer([]string{host}, 0)
	if err != nil {
		t.Fatal(err)
	}
	key, err := p.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(p.CertPEM(), key)
	if err != nil {
		t.Fatal(err)
	}
	return grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}))
}

// TestTLSServerName: with Config.TLS, the device checks the control plane
// by the config's ServerName and each executor by the name its endpoint
// gives; an executor whose certificate does not match is not used.
func TestTLSServerName(t *testing.T) {
	ca, err := pki.NewCA("ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	h := newHarnessWith(t, map[string][]grpc.ServerOption{
		"cp":     {serverCreds(t, ca, "cp.test")},
		"exec-a": {serverCreds(t, ca, "exec-a.test")},
		"exec-b": {serverCreds(t, ca, "exec-b.test")},
	}, execSpec{id: "exec-a"}, execSpec{id: "exec-b"})
	// exec-a's endpoint names another certificate: refused; exec-b's is
	// right.
	h.cp.answer = func(n int, _ *controlplanev1.AssignRequest) (*controlplanev1.AssignResponse, error) {
		d := destination(fmt.Sprintf("tok-%d", n), "exec-a", "exec-b")
		d.Endpoints[0].TlsServerName = "wrong.test"
		d.Endpoints[1].TlsServerName = "exec-b.test"
		return &controlplanev1.AssignResponse{Destination: d}, nil
	}
	cfg := h.config()
	cfg.TLS = &tls.Config{RootCAs: roots, ServerName: "cp.test", MinVersion: tls.VersionTLS13}
	d := h.connect(cfg)
	if err := d.WaitForState(waitCtx(t), Connected); err != nil {
		t.Fatalf("WaitForState(Connected) = %v", err)
	}
	if got := d.Session().ExecutorID; got != "exec-b" {
		t.Errorf("connected to %q, want exec-b (exec-a's certificate does not match its endpoint's name)", got)
	}
	if n := h.execs["exec-a"].helloCount(); n != 0 {
		t.Errorf("exec-a got %d Hellos over a connection that failed verification, want 0", n)
	}
}
