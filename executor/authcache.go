package executor

import (
	"context"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
)

// maxServiceTokens bounds the verified service tokens remembered. A control
// plane presents the same token for half its life, so a few per replica
// are live at once; past the bound the memory starts empty again.
const maxServiceTokens = 256

// serviceTokens remembers the service tokens that verified, until they
// expire, so that a Deliver does not pay for a signature check: an Ed25519
// verification costs more than the rest of the call.
type serviceTokens struct {
	mu  sync.Mutex
	exp map[string]time.Time // raw token → its expiry
}

// valid reports whether raw verified before and has not expired.
func (c *serviceTokens) valid(raw string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.exp[raw]
	if ok && !now.Before(exp) {
		delete(c.exp, raw)
		return false
	}
	return ok
}

// add remembers raw, verified now, until exp.
func (c *serviceTokens) add(raw string, exp, now time.Time) {
	if !now.Before(exp) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exp == nil || len(c.exp) >= maxServiceTokens {
		c.exp = make(map[string]time.Time)
	}
	c.exp[raw] = exp
}

// authorizer is authorize with a memory of the tokens that verified: a
// token seen before is admitted without verifying it again until it
// expires. Anything else goes through authorize.
func (s *Server) authorizer() auth.AuthFunc {
	var seen serviceTokens
	return func(ctx context.Context) (context.Context, error) {
		raw, err := auth.AuthFromMD(ctx, "bearer")
		if err == nil && seen.valid(raw, time.Now()) {
			return ctx, nil
		}
		raw, c, err := s.serviceClaims(ctx)
		if err != nil {
			return nil, err
		}
		seen.add(raw, c.ExpiresAt, time.Now())
		return ctx, nil
	}
}
