package execclient

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// Signer mints the service tokens a control plane presents to executors.
// *token.Signer implements it.
type Signer interface {
	SignService(subject string, ttl time.Duration) (string, time.Time, error)
}

// Executors is the registry's view of the live executors: connections to
// addresses it no longer names are closed once idle. *registry.Cache
// implements it.
type Executors interface {
	Snapshot() *registry.Snapshot
}

var (
	_ Signer    = (*token.Signer)(nil)
	_ Executors = (*registry.Cache)(nil)
)

// Config tunes a Pool.
type Config struct {
	// Subject names the replica in its service tokens: the replica id.
	Subject string
	// TokenTTL is the life of a service token; it is minted again at half
	// of it.
	TokenTTL time.Duration
	// IdleTimeout closes the connection to an executor that left the
	// registry once nobody has used it for that long.
	IdleTimeout time.Duration
	// TLS, when set, is the client configuration every connection to an
	// executor uses: the service tokens then travel only inside TLS. Nil
	// dials plaintext (loopback clusters, --insecure).
	TLS *tls.Config
	// DialOptions are added after the pool's own (DialOptions).
	DialOptions []grpc.DialOption
}

// DefaultConfig returns the settings of `berth controlplane`; Subject has
// no default.
func DefaultConfig() Config {
	return Config{TokenTTL: token.ServiceTokenTTL, IdleTimeout: time.Minute}
}

// Validate checks c.
func (c Config) Validate() error {
	var errs []error
	if !registry.ValidID(c.Subject) {
		errs = append(errs, fmt.Errorf("subject %q: want 1-128 of [A-Za-z0-9._:@-]", c.Subject))
	}
	if c.TokenTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("service token TTL %v: want at least 2s", c.TokenTTL))
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("idle timeout %v: want > 0", c.IdleTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("execclient: invalid config: %w", err)
	}
	return nil
}

// Deps are what a Pool is built on.
type Deps struct {
	// Signer mints the service tokens. Required.
	Signer Signer
	// Executors names the live executors; nil: Run closes nothing.
	Executors Executors
	// Log receives failures to mint a token; nil discards.
	Log *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}
