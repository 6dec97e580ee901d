package executor

import (
	"maps"
	"time"

	"github.com/berthproject/berth/fleet"
)

// maxTicketLen bounds the reservation ticket a Hello may carry.
const maxTicketLen = 300

// admittedIdle is how long a replica's entry stays in the record after its
// last reservation admitted here: longer than any control plane keeps a
// reservation (ReservationMaxAge, 30 s by default).
const admittedIdle = 10 * time.Minute

// admittedMarks are, per control plane replica, the highest reservation
// sequence number made on this executor whose device it admitted: what the
// record reports as fleet.Executor.Admitted, in the same write as the
// connection count (see controlplane's reservations). At most
// fleet.MaxAdmittedReplicas replicas, the least recently heard of leaving
// first. Guarded by the Server's mu.
type admittedMarks struct {
	seq map[string]uint64
	at  map[string]time.Time
	// view is the map handed to the Registrar; replaced, never modified,
	// once handed over.
	view map[string]uint64
}

// ticketOf returns the reservation ticket of a Hello when it names this
// executor, and false when there is none, it is malformed or names another
// executor (the device came here from another endpoint of the answer; that
// executor's reservation ends with its next admitted one).
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

// admit raises the replica's mark to t.Seq; it reports whether the mark
// changed (the record then has to be written).
func (m *admittedMarks) admit(t fleet.Ticket, now time.Time) bool {
	if m.seq == nil {
		m.seq, m.at = map[string]uint64{}, map[string]time.Time{}
	}
	if t.Seq <= m.seq[t.Replica] {
		m.at[t.Replica] = now
		return false
	}
	if _, ok := m.seq[t.Replica]; !ok {
		m.evict(now)
	}
	m.seq[t.Replica], m.at[t.Replica] = t.Seq, now
	m.view = nil
	return true
}

// evict makes room for one more replica: entries idle for admittedIdle go,
// and the least recently heard of while the map is full.
func (m *admittedMarks) evict(now time.Time) {
	for r, at := range m.at {
		if now.Sub(at) > admittedIdle {
			delete(m.seq, r)
			delete(m.at, r)
		}
	}
	for len(m.seq) >= fleet.MaxAdmittedReplicas {
		oldest := ""
		for r, at := range m.at {
			if oldest == "" || at.Before(m.at[oldest]) {
				oldest = r
			}
		}
		delete(m.seq, oldest)
		delete(m.at, oldest)
	}
	m.view = nil
}

// snapshot returns the marks as a map the Registrar may keep: never nil
// (an empty map says this executor reports reservations), never modified
// afterwards.
func (m *admittedMarks) snapshot() map[string]uint64 {
	if m.view == nil {
		m.view = maps.Clone(m.seq)
		if m.view == nil {
			m.view = map[string]uint64{}
		}
	}
	return m.view
}
