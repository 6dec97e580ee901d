package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/berthproject/berth/internal/tlsfiles"
	"github.com/berthproject/berth/pki"
	"github.com/berthproject/berth/registry"
)

// benchServerName is the name the benchmark's clients check the servers'
// certificate against, whatever loopback address they dial.
const benchServerName = "localhost"

// benchEnrollment is the X.509 enrollment of the benchmark's devices.
const benchEnrollment = "bench-devices"

// benchTLS is the throwaway PKI of a TLS run: a server CA and a server
// certificate written to files (the servers under test read them as in
// production), and a device CA that issues client certificates in memory.
type benchTLS struct {
	// certFile and keyFile are the servers' certificate and key.
	certFile, keyFile string
	roots             *x509.CertPool
	deviceCA          *pki.Pair
}

// newBenchTLS makes the PKI in dir.
func newBenchTLS(dir string) (*benchTLS, error) {
	ca, err := pki.NewCA("berth bench server CA", time.Hour)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	hosts := []string{benchServerName, "127.0.0.1"}
	srv, err := ca.IssueServer(hosts, time.Hour)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	t := &benchTLS{certFile: filepath.Join(dir, "server.pem"), keyFile: filepath.Join(dir, "server-key.pem"), roots: x509.NewCertPool()}
	if err := srv.Write(t.certFile, t.keyFile, false); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	t.roots.AddCert(ca.Cert)
	if t.deviceCA, err = pki.NewCA("berth bench device CA", time.Hour); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return t, nil
}

// device issues a client certificate for device id.
func (t *benchTLS) device(id string) (tls.Certificate, *x509.Certificate, error) {
	p, err := t.deviceCA.IssueDevice(id, time.Hour)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("bench: device certificate %s: %w", id, err)
	}
	keyPEM, err := p.KeyPEM()
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("bench: %w", err)
	}
	c, err := tls.X509KeyPair(p.CertPEM(), keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("bench: %w", err)
	}
	return c, p.Cert, nil
}

// client returns a client configuration presenting cert.
func (t *benchTLS) client(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      t.roots,
		ServerName:   benchServerName,
		Certificates: []tls.Certificate{cert},
	}
}

// enroll stores the X.509 enrollment of the device CA.
func (t *benchTLS) enroll(ctx context.Context, reg *registry.Registry) error {
	err := reg.CreateEnrollment(ctx, registry.Enrollment{
		ID: benchEnrollment, Kind: registry.EnrollmentX509, CAPEM: string(t.deviceCA.CertPEM()), CreatedAt: time.Now(),
	})
	if err != nil {
		return fmt.Errorf("bench: storing the device enrollment: %w", err)
	}
	return nil
}

// serverTLS returns the TLS configuration of a server under test: its
// certificate from files, client certificates requested and passed on
// unverified for the server's own checks (the control plane's enrollments,
// the executor's token binding), as `berth controlplane` and `berth
// executor` run without --tls-client-ca. nil when c serves plaintext.
func (c ServeConfig) serverTLS(log *slog.Logger) (*tls.Config, error) {
	if c.TLSCert == "" && c.TLSKey == "" {
		return nil, nil
	}
	return tlsfiles.ServerConfig(tlsfiles.ServerFiles{Cert: c.TLSCert, Key: c.TLSKey}, log.With("component", "tls"), nil)
}
