package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"

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
	return nil, s.checkPlaintext(lis, "")
}

// checkPlaintext refuses plaintext on lis off loopback without --insecure;
// flag, when set, names the flag that opened lis, for the message.
func (s *serverTLSFlags) checkPlaintext(lis net.Listener, flag string) error {
	if err := tlsfiles.CheckPlaintext(lis.Addr(), s.insecure); err != nil {
		if flag != "" {
			flag = " (" + flag + ")"
		}
		return fmt.Errorf("refusing to serve plaintext on %s%s, which is not a loopback address: give --tls-cert and --tls-key, or --insecure to allow it", lis.Addr(), flag)
	}
	return nil
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

// register adds --ca, --cert and --key; with env, the help says that
// BERTH_CA, BERTH_CERT and BERTH_KEY stand in for them (ctl's resolve
// reads them when a command runs).
func (c *clientTLSFlags) register(f *pflag.FlagSet, env bool) {
	note := func(name string) string {
		if !env {
			return ""
		}
		return " (default: $" + name + ")"
	}
	caNote := note(caEnv)
	if env {
		caNote = " (default: $" + caEnv + ", else the ca of berth dev's context)"
	}
	f.StringVar(&c.files.CA, "ca", "", "PEM CA(s) the server's certificate must chain to: connect over TLS"+caNote)
	f.StringVar(&c.files.Cert, "cert", "", "PEM client certificate to present (TLS)"+note(certEnv))
	f.StringVar(&c.files.Key, "key", "", "PEM private key of --cert"+note(keyEnv))
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
