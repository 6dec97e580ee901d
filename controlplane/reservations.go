package controlplane

import (
	"sort"
	"sync"
	"time"
)

// reservations remember devices sent somewhere but possibly not yet in the
// counts executors report, so that the placement counts them meanwhile:
// they are the placement.Pending that placement.Decide reads on Assign.
//
// A reservation is made at t on an executor (devices this replica assigned)
// or on a group (devices other replicas assigned, learnt from their
// assignment records through the watch). It is pending while the count it
// is compared with was observed before t+grace, and forgotten after maxAge
// (the device never came). Each carries the device's weight, so load
// balancing counts heavy devices as more.
type reservations struct {
	grace, maxAge time.Duration
	now           func() time.Time

	mu sync.Mutex
	// byExec and byGroup hold reservations by executor and by group id,
	// each ascending by at.
	byExec, byGroup map[string][]reservation
	// lockedNow is the time taken when the lock was taken: one clock read
	// serves a whole placement.
	lockedNow time.Time
}

type reservation struct {
	at time.Time
	w  float64
	// cum is the running sum of w up to and including this reservation,
	// so that the weight after any point is a subtraction, not a loop.
	cum float64
}

func newReservations(grace, maxAge time.Duration, now func() time.Time) *reservations {
	return &reservations{grace: grace, maxAge: maxAge, now: now,
		byExec: map[string][]reservation{}, byGroup: map[string][]reservation{}}
}

// Pending implements placement.Pending for an executor. The caller holds the lock.
func (r *reservations) Pending(exec string, countedAt time.Time) float64 {
	return r.pending(r.byExec, exec, countedAt)
}

// GroupPending implements placement.Pending for devices other replicas sent to a
// group. The caller holds the lock.
func (r *reservations) GroupPending(group string, countedAt time.Time) float64 {
	return r.pending(r.byGroup, group, countedAt)
}

func (r *reservations) pending(m map[string][]reservation, key string, countedAt time.Time) float64 {
	rs := m[key]
	n := len(rs)
	cut := countedAt.Add(-r.grace)
	if n == 0 || !rs[n-1].at.After(cut) {
		return 0
	}
	// Reservations older than maxAge are pruned when the next one is made;
	// until then they are skipped here.
	if old := r.lockedNow.Add(-r.maxAge); old.After(cut) {
		cut = old
	}
	i := sort.Search(n, func(i int) bool { return rs[i].at.After(cut) })
	if i == n {
		return 0
	}
	return rs[n-1].cum - rs[i].cum + rs[i].w
}

// locked runs fn with the reservations locked, so that a placement and the
// reservation it makes are atomic with respect to other Assigns.
func (r *reservations) locked(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lockedNow = r.now()
	fn()
}

// addLocked records a device of weight w sent to exec now; the caller is
// inside locked.
func (r *reservations) addLocked(exec string, w float64) {
	r.append(r.byExec, exec, reservation{at: r.lockedNow, w: w})
}

// addGroup records a device of weight w that another replica sent to group
// at (when this replica learnt it).
func (r *reservations) addGroup(group string, w float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lockedNow = r.now()
	r.append(r.byGroup, group, reservation{at: r.lockedNow, w: w})
}

func (r *reservations) append(m map[string][]reservation, key string, x reservation) {
	rs := m[key]
	if old := x.at.Add(-r.maxAge); len(rs) > 0 && !rs[0].at.After(old) {
		i := sort.Search(len(rs), func(i int) bool { return rs[i].at.After(old) })
		rs = rs[i:]
	}
	x.cum = x.w
	if n := len(rs); n > 0 {
		// Keep the slice ordered even if the clock stepped back.
		if x.at.Before(rs[n-1].at) {
			x.at = rs[n-1].at
		}
		x.cum += rs[n-1].cum
	}
	m[key] = append(rs, x)
}
