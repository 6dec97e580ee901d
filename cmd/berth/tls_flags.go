package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/spf13/pflag"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berthproject/berth/internal/tlsfiles"
)

// serverTLSFlags are a listener's TLS flags.
type serverTLSFlags struct {
	files    tlsfiles.ServerFiles
	insecure bool
}

// register adds --tls-cert, --tls-key, --tls-client-ca and --insecure.
func (s *serverTLSFlags) register(f *pflag.FlagSet) {
	f.StringVar(&s.files.Cert, "tls-cert", "", "PEM server certificate (chain): serve TLS 1.3; re-read when the file changes (berth cert server makes one)")
	f.StringVar(&s.files.Key, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&s.files.ClientCA, "tls-client-ca", "", "PEM CA(s) that client certificates must chain to, checked at the handshake (default: client certificates are requested, not required, and checked per RPC)")
	f.BoolVar(&s.insecure, "insecure", false, "allow plaintext on a non-loopback address (no TLS: tokens and messages travel in the clear)")
}

// config returns the listener's TLS configuration, nil for plaintext,
// which is refused on lis off loopback without --insecure.
func (s *serverTLSFlags) config(lis net.Listener, log *slog.Logger) (*tls.Config, error) {
	if s.files.Enabled() {
		cfg, err := tlsfiles.ServerConfig(s.files, log.With("component", "tls"), nil)
		if errors.Is(err, tlsfiles.ErrIncomplete) {
			return nil, errors.New("--tls-cert and --tls-key go together (and --tls-client-ca needs them)")
		}
		return cfg, err
	}
	if err := tlsfiles.CheckPlaintext(lis.Addr(), s.insecure); err != nil {
		return nil, fmt.Errorf("refusing to serve plaintext on %s, which is not a loopback address: give --tls-cert and --tls-key, or --insecure to allow it", lis.Addr())
	}
	return nil, nil
}

// Environment variables giving ctl's TLS flags their defaults.
const (
	caEnv   = "BERTH_CA"
	certEnv = "BERTH_CERT"
	keyEnv  = "BERTH_KEY"
)

// clientTLSFlags are a client's TLS flags: TLS is on when --ca, or
// --cert and --key, are given.
type clientTLSFlags struct {
	files tlsfiles.ClientFiles
}

// register adds --ca, --cert and --key; with env, their defaults come
// from BERTH_CA, BERTH_CERT and BERTH_KEY.
func (c *clientTLSFlags) register(f *pflag.FlagSet, env bool) {
	def := func(name string) (string, string) {
		if !env {
			return "", ""
		}
		return os.Getenv(name), " ($" + name + " sets the default)"
	}
	ca, caNote := def(caEnv)
	cert, certNote := def(certEnv)
	key, keyNote := def(keyEnv)
	f.StringVar(&c.files.CA, "ca", ca, "PEM CA(s) the server's certificate must chain to: connect over TLS"+caNote)
	f.StringVar(&c.files.Cert, "cert", cert, "PEM client certificate to present (TLS)"+certNote)
	f.StringVar(&c.files.Key, "key", key, "PEM private key of --cert"+keyNote)
}

// enabled reports whether any flag asks for TLS.
func (c *clientTLSFlags) enabled() bool {
	return c.files.CA != "" || c.files.Cert != "" || c.files.Key != ""
}

// config returns the TLS configuration the flags ask for.
func (c *clientTLSFlags) config() (*tls.Config, error) {
	cfg, err := tlsfiles.ClientConfig(c.files, nil, nil)
	if errors.Is(err, tlsfiles.ErrIncomplete) {
		return nil, errors.New("--cert and --key go together")
	}
	return cfg, err
}

// transport returns the transport credentials the flags ask for:
// plaintext when none is given.
func (c *clientTLSFlags) transport() (credentials.TransportCredentials, error) {
	if !c.enabled() {
		return insecure.NewCredentials(), nil
	}
	cfg, err := c.config()
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}
