package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
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

// checkRefused opens a stream to addr over creds, sends hello and wants it
// refused with UNAUTHENTICATED before any Welcome.
func checkRefused(ctx context.Context, addr string, creds credentials.TransportCredentials, hello *executorv1.ConnectRequest) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer cc.Close()
	sctx, cancel := context.WithTimeout(ctx, streamOpenTimeout)
	defer cancel()
	st, err := executorv1.NewExecutorServiceClient(cc).Connect(sctx)
	if err == nil {
		err = st.Send(hello)
	}
	var first *executorv1.ConnectResponse
	if err == nil {
		first, err = st.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		return fmt.Errorf("a token bound to another certificate got %v (first frame %T), want UNAUTHENTICATED: the binding is not checked", err, first.GetFrame())
	}
	return nil
}
