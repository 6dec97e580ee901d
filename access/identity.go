package access

import (
	"context"
	"errors"
	"slices"
)

// Errors of this package; the interceptors turn them into statuses.
var (
	// ErrUnauthenticated means no credential, or one that is unknown,
	// wrong, revoked or expired.
	ErrUnauthenticated = errors.New("access: unauthenticated")
	// ErrDenied means a known caller without the right.
	ErrDenied = errors.New("access: permission denied")
)

// Identity is an authenticated caller.
type Identity struct {
	// Name is who the caller is, as audit entries and `applied_by` show it:
	// "apikey:<id> (<name>)" or "cert:<name>".
	Name string
	// Roles it carries.
	Roles []Role
	// Tenants, when not empty, limit a service caller to devices of these
	// tenants.
	Tenants []string
	// Topics, when not empty, limit a service caller's subscriptions to
	// these topics.
	Topics []string
}

// Has reports whether the identity carries role r.
func (id *Identity) Has(r Role) bool { return id != nil && slices.Contains(id.Roles, r) }

type identityKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the caller's identity, nil when there is none.
func FromContext(ctx context.Context) *Identity {
	id, _ := ctx.Value(identityKey{}).(*Identity)
	return id
}

// Who names the authenticated caller of ctx; without one it returns
// fallback (a server called in-process, as tests do).
func Who(ctx context.Context, fallback string) string {
	if id := FromContext(ctx); id != nil {
		return id.Name
	}
	return fallback
}
