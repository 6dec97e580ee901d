package devcluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/berthproject/berth/internal/tlsfiles"
	"github.com/berthproject/berth/pki"
)

// devTLS is the throwaway TLS of a dev cluster.
type devTLS struct {
	caFile string
	server *tls.Config // every listener's
	client *tls.Config // the control plane's to executors, and the readiness checks'
}

// setupTLS makes, or reuses when present, a CA and a server certificate
// for loopback (and listen's host) in dir/tls.
func setupTLS(dir, listen string, log *slog.Logger) (*devTLS, error) {
	tdir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return nil, fmt.Errorf("devcluster: %w", err)
	}
	p := func(name string) string { return filepath.Join(tdir, name) }
	caFile, caKey, certFile, keyFile := p("ca.pem"), p("ca-key.pem"), p("server.pem"), p("server-key.pem")
	ca, err := pki.Load(caFile, caKey)
	if errors.Is(err, fs.ErrNotExist) {
		if ca, err = pki.NewCA("berth dev CA", 0); err == nil {
			err = ca.Write(caFile, caKey, false)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("devcluster: CA in %s: %w", tdir, err)
	}
	if _, err := os.Stat(certFile); errors.Is(err, fs.ErrNotExist) {
		hosts := []string{"127.0.0.1", "::1", "localhost"}
		if h, _, err := net.SplitHostPort(listen); err == nil && h != "" && h != "127.0.0.1" && h != "localhost" {
			hosts = append(hosts, h)
		}
		srv, err := ca.IssueServer(hosts, 0)
		if err != nil {
			return nil, fmt.Errorf("devcluster: %w", err)
		}
		if err := srv.Write(certFile, keyFile, false); err != nil {
			return nil, fmt.Errorf("devcluster: %w", err)
		}
	}
	server, err := tlsfiles.ServerConfig(tlsfiles.ServerFiles{Cert: certFile, Key: keyFile}, log.With("component", "tls"), nil)
	if err != nil {
		return nil, fmt.Errorf("devcluster: %w", err)
	}
	client, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{CA: caFile}, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("devcluster: %w", err)
	}
	return &devTLS{caFile: caFile, server: server, client: client}, nil
}
