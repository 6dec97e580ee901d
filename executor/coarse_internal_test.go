package executor

import (
	"testing"
	"time"
)

func TestCoarseTimersShareAndNeverEarly(t *testing.T) {
	// The clock stands still: every wait asked for is of the same instant.
	start := time.Now()
	c := newCoarseTimers(func() time.Time { return start })
	const d = 50 * time.Millisecond
	a, b := c.after(d), c.after(d)
	if a != b {
		t.Error("two timeouts of the same second got different channels")
	}
	if later := c.after(d + 2*time.Second); later == a {
		t.Error("a timeout two seconds later got the same channel")
	}
	<-a
	waited := time.Since(start)
	if waited < d {
		t.Errorf("released after %v, before the %v asked for", waited, d)
	}
	if waited > d+time.Second+500*time.Millisecond {
		t.Errorf("released after %v: more than a second late", waited)
	}
	c.mu.Lock()
	left := len(c.at)
	c.mu.Unlock()
	if left != 1 {
		t.Errorf("%d seconds held after the first fired; want 1 (the later one)", left)
	}
	c.fire(start.Add(d+2*time.Second).Unix() + 1) // release the later one: no timer left behind
}
