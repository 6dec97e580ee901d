package executor

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

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

// loadWindow is the shortest period a load sample covers; samples taken more
// often return the previous rate.
const loadWindow = time.Second

// loadMeter turns a growing frame count into a rate (frames per second over
// the last sampled window). It is rough on purpose: it feeds placement, not
// billing.
type loadMeter struct {
	mu    sync.Mutex
	start time.Time
	count uint64
	rate  float64
}

// sample returns the rate at now given the running total n.
func (m *loadMeter) sample(now time.Time, n uint64) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.start.IsZero() {
		m.start, m.count = now, n
		return 0
	}
	if d := now.Sub(m.start); d >= loadWindow {
		m.rate = float64(n-m.count) / d.Seconds()
		m.start, m.count = now, n
	}
	return m.rate
}
