package execclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// ErrMint wraps a failure to mint a service token.
var ErrMint = errors.New("execclient: cannot mint a service token")

// mintRetry is how long after a failed mint the next call tries again;
// meanwhile calls fail at once (or use the current token while it is
// valid), so that a broken signer is not asked once per call.
const mintRetry = time.Second

// Credentials put a control plane's bearer service token on every call to
// an executor. The token is minted on first use and again once half its
// life passed. When minting fails (it is logged), the current token serves
// while it has not expired; after that, calls fail with INTERNAL and the
// reason until minting works again: an expired token is never sent.
type Credentials struct {
	signer  Signer
	subject string
	ttl     time.Duration
	now     func() time.Time
	log     *slog.Logger

	mu      sync.Mutex
	tok     string
	exp     time.Time
	renewAt time.Time
	retryAt time.Time // no mint before it, after a failure
	lastErr error     // of the last failed mint
}

var _ credentials.PerRPCCredentials = (*Credentials)(nil)

// NewCredentials returns credentials minting tokens of subject, valid for
// ttl, with signer. now and log may be nil.
func NewCredentials(signer Signer, subject string, ttl time.Duration, now func() time.Time, log *slog.Logger) *Credentials {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Credentials{signer: signer, subject: subject, ttl: ttl, now: now, log: log}
}

// Token returns the token to present now, minting one when needed. Its
// error wraps ErrMint.
func (c *Credentials) Token() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.tok != "" && now.Before(c.renewAt) {
		return c.tok, nil
	}
	valid := c.tok != "" && now.Before(c.exp)
	if now.Before(c.retryAt) {
		if valid {
			return c.tok, nil
		}
		return "", c.lastErr
	}
	tok, exp, err := c.signer.SignService(c.subject, c.ttl)
	if err != nil {
		c.retryAt = now.Add(mintRetry)
		c.lastErr = fmt.Errorf("%w for %s: %w", ErrMint, c.subject, err)
		if valid {
			c.log.Warn("minting a service token failed; the current one serves until it expires", "expires", c.exp, "err", err)
			return c.tok, nil
		}
		c.log.Error("minting a service token failed; calls to executors fail until it works", "err", err)
		return "", c.lastErr
	}
	c.tok, c.exp, c.lastErr = tok, exp, nil
	c.renewAt = now.Add(exp.Sub(now) / 2)
	return tok, nil
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c *Credentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := c.Token()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials:
// false, as a cluster may run plaintext on loopback or with --insecure;
// with Config.TLS set, every connection of the pool is TLS.
func (c *Credentials) RequireTransportSecurity() bool { return false }
