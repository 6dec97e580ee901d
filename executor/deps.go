package executor

import (
	"context"

	"google.golang.org/grpc/credentials"

	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// Verifier checks assignment tokens and service tokens. *token.Verifier is
// one. Verify's errors wrap token.ErrMissing, token.ErrInvalid or
// token.ErrExpired.
type Verifier interface {
	Verify(raw string) (token.Claims, error)
}

// Registrar keeps the executor's record, and the presence records of its
// devices, in the registry. *registry.Registration is one.
type Registrar interface {
	// Run keeps the record registered until ctx is cancelled, then removes
	// it. It returns nil after a clean stop.
	Run(ctx context.Context) error
	// Update changes the record; the Registrar writes it when it sees fit
	// (it coalesces frequent changes). fn must not block.
	Update(fn func(e *registry.Executor))
	// Registered reports whether the record is currently registered.
	Registered() bool
	// SetPresence records that p.DeviceID's stream (session p.SessionID) is
	// held here. It must not block: the Registrar writes it later, under
	// its lease.
	SetPresence(p registry.Presence)
	// ClearPresence removes the device's presence if it still names
	// sessionID (a newer stream may have replaced it). It must not block.
	ClearPresence(deviceID, sessionID string)
	// OnReplaced registers fn, called (without blocking, possibly more
	// than once, possibly for a session that already ended) when a
	// session held here was replaced by a newer session of the same
	// device on another executor. New calls it once, before Run.
	OnReplaced(fn func(registry.Replacement))
}

// Queue is the store of the messages waiting for devices, read when a
// device connects. *registry.Registry is one.
type Queue interface {
	// Queue returns the device's waiting messages in order (by Seq), at
	// most limit of them.
	Queue(ctx context.Context, device string, limit int64) ([]registry.QueuedMessage, error)
	// Dequeue removes an acknowledged (or expired) message; removing one
	// that is already gone is not an error.
	Dequeue(ctx context.Context, device string, seq int64) error
}

var (
	_ Verifier  = (*token.Verifier)(nil)
	_ Registrar = (*registry.Registration)(nil)
	_ Queue     = (*registry.Registry)(nil)
)

// Option changes how New wires a Server.
type Option func(*options)

type options struct {
	queue Queue
	usage UsageRecorder
	trust Trust
	creds credentials.TransportCredentials
}

// WithCredentials serves the executor with creds (TLS): the certificate a
// device presents is what a token bound to a certificate is checked
// against. Without it the executor serves plaintext, and a bound token is
// refused there for want of a certificate.
func WithCredentials(creds credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = creds }
}

// Trust is what the executor knows of device identities: revoked devices
// and enrollments, from a watch-fed view. *registry.TrustView is one.
type Trust interface {
	// Revoked reports whether a device is revoked.
	Revoked(deviceID string) bool
	// Enrollment returns an enrollment by id.
	Enrollment(id string) (registry.TrustedEnrollment, bool)
	// OnChange subscribes fn to revocations and to enrollments disabled
	// or deleted. fn must not block.
	OnChange(fn func(registry.TrustChange))
}

var _ Trust = (*registry.TrustView)(nil)

// WithTrust makes the executor refuse (PERMISSION_DENIED) the Hello of a
// revoked device or of a token whose enrollment is disabled or gone, and
// close with Goodbye{REVOKED} the streams of a device revoked, or of an
// enrollment disabled or deleted, while they are open. The caller runs t.
func WithTrust(t Trust) Option {
	return func(o *options) { o.trust = t }
}

// WithQueue makes the executor deliver a device's queued messages when it
// connects: in order, one at a time, each removed from q once the device
// acknowledged it (see the package documentation). Without it, nothing is
// read from a queue.
func WithQueue(q Queue) Option {
	return func(o *options) { o.queue = q }
}
