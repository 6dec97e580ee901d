package messaging

import (
	"context"
	"log/slog"
	"time"

	"github.com/berthproject/berth/execclient"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/registry"
)

// Store is the registry side of messaging: presence records and the
// durable per-device queues. *registry.Registry implements it.
type Store interface {
	// Presence reads where a device is connected; registry.ErrNotFound when
	// it is not.
	Presence(ctx context.Context, deviceID string) (registry.Presence, error)
	// Enqueue stores a message at the end of its device's queue, within
	// limits (registry.ErrQueueFull beyond them); dup is set when the
	// idempotency key was used before.
	Enqueue(ctx context.Context, m registry.QueuedMessage, limits registry.QueueLimits) (stored registry.QueuedMessage, dup bool, err error)
	// RememberIdempotency records a key for a message that is not queued;
	// false and the first record when the key was used before.
	RememberIdempotency(ctx context.Context, device, key string, rec registry.IdempotencyRecord) (registry.IdempotencyRecord, bool, error)
	// MarkDelivered records that the message of a key was acknowledged.
	MarkDelivered(ctx context.Context, device, key string, rec registry.IdempotencyRecord) error
	// QueueLen counts a device's waiting messages.
	QueueLen(ctx context.Context, device string) (int64, error)
	// Queue returns a device's waiting messages in order, at most limit.
	Queue(ctx context.Context, device string, limit int64) ([]registry.QueuedMessage, error)
	// Dequeue removes an acknowledged message.
	Dequeue(ctx context.Context, device string, seq int64) error
	// SweepExpired removes expired messages and idempotency records.
	SweepExpired(ctx context.Context, now time.Time) (int, error)
}

// Cache is the replica's watch-fed view of the registry that messaging
// reads: the live executors (followed for subscribers) and the assignment
// records (GetDevice, and the tenant of a publish). *registry.Cache
// implements it.
type Cache interface {
	// Snapshot returns the current immutable snapshot.
	Snapshot() *registry.Snapshot
	// Assignment returns a device's cached assignment record.
	Assignment(deviceID string) (registry.Assignment, bool)
}

// ExecutorClients lends clients of executors' internal service, with the
// replica's service token on every call; it fails with execclient.ErrClosed
// once closed. *execclient.Pool implements it.
type ExecutorClients interface {
	Acquire(addr string) (executorv1.ExecutorInternalServiceClient, func(), error)
}

var (
	_ Store           = (*registry.Registry)(nil)
	_ Cache           = (*registry.Cache)(nil)
	_ ExecutorClients = (*execclient.Pool)(nil)
)

// Deps are what a Server is built on.
type Deps struct {
	// Store holds presence and queues. Required.
	Store Store
	// Cache is the registry cache. Required; messaging does not run it.
	Cache Cache
	// Executors reaches executors. Required; messaging does not close it.
	Executors ExecutorClients
	// Log may be nil.
	Log *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}
