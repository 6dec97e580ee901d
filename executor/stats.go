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
	// Stuck counts streams closed because their send queue was full.
	Stuck uint64
	// FramesReceived counts the frames received after Hello.
	FramesReceived uint64
	// Draining reports whether the executor is draining.
	Draining bool
	// Registered reports whether the Registrar says the record is in the
	// registry.
	Registered bool
}

// counters are the Server's statistics.
type counters struct {
	accepted, replaced, timeouts, stuck, frames atomic.Uint64

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
