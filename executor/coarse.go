package executor

import (
	"sync"
	"time"
)

// coarseTimers hands out timeout channels that close at whole-second
// instants, one channel and one runtime timer per second shared by every
// waiter whose deadline falls in it. A connect storm's queue drains each
// wait up to presenceWaitFor for their presence to be written; with a
// timer each, thousands of stopped timers stayed in the runtime's timer
// heap (with their channels) until their 15 s had passed. A waiter may be
// released up to a second late, never early.
type coarseTimers struct {
	mu  sync.Mutex
	now func() time.Time
	at  map[int64]chan struct{}
}

func newCoarseTimers(now func() time.Time) *coarseTimers {
	if now == nil {
		now = time.Now
	}
	return &coarseTimers{now: now, at: map[int64]chan struct{}{}}
}

// after returns a channel that is closed at least d from now.
func (c *coarseTimers) after(d time.Duration) <-chan struct{} {
	now := c.now()
	sec := now.Add(d).Unix() + 1 // the next whole second at or after now+d
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.at[sec]
	if !ok {
		ch = make(chan struct{})
		c.at[sec] = ch
		time.AfterFunc(time.Unix(sec, 0).Sub(now), func() { c.fire(sec) })
	}
	return ch
}

// fire closes the channel of the second sec.
func (c *coarseTimers) fire(sec int64) {
	c.mu.Lock()
	ch := c.at[sec]
	delete(c.at, sec)
	c.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}
