package executor

import (
	"testing"
	"time"
)

func TestCoarseTimersShareAndNeverEarly(t *testing.T) {
	c := newCoarseTimers(nil)
	start := time.Now()
	const d = 50 * time.Millisecond
	a, b := c.after(d), c.after(d)
	if a != b {
		// Two waits asked within the same second share one channel,
		// unless the second turned between the two calls.
		if time.Now().Unix() == start.Unix() {
			t.Error("two timeouts of the same second got different channels")
		}
	}
	<-a
	if waited := time.Since(start); waited < d {
		t.Errorf("released after %v, before the %v asked for", waited, d)
	}
	if waited := time.Since(start); waited > d+time.Second+500*time.Millisecond {
		t.Errorf("released after %v: more than a second late", waited)
	}
	c.mu.Lock()
	left := len(c.at)
	c.mu.Unlock()
	if left > 1 {
		t.Errorf("%d seconds still held after firing", left)
	}
}
