package controlplane

import (
	"sort"
	"sync"
	"time"
)

// reservations remembers, per executor, when devices were sent to it, so
// that the placement counts them until the executor's reported connection
// count includes them. A reservation made at t is pending while the
// executor's count was observed before t+grace, and is forgotten after
// maxAge (the device never came).
type reservations struct {
	grace, maxAge time.Duration
	now           func() time.Time

	mu     sync.Mutex
	byExec map[string][]time.Time // ascending
}

func newReservations(grace, maxAge time.Duration, now func() time.Time) *reservations {
	return &reservations{grace: grace, maxAge: maxAge, now: now, byExec: map[string][]time.Time{}}
}

// Pending implements Pending. The caller holds r.mu (see locked).
func (r *reservations) Pending(exec string, countedAt time.Time) int {
	ts := r.byExec[exec]
	if len(ts) == 0 {
		return 0
	}
	// Forget the expired ones.
	old := r.now().Add(-r.maxAge)
	if i := sort.Search(len(ts), func(i int) bool { return ts[i].After(old) }); i > 0 {
		ts = ts[i:]
		if len(ts) == 0 {
			delete(r.byExec, exec)
		} else {
			r.byExec[exec] = ts
		}
	}
	cut := countedAt.Add(-r.grace)
	i := sort.Search(len(ts), func(i int) bool { return ts[i].After(cut) })
	return len(ts) - i
}

// locked runs fn with the reservations locked, so that a placement and the
// reservation it makes are atomic with respect to other Assigns.
func (r *reservations) locked(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn()
}

// addLocked records a device sent to exec now; the caller is inside locked.
func (r *reservations) addLocked(exec string) {
	r.byExec[exec] = append(r.byExec[exec], r.now())
}
