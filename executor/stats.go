package executor

import (
	"maps"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
)

// Stats are the executor's counters since New.
type Stats struct {
	// Sessions is the number of devices with an open stream.
	Sessions int
	// Accepted counts streams admitted (a replacement counts too).
	Accepted uint64
	// Refused counts streams refused before admission, by gRPC code.
	Refused map[codes.Code]uint64
	// Replaced counts streams closed because a newer stream of the same
	// device was admitted.
	Replaced uint64
	// Timeouts counts streams closed because the device was silent for
	// PingMisses ping intervals.
	Timeouts uint64
	// Revoked counts streams closed because their device was revoked or
	// their enrollment disabled while they were open.
	Revoked uint64
	// Stuck counts streams closed because their send queue was full, or
	// a Send to them stayed blocked for PingMisses ping intervals.
	Stuck uint64
	// FramesReceived counts the frames received after Hello.
	FramesReceived uint64
	// Delivering counts the deliveries (ExecutorInternalService.Deliver
	// and queued messages) waiting for the device's Ack or Reply now.
	Delivering int
	// Subscribers is the number of open ExecutorInternalService.Subscribe
	// streams.
	Subscribers int
	// PublishesDropped counts publishes not given to a subscriber because
	// its buffer was full (one per subscriber that missed it).
	PublishesDropped uint64
	// PublishesRefused counts publishes out of bounds (payload, topic,
	// content type), dropped before any subscriber saw them.
	PublishesRefused uint64
	// QueueDelivered counts queued messages delivered on connect,
	// acknowledged and removed from the queue; QueueExpired those removed
	// unsent because their time was over.
	QueueDelivered, QueueExpired uint64
	// QueueReadsSpared counts the connects whose queue was not read: the
	// Registrar counted it empty in the presence's transaction.
	QueueReadsSpared uint64
	// AuthRefused counts refused credentials by reason: device streams
	// refused for their assignment token, and ExecutorInternalService
	// calls refused for their service token. Each is logged at warn, at
	// most one line a second per reason (with the count left out).
	AuthRefused map[string]uint64
	// Draining reports whether the executor is draining.
	Draining bool
	// Registered reports whether the Registrar says the record is in the
	// registry.
	Registered bool
}

// counters are the Server's statistics.
type counters struct {
	accepted, replaced, timeouts, revoked, stuck, frames    atomic.Uint64
	dropped, queueDelivered, queueExpired, queueReadsSpared atomic.Uint64
	publishesRefused                                        atomic.Uint64
	// waiting counts the registered waiters of every session.
	waiting atomic.Int64

	mu      sync.Mutex
	refused map[codes.Code]uint64
}

// refuse counts a refusal with code c.
func (c *counters) refuse(code codes.Code) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refused == nil {
		c.refused = make(map[codes.Code]uint64)
	}
	c.refused[code]++
}

// refusedCopy returns a copy of the refusal counts.
func (c *counters) refusedCopy() map[codes.Code]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[codes.Code]uint64, len(c.refused))
	maps.Copy(out, c.refused)
	return out
}
