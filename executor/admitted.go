package executor

import (
	"time"

	"github.com/berthproject/berth/fleet"
)

// maxTicketLen bounds the reservation ticket a Hello may carry.
const maxTicketLen = 300

// admittedWindow is how long an admitted reservation stays in the record:
// longer than any control plane keeps a reservation (ReservationMaxAge,
// 30 s by default), so that a replica always sees it before it forgets the
// reservation.
const admittedWindow = 2 * time.Minute

// admittedMarks are, per control plane replica, the sequence numbers of
// its reservations on this executor whose devices were admitted in the
// last admittedWindow, as ranges: what the record reports as
// fleet.Executor.Admitted, in the same write as the connection count (see
// controlplane's reservations). Devices of one replica arrive roughly in
// the order they were assigned, so the ranges are few; beyond
// fleet.MaxAdmittedRanges the two lowest merge (the numbers between them
// read as admitted: a replica then stops counting those devices early).
// At most fleet.MaxAdmittedReplicas replicas, the least recently heard of
// leaving first. Guarded by the Server's mu.
type admittedMarks struct {
	byReplica map[string]*admittedRanges
	// view is the map handed to the Registrar; replaced, never modified,
	// once handed over.
	view map[string]fleet.SeqSet
}

type admittedRanges struct {
	rs    []admittedRange
	heard time.Time
}

// admittedRange is [lo, hi], last added to at at.
type admittedRange struct {
	lo, hi uint64
	at     time.Time
}

// ticketOf returns the reservation ticket of a Hello when it names this
// executor, and false when there is none, it is malformed or names another
// executor (the device came here from another endpoint of its answer).
func ticketOf(raw, executorID string) (fleet.Ticket, bool) {
	if raw == "" || len(raw) > maxTicketLen {
		return fleet.Ticket{}, false
	}
	t, err := fleet.ParseTicket(raw)
	if err != nil || t.Executor != executorID {
		return fleet.Ticket{}, false
	}
	return t, true
}

// admit adds t's number to its replica's set; it reports whether the set
// changed (the record then has to be written).
func (m *admittedMarks) admit(t fleet.Ticket, now time.Time) bool {
	if m.byReplica == nil {
		m.byReplica = map[string]*admittedRanges{}
	}
	a := m.byReplica[t.Replica]
	if a == nil {
		m.evict(now)
		a = &admittedRanges{}
		m.byReplica[t.Replica] = a
	}
	a.heard = now
	if !a.add(t.Seq, now) {
		return false
	}
	a.expire(now.Add(-admittedWindow))
	for len(a.rs) > fleet.MaxAdmittedRanges {
		a.rs[1].lo, a.rs[1].at = a.rs[0].lo, laterOf(a.rs[0].at, a.rs[1].at)
		a.rs = a.rs[1:]
	}
	m.view = nil
	return true
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// add puts n in the ranges; false when it was there.
func (a *admittedRanges) add(n uint64, now time.Time) bool {
	rs := a.rs
	// i: the first range ending at or after n-1 (n may extend it).
	i := len(rs)
	for i > 0 && rs[i-1].hi+1 >= n {
		i--
	}
	if i < len(rs) && rs[i].lo <= n && n <= rs[i].hi {
		return false
	}
	switch {
	case i < len(rs) && rs[i].hi+1 == n:
		rs[i].hi, rs[i].at = n, now
		if i+1 < len(rs) && rs[i+1].lo == n+1 {
			rs[i].hi = rs[i+1].hi
			rs = append(rs[:i+1], rs[i+2:]...)
		}
	case i < len(rs) && rs[i].lo == n+1:
		rs[i].lo, rs[i].at = n, now
	default:
		rs = append(rs, admittedRange{})
		copy(rs[i+1:], rs[i:])
		rs[i] = admittedRange{lo: n, hi: n, at: now}
	}
	a.rs = rs
	return true
}

// expire drops the ranges last added to before old.
func (a *admittedRanges) expire(old time.Time) {
	kept := a.rs[:0]
	for _, r := range a.rs {
		if r.at.After(old) {
			kept = append(kept, r)
		}
	}
	a.rs = kept
}

// evict makes room for one more replica: replicas not heard of for
// admittedWindow go, and the least recently heard of while the map is
// full.
func (m *admittedMarks) evict(now time.Time) {
	for r, a := range m.byReplica {
		if now.Sub(a.heard) > admittedWindow {
			delete(m.byReplica, r)
		}
	}
	for len(m.byReplica) >= fleet.MaxAdmittedReplicas {
		oldest := ""
		for r, a := range m.byReplica {
			if oldest == "" || a.heard.Before(m.byReplica[oldest].heard) {
				oldest = r
			}
		}
		delete(m.byReplica, oldest)
	}
	m.view = nil
}

// snapshot returns the sets as a map the Registrar may keep: never nil (an
// empty map says this executor reports reservations), never modified
// afterwards.
func (m *admittedMarks) snapshot() map[string]fleet.SeqSet {
	if m.view == nil {
		m.view = make(map[string]fleet.SeqSet, len(m.byReplica))
		for r, a := range m.byReplica {
			set := make(fleet.SeqSet, len(a.rs))
			for i, x := range a.rs {
				set[i] = [2]uint64{x.lo, x.hi}
			}
			m.view[r] = set
		}
	}
	return m.view
}
