package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/spf13/pflag"

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
