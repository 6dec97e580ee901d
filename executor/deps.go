package executor

import (
	"context"

	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// Verifier checks assignment tokens. *token.Verifier is one. Verify's errors
// wrap token.ErrMissing, token.ErrInvalid or token.ErrExpired.
type Verifier interface {
	Verify(raw string) (token.Claims, error)
}

// Registrar keeps the executor's record in the registry.
// *registry.Registration is one.
type Registrar interface {
	// Run keeps the record registered until ctx is cancelled, then removes
	// it. It returns nil after a clean stop.
	Run(ctx context.Context) error
	// Update changes the record; the Registrar writes it when it sees fit
	// (it coalesces frequent changes). fn must not block.
	Update(fn func(e *registry.Executor))
	// Registered reports whether the record is currently registered.
	Registered() bool
}

var (
	_ Verifier  = (*token.Verifier)(nil)
	_ Registrar = (*registry.Registration)(nil)
)
