package controlplane

import (
	"sync"
	"time"

	"github.com/berthproject/berth/fleet"
)

// reservations remember devices sent somewhere but possibly not yet in the
// counts executors report, so that the placement counts them meanwhile:
// they are the placement.Pending that placement.Decide reads on Assign.
//
// Each reservation this replica makes on an executor has a sequence number
// (in order per executor, started at the replica's start time in
// nanoseconds) and a ticket naming the replica, the executor and the
// number. The device gives the ticket back in its Hello, and the executor
// reports in its record, written together with its connection count, the
// numbers of each replica it admitted recently, as ranges
// (fleet.Executor.Admitted). A reservation is pending until a record of its
// executor lists it, and then never again — no time guess, so a device that
// connects slowly is not missed and one counted already is not counted
// twice, in whatever order a burst of devices arrives. Reservations other
// replicas made are learnt from the tickets in their assignment records and
// judged the same way.
//
// Two fallbacks keep a time rule: an executor record without Admitted (an
// executor that does not report reservations) counts a reservation made at
// t while its count was observed before t+grace; a record of another
// replica without a ticket counts on the group the same way. A reservation
// a reporting executor never lists (its device never came, connected to
// another endpoint, or did not give its ticket back) ends once a count is
// observed unlisted after it was made, and any is forgotten after maxAge.
// Each carries the device's weight, so load balancing counts heavy devices
// as more.
type reservations struct {
	grace, maxAge time.Duration
	// unlisted ends a reservation its reporting executor has not listed
	// once a count observed that long after it was made (0: only maxAge).
	unlisted time.Duration
	now      func() time.Time
	replica  string
	// start numbers the first reservation on each executor.
	start uint64

	mu sync.Mutex
	// next is the next sequence number on each executor (kept while the
	// replica runs: numbers are never given twice).
	next map[string]uint64
	// byExec holds pending reservations by executor id: this replica's,
	// then other replicas' by replica id.
	// that made them.
	byExec map[string]*execReservations
	// byGroup holds reservations without ticket by group id, ascending by
	// at.
	byGroup map[string][]groupReservation
	// lockedNow is the time taken when the lock was taken: one clock read
	// serves a whole placement; oldest is lockedNow less maxAge.
	lockedNow, oldest time.Time
	// made counts reservations, to sweep now and then.
	made uint64
}

func newReservations(replica string, grace, maxAge time.Duration, now func() time.Time) *reservations {
	return &reservations{replica: replica, grace: grace, maxAge: maxAge, now: now,
		start: uint64(max(now().UnixNano(), 1)), next: map[string]uint64{},
		byExec: map[string]*execReservations{}, byGroup: map[string][]groupReservation{}}
}

// execReservations are one executor's reservations: this replica's, and
// other replicas' (learnt from their tickets) by replica id.
type execReservations struct {
	own    reservationList
	others map[string]*reservationList
}

// Pending implements placement.Pending for an executor. The caller holds
// the lock.
func (r *reservations) Pending(e *fleet.Executor) float64 {
	x := r.byExec[e.ID]
	if x == nil {
		return 0
	}
	sum := r.pendingOf(&x.own, r.replica, e)
	if len(x.others) > 0 {
		for replica, l := range x.others {
			sum += r.pendingOf(l, replica, e)
		}
	}
	return sum
}

// pendingOf is the weight of replica's reservations on e not yet counted.
func (r *reservations) pendingOf(l *reservationList, replica string, e *fleet.Executor) float64 {
	if e.Admitted == nil {
		l.expire(r.oldest)
		l.compact()
		return l.madeAfter(maxTime(e.ObservedAt.Add(-r.grace), r.oldest))
	}
	var set fleet.SeqSet
	if len(e.Admitted) > 0 {
		set = e.Admitted[replica]
	}
	cut := r.oldest
	if r.unlisted > 0 {
		cut = maxTime(cut, e.ObservedAt.Add(-r.unlisted))
	}
	return l.pending(set, cut)
}

// GroupPending implements placement.Pending for devices other replicas sent
// to a group without a ticket. The caller holds the lock.
func (r *reservations) GroupPending(group string, countedAt time.Time) float64 {
	cut := maxTime(countedAt.Add(-r.grace), r.oldest)
	rs := r.byGroup[group]
	sum := 0.0
	for i := len(rs) - 1; i >= 0 && rs[i].at.After(cut); i-- {
		sum += rs[i].w
	}
	return sum
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// setNow reads the clock for what happens under the lock.
func (r *reservations) setNow() {
	r.lockedNow = r.now()
	r.oldest = r.lockedNow.Add(-r.maxAge)
}

// locked runs fn with the reservations locked, so that a placement and the
// reservation it makes are atomic with respect to other Assigns.
func (r *reservations) locked(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setNow()
	fn()
}

// addLocked records a device of weight w sent to exec now and returns its
// ticket; the caller is inside locked.
func (r *reservations) addLocked(exec string, w float64) fleet.Ticket {
	seq, ok := r.next[exec]
	if !ok {
		seq = r.start
	}
	r.next[exec] = seq + 1
	if r.made++; r.made%4096 == 0 {
		r.sweepLocked()
	}
	r.add(exec, r.replica, reservation{at: r.lockedNow, seq: seq, w: w})
	return fleet.Ticket{Replica: r.replica, Executor: exec, Seq: seq}
}

// cancelLocked withdraws the reservation t (made by addLocked), whose
// device was sent elsewhere after all; the caller is inside locked.
func (r *reservations) cancelLocked(t fleet.Ticket) {
	if x := r.byExec[t.Executor]; x != nil && t.Replica == r.replica {
		x.own.cancel(t.Seq)
	}
}

// learn records a device of weight w that another replica sent where its
// ticket says (when this replica learnt it).
func (r *reservations) learn(t fleet.Ticket, w float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setNow()
	r.add(t.Executor, t.Replica, reservation{at: r.lockedNow, seq: t.Seq, w: w})
}

// addGroup records a device of weight w that another replica sent to group
// without a ticket (when this replica learnt it).
func (r *reservations) addGroup(group string, w float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setNow()
	rs := r.byGroup[group]
	old := r.lockedNow.Add(-r.maxAge)
	drop := 0
	for drop < len(rs) && !rs[drop].at.After(old) {
		drop++
	}
	rs = rs[drop:]
	x := groupReservation{at: r.lockedNow, w: w}
	// Keep the list ordered even if the clock stepped back.
	if n := len(rs); n > 0 && x.at.Before(rs[n-1].at) {
		x.at = rs[n-1].at
	}
	r.byGroup[group] = append(rs, x)
}

func (r *reservations) add(exec, replica string, x reservation) {
	e := r.byExec[exec]
	if e == nil {
		e = &execReservations{}
		r.byExec[exec] = e
	}
	if replica == r.replica {
		e.own.insert(x)
		return
	}
	l := e.others[replica]
	if l == nil {
		if e.others == nil {
			e.others = map[string]*reservationList{}
		}
		l = &reservationList{}
		e.others[replica] = l
	}
	l.insert(x)
}

// sweepLocked forgets the lists whose newest reservation is older than
// maxAge, so that executors and replicas long gone leave nothing behind.
func (r *reservations) sweepLocked() {
	old := r.oldest
	for exec, x := range r.byExec {
		for replica, l := range x.others {
			if !l.newest().After(old) {
				delete(x.others, replica)
			}
		}
		if len(x.others) == 0 && !x.own.newest().After(old) {
			delete(r.byExec, exec)
		}
	}
	for g, rs := range r.byGroup {
		if len(rs) == 0 || !rs[len(rs)-1].at.After(old) {
			delete(r.byGroup, g)
		}
	}
}
