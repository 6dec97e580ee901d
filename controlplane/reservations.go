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
// replica without a ticket counts on the group the same way. Any
// reservation is forgotten after maxAge (its device never came, connected
// to another endpoint, or did not give its ticket back). Each carries the
// device's weight, so load balancing counts heavy devices as more.
type reservations struct {
	grace, maxAge time.Duration
	now           func() time.Time
	replica       string
	// start numbers the first reservation on each executor.
	start uint64

	mu sync.Mutex
	// next is the next sequence number on each executor (kept while the
	// replica runs: numbers are never given twice).
	next map[string]uint64
	// byExec holds pending reservations by executor id, then by the replica
	// that made them.
	byExec map[string]map[string]*reservationList
	// byGroup holds reservations without ticket by group id, ascending by
	// at.
	byGroup map[string][]reservation
	// lockedNow is the time taken when the lock was taken: one clock read
	// serves a whole placement.
	lockedNow time.Time
	// made counts reservations, to sweep now and then.
	made uint64
}

type reservation struct {
	at  time.Time
	seq uint64
	w   float64
}

// reservationList is one executor's pending reservations of one replica,
// ascending by sequence number (by time for learnt ones out of order too).
// rs[:checked] were checked against set, the executor's Admitted set of
// the replica last read, and found not in it; sum is their total weight.
type reservationList struct {
	rs      []reservation
	set     fleet.SeqSet
	checked int
	sum     float64
}

func newReservations(replica string, grace, maxAge time.Duration, now func() time.Time) *reservations {
	return &reservations{replica: replica, grace: grace, maxAge: maxAge, now: now,
		start: uint64(max(now().UnixNano(), 1)), next: map[string]uint64{},
		byExec: map[string]map[string]*reservationList{}, byGroup: map[string][]reservation{}}
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
			sum += l.madeAfter(maxTime(e.ObservedAt.Add(-r.grace), old))
			continue
		}
		sum += l.pending(e.Admitted[replica], old)
	}
	return sum
}

// pending drops the reservations set lists and those made before old, and
// returns the weight of the rest.
func (l *reservationList) pending(set fleet.SeqSet, old time.Time) float64 {
	if !sameSet(set, l.set) {
		l.set, l.checked = set, 0
	}
	expired := len(l.rs) > 0 && !l.rs[0].at.After(old)
	if l.checked == len(l.rs) && !expired {
		return l.sum
	}
	kept := l.rs[:0]
	for i, x := range l.rs {
		if !x.at.After(old) || i >= l.checked && set.Contains(x.seq) {
			continue
		}
		kept = append(kept, x)
	}
	clear(l.rs[len(kept):])
	l.rs, l.checked = kept, len(kept)
	l.sum = 0
	for _, x := range l.rs {
		l.sum += x.w
	}
	return l.sum
}

// sameSet reports whether a and b are the same decoded set (not merely
// equal): a record read again needs no new check.
func sameSet(a, b fleet.SeqSet) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// madeAfter is the weight of the reservations made after cut (the time
// rule, for executors that do not report reservations).
func (l *reservationList) madeAfter(cut time.Time) float64 {
	sum := 0.0
	for _, x := range l.rs {
		if x.at.After(cut) {
			sum += x.w
		}
	}
	return sum
}

// GroupPending implements placement.Pending for devices other replicas sent
// to a group without a ticket. The caller holds the lock.
func (r *reservations) GroupPending(group string, countedAt time.Time) float64 {
	cut := maxTime(countedAt.Add(-r.grace), r.lockedNow.Add(-r.maxAge))
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
	l := r.byExec[t.Executor][t.Replica]
	if l == nil {
		return
	}
	for i := len(l.rs) - 1; i >= 0; i-- {
		if l.rs[i].seq == t.Seq {
			l.rs = append(l.rs[:i], l.rs[i+1:]...)
			l.checked = min(l.checked, i)
			return
		}
	}
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
	rs := r.byGroup[group]
	old := r.lockedNow.Add(-r.maxAge)
	drop := 0
	for drop < len(rs) && !rs[drop].at.After(old) {
		drop++
	}
	rs = rs[drop:]
	x := reservation{at: r.lockedNow, w: w}
	// Keep the list ordered even if the clock stepped back.
	if n := len(rs); n > 0 && x.at.Before(rs[n-1].at) {
		x.at = rs[n-1].at
	}
	r.byGroup[group] = append(rs, x)
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
	i := len(l.rs)
	for i > 0 && l.rs[i-1].seq > x.seq {
		i--
	}
	if i < l.checked {
		l.checked = i // learnt out of order: check from here again
	}
	l.rs = append(l.rs, reservation{})
	copy(l.rs[i+1:], l.rs[i:])
	l.rs[i] = x
}

// sweepLocked forgets the lists whose newest reservation is older than
// maxAge, so that executors and replicas long gone leave nothing behind.
func (r *reservations) sweepLocked() {
	old := r.lockedNow.Add(-r.maxAge)
	for exec, m := range r.byExec {
		for replica, l := range m {
			if len(l.rs) == 0 || !l.rs[len(l.rs)-1].at.After(old) {
				delete(m, replica)
			}
		}
		if len(m) == 0 {
			delete(r.byExec, exec)
		}
	}
	for g, rs := range r.byGroup {
		if len(rs) == 0 || !rs[len(rs)-1].at.After(old) {
			delete(r.byGroup, g)
		}
	}
}
