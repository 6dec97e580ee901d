package controlplane

import (
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/berthproject/berth/fleet"
)

// reservations remember devices sent somewhere but possibly not yet in the
// counts executors report, so that the placement counts them meanwhile:
// they are the placement.Pending that placement.Decide reads on Assign.
//
// Each reservation this replica makes has a sequence number (growing,
// started at the replica's start time in nanoseconds) and a ticket naming
// the replica, the executor and the number; the device gives the ticket
// back in its Hello, and the executor reports in its record, written
// together with its connection count, the highest sequence number of each
// replica it admitted (fleet.Executor.Admitted). A reservation is pending
// exactly while its number is above its executor's entry for its replica:
// once the count includes the device, it no longer is — no time guess, so
// a slow connect is neither counted twice nor missed.
// Reservations other replicas made are learnt from the tickets in their
// assignment records and judged the same way.
//
// Two fallbacks keep a time rule: an executor record without Admitted
// (an executor that does not report reservations) counts a reservation
// made at t while its count was observed before t+grace; a record of
// another replica without a ticket counts on the group the same way. Any
// reservation is forgotten after maxAge (its device never came, or did not
// give its ticket back). Each carries the device's weight, so load
// balancing counts heavy devices as more.
type reservations struct {
	grace, maxAge time.Duration
	now           func() time.Time
	replica       string

	mu sync.Mutex
	// seq is the last sequence number given out.
	seq uint64
	// byExec holds reservations by executor id, then by the replica that
	// made them, each list ascending by sequence number.
	byExec map[string]map[string]*reservationList
	// byGroup holds reservations by group id, ascending by at.
	byGroup map[string]*reservationList
	// lockedNow is the time taken when the lock was taken: one clock read
	// serves a whole placement.
	lockedNow time.Time
}

type reservation struct {
	at  time.Time
	seq uint64
	w   float64
	// cum is the running sum of w up to and including this reservation,
	// so that the weight after any point is a subtraction, not a loop.
	cum float64
}

// reservationList is one executor's reservations of one replica (or one
// group's), with the highest admitted sequence number seen so far: it only
// grows, so an executor that restarted (and reports from zero) does not
// bring back reservations it had already counted.
type reservationList struct {
	rs   []reservation
	done uint64
}

func newReservations(replica string, grace, maxAge time.Duration, now func() time.Time) *reservations {
	return &reservations{replica: replica, grace: grace, maxAge: maxAge, now: now,
		seq:    uint64(max(now().UnixNano(), 0)),
		byExec: map[string]map[string]*reservationList{}, byGroup: map[string]*reservationList{}}
}

// Pending implements placement.Pending for an executor. The caller holds
// the lock.
func (r *reservations) Pending(e *fleet.Executor) float64 {
	byReplica := r.byExec[e.ID]
	if len(byReplica) == 0 {
		return 0
	}
	old := r.lockedNow.Add(-r.maxAge)
	sum := 0.0
	for replica, l := range byReplica {
		if e.Admitted == nil {
			sum += l.after(maxTime(e.ObservedAt.Add(-r.grace), old))
			continue
		}
		if n := e.Admitted[replica]; n > l.done {
			l.done = n
		}
		sum += l.above(l.done, old)
	}
	return sum
}

// GroupPending implements placement.Pending for devices other replicas sent
// to a group without a ticket. The caller holds the lock.
func (r *reservations) GroupPending(group string, countedAt time.Time) float64 {
	l := r.byGroup[group]
	if l == nil {
		return 0
	}
	return l.after(maxTime(countedAt.Add(-r.grace), r.lockedNow.Add(-r.maxAge)))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// above is the weight of the reservations numbered above done and made
// after old.
func (l *reservationList) above(done uint64, old time.Time) float64 {
	n := len(l.rs)
	if n == 0 || l.rs[n-1].seq <= done {
		return 0
	}
	i := sort.Search(n, func(i int) bool { return l.rs[i].seq > done })
	// Reservations older than maxAge are pruned when the next one is
	// made; until then they are skipped here. The list is ascending by
	// number, and by time but for learnt reservations that arrived out of
	// order, which a scan from i passes over.
	for i < n && !l.rs[i].at.After(old) {
		i++
	}
	return l.weightFrom(i)
}

// after is the weight of the reservations made after cut (the list being
// ascending by time, but for learnt ones out of order, counted from the
// first after cut).
func (l *reservationList) after(cut time.Time) float64 {
	n := len(l.rs)
	if n == 0 || !l.rs[n-1].at.After(cut) {
		return 0
	}
	i := sort.Search(n, func(i int) bool { return l.rs[i].at.After(cut) })
	return l.weightFrom(i)
}

func (l *reservationList) weightFrom(i int) float64 {
	if i >= len(l.rs) {
		return 0
	}
	return l.rs[len(l.rs)-1].cum - l.rs[i].cum + l.rs[i].w
}

// locked runs fn with the reservations locked, so that a placement and the
// reservation it makes are atomic with respect to other Assigns.
func (r *reservations) locked(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lockedNow = r.now()
	fn()
}

// addLocked records a device of weight w sent to exec now and returns its
// ticket; the caller is inside locked.
func (r *reservations) addLocked(exec string, w float64) fleet.Ticket {
	r.seq++
	if r.seq%4096 == 0 {
		r.sweepLocked()
	}
	r.add(exec, r.replica, reservation{at: r.lockedNow, seq: r.seq, w: w})
	return fleet.Ticket{Replica: r.replica, Executor: exec, Seq: r.seq}
}

// learn records a device of weight w that another replica sent where its
// ticket says (when this replica learnt it).
func (r *reservations) learn(t fleet.Ticket, w float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lockedNow = r.now()
	r.add(t.Executor, t.Replica, reservation{at: r.lockedNow, seq: t.Seq, w: w})
}

// addGroup records a device of weight w that another replica sent to group
// without a ticket (when this replica learnt it).
func (r *reservations) addGroup(group string, w float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lockedNow = r.now()
	l := r.byGroup[group]
	if l == nil {
		l = &reservationList{}
		r.byGroup[group] = l
	}
	l.insert(reservation{at: r.lockedNow, w: w}, r.maxAge)
}

func (r *reservations) add(exec, replica string, x reservation) {
	m := r.byExec[exec]
	if m == nil {
		m = map[string]*reservationList{}
		r.byExec[exec] = m
	}
	l := m[replica]
	if l == nil {
		l = &reservationList{}
		m[replica] = l
	}
	if x.seq <= l.done {
		return // already counted
	}
	l.insert(x, r.maxAge)
}

// insert adds x in order of sequence number (at the end, its time kept
// ascending, for reservations without one), after dropping those older
// than maxAge and those counted already.
func (l *reservationList) insert(x reservation, maxAge time.Duration) {
	rs := l.rs
	old := x.at.Add(-maxAge)
	drop := 0
	for drop < len(rs) && (!rs[drop].at.After(old) || rs[drop].seq != 0 && rs[drop].seq <= l.done) {
		drop++
	}
	rs = rs[drop:]
	i := len(rs)
	if x.seq == 0 {
		// Keep the list ordered even if the clock stepped back.
		if i > 0 && x.at.Before(rs[i-1].at) {
			x.at = rs[i-1].at
		}
	} else {
		for i > 0 && rs[i-1].seq > x.seq {
			i--
		}
	}
	rs = slices.Insert(rs, i, x)
	for j := i; j < len(rs); j++ {
		rs[j].cum = rs[j].w
		if j > 0 {
			rs[j].cum += rs[j-1].cum
		}
	}
	l.rs = rs
}

// sweepLocked forgets the lists whose newest reservation is older than
// maxAge, so that executors and replicas long gone leave nothing behind.
func (r *reservations) sweepLocked() {
	old := r.lockedNow.Add(-r.maxAge)
	stale := func(l *reservationList) bool {
		return len(l.rs) == 0 || !l.rs[len(l.rs)-1].at.After(old)
	}
	for exec, m := range r.byExec {
		for replica, l := range m {
			if stale(l) {
				delete(m, replica)
			}
		}
		if len(m) == 0 {
			delete(r.byExec, exec)
		}
	}
	for g, l := range r.byGroup {
		if stale(l) {
			delete(r.byGroup, g)
		}
	}
}
