package controlplane

import (
	"sort"
	"sync"
	"time"
)

// reservations remember devices sent somewhere but possibly not yet in the
// counts executors report, so that the placement counts them meanwhile.
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

	mu    sync.Mutex
	byKey map[string][]reservation // ascending by at
}

type reservation struct {
	at time.Time
	w  float64
	// cum is the running sum of w up to and including this reservation,
	// so that the weight after any point is a subtraction, not a loop.
	cum float64
}

func newReservations(grace, maxAge time.Duration, now func() time.Time) *reservations {
	return &reservations{grace: grace, maxAge: maxAge, now: now, byKey: map[string][]reservation{}}
}

func execKey(id string) string  { return "e/" + id }
func groupKey(id string) string { return "g/" + id }

// Pending implements Pending for an executor. The caller holds the lock.
func (r *reservations) Pending(exec string, countedAt time.Time) float64 {
	return r.pending(execKey(exec), countedAt)
}

// GroupPending implements Pending for devices other replicas sent to a
// group. The caller holds the lock.
func (r *reservations) GroupPending(group string, countedAt time.Time) float64 {
	return r.pending(groupKey(group), countedAt)
}

func (r *reservations) pending(key string, countedAt time.Time) float64 {
	rs := r.byKey[key]
	if len(rs) == 0 {
		return 0
	}
	old := r.now().Add(-r.maxAge)
	if i := sort.Search(len(rs), func(i int) bool { return rs[i].at.After(old) }); i > 0 {
		rs = rs[i:]
		if len(rs) == 0 {
			delete(r.byKey, key)
			return 0
		}
		r.byKey[key] = rs
	}
	cut := countedAt.Add(-r.grace)
	i := sort.Search(len(rs), func(i int) bool { return rs[i].at.After(cut) })
	if i == len(rs) {
		return 0
	}
	return rs[len(rs)-1].cum - rs[i].cum + rs[i].w
}

// locked runs fn with the reservations locked, so that a placement and the
// reservation it makes are atomic with respect to other Assigns.
func (r *reservations) locked(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn()
}

// addLocked records a device of weight w sent to exec now; the caller is
// inside locked.
func (r *reservations) addLocked(exec string, w float64) {
	r.append(execKey(exec), reservation{at: r.now(), w: w})
}

// addGroup records a device of weight w that another replica sent to group
// at (when this replica learnt it).
func (r *reservations) addGroup(group string, w float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.append(groupKey(group), reservation{at: r.now(), w: w})
}

func (r *reservations) append(key string, x reservation) {
	rs := r.byKey[key]
	x.cum = x.w
	if n := len(rs); n > 0 {
		// Keep the slice ordered even if the clock stepped back.
		if x.at.Before(rs[n-1].at) {
			x.at = rs[n-1].at
		}
		x.cum += rs[n-1].cum
	}
	r.byKey[key] = append(rs, x)
}
