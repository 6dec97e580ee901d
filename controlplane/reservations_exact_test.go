package controlplane

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/berthproject/berth/fleet"
	"github.com/berthproject/berth/registry"
)

// reporting returns an executor record that reports reservations, with
// count connections and the given admitted sets.
func reporting(id string, count int, admitted map[string]fleet.SeqSet) *registry.Executor {
	e := exe(id, "g", 1000, count)
	if admitted == nil {
		admitted = map[string]fleet.SeqSet{}
	}
	e.Admitted = admitted
	return &e
}

// setOf builds a SeqSet holding ns.
func setOf(ns ...uint64) fleet.SeqSet {
	slices.Sort(ns)
	var s fleet.SeqSet
	for _, n := range ns {
		if k := len(s); k > 0 && s[k-1][1]+1 == n {
			s[k-1][1] = n
			continue
		}
		s = append(s, [2]uint64{n, n})
	}
	return s
}

// TestReservationEndsWhenCountIncludesIt: a reservation on an executor that
// reports reservations stays pending, however long its device takes (within
// the max age), until a record lists it; then never again, even when the
// executor restarts and reports nothing.
func TestReservationEndsWhenCountIncludesIt(t *testing.T) {
	now := time.Unix(1000, 0)
	res := newReservations("cp-1", time.Second, 30*time.Second, func() time.Time { return now })
	var tickets []fleet.Ticket
	res.locked(func() {
		for range 3 {
			tickets = append(tickets, res.addLocked("e1", 1))
		}
		tickets = append(tickets, res.addLocked("e2", 1))
	})
	for i, tk := range tickets[:3] {
		if tk.Replica != "cp-1" || tk.Executor != "e1" || (i > 0 && tk.Seq != tickets[i-1].Seq+1) {
			t.Fatalf("tickets %v: want cp-1/e1 with consecutive numbers", tickets)
		}
		back, err := fleet.ParseTicket(tk.String())
		if err != nil || back != tk {
			t.Fatalf("ticket %q parses as %v, %v", tk, back, err)
		}
	}
	pending := func(e *registry.Executor) (p float64) {
		res.locked(func() { p = res.Pending(e) })
		return p
	}
	// A slow device: 20 s later, nothing counted yet: all three pending
	// (the time rule would have dropped them after a second).
	now = now.Add(20 * time.Second)
	if p := pending(reporting("e1", 0, nil)); p != 3 {
		t.Errorf("pending before any count = %v, want 3", p)
	}
	// The first and the third arrived (out of order): only the second is
	// left.
	if p := pending(reporting("e1", 2, map[string]fleet.SeqSet{"cp-1": setOf(tickets[0].Seq, tickets[2].Seq)})); p != 1 {
		t.Errorf("pending once the first and third are counted = %v, want 1", p)
	}
	// Another replica's numbers say nothing about this replica's, nor does
	// e2's own numbering.
	if p := pending(reporting("e1", 2, map[string]fleet.SeqSet{"cp-2": setOf(tickets[1].Seq)})); p != 1 {
		t.Errorf("pending with only another replica's numbers = %v, want 1", p)
	}
	// An older record (a stale snapshot) or a restarted executor (nothing
	// reported) does not bring the counted ones back.
	if p := pending(reporting("e1", 0, nil)); p != 1 {
		t.Errorf("pending against a restarted executor's record = %v, want 1", p)
	}
	if p := pending(reporting("e1", 3, map[string]fleet.SeqSet{"cp-1": setOf(tickets[1].Seq)})); p != 0 {
		t.Errorf("pending once all are counted = %v, want 0", p)
	}
	if p := pending(reporting("e2", 0, nil)); p != 1 {
		t.Errorf("pending on e2 = %v, want 1", p)
	}
	// A device that never comes is forgotten after the max age.
	now = now.Add(11 * time.Second)
	if p := pending(reporting("e2", 0, nil)); p != 0 {
		t.Errorf("pending after the max age = %v, want 0", p)
	}
}

// TestReservationsLearntFromAnotherReplica: a ticket in another replica's
// assignment record counts on its executor until that executor's record
// lists it for the other replica; one learnt after the executor counted it
// never counts.
func TestReservationsLearntFromAnotherReplica(t *testing.T) {
	now := time.Unix(1000, 0)
	res := newReservations("cp-1", time.Second, 30*time.Second, func() time.Time { return now })
	res.learn(fleet.Ticket{Replica: "cp-2", Executor: "e1", Seq: 50}, 1)
	res.learn(fleet.Ticket{Replica: "cp-2", Executor: "e1", Seq: 52}, 1)
	res.learn(fleet.Ticket{Replica: "cp-2", Executor: "e1", Seq: 51}, 1) // out of order
	var p float64
	res.locked(func() { p = res.Pending(reporting("e1", 1, map[string]fleet.SeqSet{"cp-2": setOf(50)})) })
	if p != 2 {
		t.Errorf("pending with cp-2's 50 counted = %v, want 2 (51 and 52)", p)
	}
	res.learn(fleet.Ticket{Replica: "cp-2", Executor: "e1", Seq: 49}, 1) // learnt after it arrived
	res.locked(func() { p = res.Pending(reporting("e1", 3, map[string]fleet.SeqSet{"cp-2": setOf(49, 50, 51)})) })
	if p != 1 {
		t.Errorf("pending with cp-2's 49-51 counted = %v, want 1 (52)", p)
	}
}

// TestReservationsExactUnderInterleavings is the property: devices reserved
// on executors connect in any order, leave, and the replica reads records
// from any moment up to now (stale snapshots, never older than one it read
// before). At every read, for each executor, the recorded count plus the
// pending reservations equals the devices there or on their way, less
// those that left after the record was written (still in its count).
func TestReservationsExactUnderInterleavings(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		now := time.Unix(1000, 0)
		res := newReservations("cp-1", time.Second, time.Hour, func() time.Time { return now })
		execs := []string{"e1", "e2"}
		type state struct {
			conns   int
			arrived []uint64
		}
		// history[e] are the executor's records, oldest first.
		history := map[string][]state{}
		for _, e := range execs {
			history[e] = []state{{}}
		}
		reserved := map[string]int{}
		waiting := map[string][]uint64{} // reserved, not arrived
		left := map[string]int{}
		read := map[string]int{} // the newest record the replica read
		steps := rapid.IntRange(1, 200).Draw(t, "steps")
		for i := range steps {
			e := rapid.SampledFrom(execs).Draw(t, fmt.Sprint("exec", i))
			cur := history[e][len(history[e])-1]
			switch rapid.IntRange(0, 3).Draw(t, fmt.Sprint("op", i)) {
			case 0: // Assign: reserve on e
				var tk fleet.Ticket
				res.locked(func() { tk = res.addLocked(e, 1) })
				reserved[e]++
				waiting[e] = append(waiting[e], tk.Seq)
			case 1: // a device arrives, any of those on their way
				if len(waiting[e]) == 0 {
					continue
				}
				j := rapid.IntRange(0, len(waiting[e])-1).Draw(t, fmt.Sprint("which", i))
				seq := waiting[e][j]
				waiting[e] = slices.Delete(waiting[e], j, j+1)
				history[e] = append(history[e], state{conns: cur.conns + 1, arrived: append(slices.Clip(cur.arrived), seq)})
			case 2: // a device leaves
				if cur.conns == 0 {
					continue
				}
				left[e]++
				history[e] = append(history[e], state{conns: cur.conns - 1, arrived: cur.arrived})
			case 3: // the replica reads a record of e from some moment
				k := rapid.IntRange(read[e], len(history[e])-1).Draw(t, fmt.Sprint("read", i))
				read[e] = k
				st := history[e][k]
				var p float64
				rec := reporting(e, st.conns, map[string]fleet.SeqSet{"cp-1": setOf(slices.Clone(st.arrived)...)})
				res.locked(func() { p = res.Pending(rec) })
				leftSince := 0
				for x := k + 1; x < len(history[e]); x++ {
					if history[e][x].conns < history[e][x-1].conns {
						leftSince++
					}
				}
				want := reserved[e] - left[e] + leftSince
				if got := float64(st.conns) + p; got != float64(want) {
					t.Fatalf("executor %s, record %d of %d (count %d): count+pending = %v, want %d (reserved %d, left %d, since the record %d)",
						e, k, len(history[e])-1, st.conns, got, want, reserved[e], left[e], leftSince)
				}
			}
		}
	})
}

// TestReservationWithdrawn: a cancelled reservation no longer counts, and
// cancelling one already admitted or unknown changes nothing.
func TestReservationWithdrawn(t *testing.T) {
	now := time.Unix(1000, 0)
	res := newReservations("cp-1", time.Second, 30*time.Second, func() time.Time { return now })
	var a, b fleet.Ticket
	res.locked(func() { a, b = res.addLocked("e1", 1), res.addLocked("e1", 1) })
	var p float64
	res.locked(func() {
		res.cancelLocked(a)
		res.cancelLocked(fleet.Ticket{Replica: "cp-1", Executor: "e1", Seq: b.Seq + 7})
		res.cancelLocked(fleet.Ticket{Replica: "cp-1", Executor: "e9", Seq: 1})
		p = res.Pending(reporting("e1", 0, nil))
	})
	if p != 1 {
		t.Errorf("pending after withdrawing one of two = %v, want 1", p)
	}
	res.locked(func() {
		p = res.Pending(reporting("e1", 1, map[string]fleet.SeqSet{"cp-1": setOf(b.Seq)}))
		res.cancelLocked(b) // admitted already
		p += res.Pending(reporting("e1", 1, map[string]fleet.SeqSet{"cp-1": setOf(b.Seq)}))
	})
	if p != 0 {
		t.Errorf("pending once the other is admitted, and after withdrawing it = %v, want 0", p)
	}
}

// TestReservationUnlisted: a reservation its executor never lists (the
// device did not give its ticket back) ends once a count is observed
// ReservationUnlisted after it was made, not only at the max age.
func TestReservationUnlisted(t *testing.T) {
	now := time.Unix(1000, 0)
	res := newReservations("cp-1", time.Second, 30*time.Second, func() time.Time { return now })
	res.unlisted = 10 * time.Second
	res.locked(func() { res.addLocked("e1", 1) })
	at := func(observed time.Time) (p float64) {
		e := reporting("e1", 1, nil)
		e.ObservedAt = observed
		res.locked(func() { p = res.Pending(e) })
		return p
	}
	now = now.Add(12 * time.Second)
	if p := at(time.Unix(1000, 0).Add(9 * time.Second)); p != 1 {
		t.Errorf("pending against a count observed 9 s after = %v, want 1", p)
	}
	if p := at(time.Unix(1000, 0).Add(11 * time.Second)); p != 0 {
		t.Errorf("pending against a count observed 11 s after = %v, want 0", p)
	}
}
