package tlsfiles

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// ServerFiles name a server's TLS files.
type ServerFiles struct {
	// Cert and Key are the server's certificate (chain) and key, PEM.
	Cert, Key string
	// ClientCA, when set, names the CAs client certificates must chain to:
	// a client presenting a certificate from another CA is refused at the
	// handshake. Unset, client certificates are requested and passed on
	// unverified (credentials.TLSInfo), for the servers to verify with their
	// own rules. Either way a client may present none.
	ClientCA string
}

// Enabled reports whether any file is named.
func (f ServerFiles) Enabled() bool { return f.Cert != "" || f.Key != "" || f.ClientCA != "" }

// ErrIncomplete is returned when a certificate is named without its key
// or the other way round, or a client CA without a server certificate.
var ErrIncomplete = errors.New("tlsfiles: a certificate and its key go together")

// ServerConfig returns a TLS 1.3 server configuration serving f's
// certificate, reloaded when its files change, and requesting client
// certificates. log and now may be nil.
func ServerConfig(f ServerFiles, log *slog.Logger, now func() time.Time) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, ErrIncomplete
	}
	kp, err := NewKeyPair(f.Cert, f.Key, log, now)
	if err != nil {
		return nil, err
	}
	base := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: kp.GetCertificate,
		ClientAuth:     tls.RequestClientCert,
		NextProtos:     []string{"h2"},
	}
	if f.ClientCA == "" {
		return base, nil
	}
	pool, err := NewCAPool(f.ClientCA, log, now)
	if err != nil {
		return nil, err
	}
	v := &verifying{base: base, pool: pool}
	cfg := base.Clone()
	cfg.GetConfigForClient = v.config
	return cfg, nil
}

// verifying hands out a configuration verifying client certificates
// against the current pool, rebuilt only when the pool changed.
type verifying struct {
	base *tls.Config
	pool *CAPool

	mu  sync.Mutex
	cur *tls.Config
}

func (v *verifying) config(*tls.ClientHelloInfo) (*tls.Config, error) {
	p := v.pool.Pool()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cur == nil || v.cur.ClientCAs != p {
		c := v.base.Clone()
		c.ClientAuth = tls.VerifyClientCertIfGiven
		c.ClientCAs = p
		v.cur = c
	}
	return v.cur, nil
}

// ClientFiles name a client's TLS files.
type ClientFiles struct {
	// CA names the CAs the server's certificate must chain to; empty: the
	// system's roots.
	CA string
	// Cert and Key, both or neither, are the client's certificate and key,
	// reloaded when they change.
	Cert, Key string
	// ServerName overrides the name the server's certificate is checked
	// against (default: the host dialled).
	ServerName string
}

// ClientConfig returns a TLS 1.3 client configuration from f. log and now
// may be nil.
func ClientConfig(f ClientFiles, log *slog.Logger, now func() time.Time) (*tls.Config, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, ErrIncomplete
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: f.ServerName}
	if f.CA != "" {
		pool, err := ReadCAPool(f.CA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if f.Cert != "" {
		kp, err := NewKeyPair(f.Cert, f.Key, log, now)
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = kp.GetClientCertificate
	}
	return cfg, nil
}

// ErrPlaintext is returned by CheckPlaintext for plaintext off loopback.
var ErrPlaintext = errors.New("tlsfiles: plaintext off loopback")

// CheckPlaintext allows a plaintext listener on addr only on a loopback
// address, or when insecure (the operator's explicit --insecure). A
// wildcard address (0.0.0.0, [::]) is not loopback.
func CheckPlaintext(addr net.Addr, insecure bool) error {
	if insecure {
		return nil
	}
	if ta, ok := addr.(*net.TCPAddr); ok && ta.IP.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrPlaintext, addr)
}
