package controlplane

import (
	"sync"
	"time"
)

// writeBreaker remembers that assignment records cannot be written (etcd
// unreachable), so that Assigns needing a write do not each wait for
// WriteTimeout: after a failed write it is open; while open, one write at a
// time is let through as a probe, at most one per probeEvery, and the first
// that succeeds closes it. Meanwhile known devices are kept in their
// recorded group when it is usable (no write needed), and the others are
// answered UNAVAILABLE at once, with a retry hint.
type writeBreaker struct {
	probeEvery time.Duration

	mu        sync.Mutex
	open      bool
	probing   bool
	lastProbe time.Time
}

// allow reports whether a write may be tried now: always while closed;
// while open, as the one probe in flight, once per probeEvery.
func (b *writeBreaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true
	}
	if b.probing || now.Sub(b.lastProbe) < b.probeEvery {
		return false
	}
	b.probing, b.lastProbe = true, now
	return true
}

// done records the outcome of a write allow let through.
func (b *writeBreaker) done(ok bool, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
	if ok {
		b.open = false
		return
	}
	if !b.open {
		b.open, b.lastProbe = true, now
	}
}

// abandon ends a write allow let through without an outcome (its caller
// went away before etcd answered).
func (b *writeBreaker) abandon() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
	if b.open {
		b.lastProbe = time.Time{} // the next caller probes
	}
}

// isOpen reports whether writes are failing.
func (b *writeBreaker) isOpen() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open
}
