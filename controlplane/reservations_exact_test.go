package controlplane

import (
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/berthproject/berth/fleet"
	"github.com/berthproject/berth/registry"
)

// reporting returns an executor record that reports reservations, with
// count connections and the given marks.
func reporting(id string, count int, admitted map[string]uint64) *registry.Executor {
	e := exe(id, "g", 1000, count)
	if admitted == nil {
		admitted = map[string]uint64{}
	}
	e.Admitted = admitted
	return &e
}

// TestReservationEndsWhenCountIncludesIt: a reservation on an executor that
// reports reservations stays pending, however long its device takes (within
// the max age), until a record counts it; then never again, even when the
// executor restarts and reports from zero.
func TestReservationEndsWhenCountIncludesIt(t *testing.T) {
	now := time.Unix(1000, 0)
	res := newReservations("cp-1", time.Second, 30*time.Second, func() time.Time { return now })
	var tickets []fleet.Ticket
	res.locked(func() {
		for range 3 {
			tickets = append(tickets, res.addLocked("e1", 1))
		}
	})
	for i, tk := range tickets {
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
	// The record that counts the first two ends them, not the third.
	if p := pending(reporting("e1", 2, map[string]uint64{"cp-1": tickets[1].Seq})); p != 1 {
		t.Errorf("pending once two are counted = %v, want 1", p)
	}
	// Another replica's mark says nothing about this replica's.
	if p := pending(reporting("e1", 2, map[string]uint64{"cp-2": tickets[2].Seq + 100})); p != 1 {
		t.Errorf("pending with only another replica's mark = %v, want 1", p)
	}
	// An older record (a stale snapshot) or a restarted executor (marks from
	// zero) does not bring the counted ones back.
	if p := pending(reporting("e1", 0, nil)); p != 1 {
		t.Errorf("pending against a restarted executor's record = %v, want 1", p)
	}
	if p := pending(reporting("e1", 3, map[string]uint64{"cp-1": tickets[2].Seq})); p != 0 {
		t.Errorf("pending once all are counted = %v, want 0", p)
	}
	// A device that never comes is forgotten after the max age.
	res.locked(func() { res.addLocked("e1", 1) })
	now = now.Add(31 * time.Second)
	if p := pending(reporting("e1", 3, nil)); p != 0 {
		t.Errorf("pending after the max age = %v, want 0", p)
	}
}

// TestReservationsLearntFromAnotherReplica: a ticket in another replica's
// assignment record counts on its executor until that executor's mark for
// the other replica reaches it; one learnt after the executor counted it
// never counts.
func TestReservationsLearntFromAnotherReplica(t *testing.T) {
	now := time.Unix(1000, 0)
	res := newReservations("cp-1", time.Second, 30*time.Second, func() time.Time { return now })
	res.learn(fleet.Ticket{Replica: "cp-2", Executor: "e1", Seq: 50}, 1)
	res.learn(fleet.Ticket{Replica: "cp-2", Executor: "e1", Seq: 52}, 1)
	res.learn(fleet.Ticket{Replica: "cp-2", Executor: "e1", Seq: 51}, 1) // out of order
	var p float64
	res.locked(func() { p = res.Pending(reporting("e1", 0, map[string]uint64{"cp-2": 50})) })
	if p != 2 {
		t.Errorf("pending with cp-2's mark at 50 = %v, want 2 (51 and 52)", p)
	}
	res.learn(fleet.Ticket{Replica: "cp-2", Executor: "e1", Seq: 49}, 1) // learnt late
	res.locked(func() { p = res.Pending(reporting("e1", 1, map[string]uint64{"cp-2": 51})) })
	if p != 1 {
		t.Errorf("pending with cp-2's mark at 51 = %v, want 1 (52)", p)
	}
}

// TestReservationsExactUnderInterleavings is the property: devices reserved
// on executors connect in any order, leave, and the replica reads records
// from any moment up to now (stale snapshots, but never older than one it
// read before). At every read, for each executor, the recorded count plus
// the pending reservations equals the devices there or on their way,
// minus exactly the reservations the executor passed over (numbered below
// its mark but not yet arrived: out of order). With devices arriving in
// order, that is exact.
func TestReservationsExactUnderInterleavings(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		now := time.Unix(1000, 0)
		res := newReservations("cp-1", time.Second, time.Hour, func() time.Time { return now })
		execs := []string{"e1", "e2"}
		inOrder := rapid.Bool().Draw(t, "inOrder")
		type state struct {
			conns   int
			mark    uint64
			arrived map[uint64]bool
		}
		// history[e] are the executor's records, oldest first.
		history := map[string][]state{}
		for _, e := range execs {
			history[e] = []state{{arrived: map[uint64]bool{}}}
		}
		reserved := map[string][]uint64{} // by executor, ascending
		waiting := map[string][]uint64{}  // reserved, not arrived
		left := map[string]int{}          // devices that came and left
		read := map[string]int{}          // the newest record index the replica read
		steps := rapid.IntRange(1, 150).Draw(t, "steps")
		for i := range steps {
			e := rapid.SampledFrom(execs).Draw(t, fmt.Sprint("exec", i))
			cur := history[e][len(history[e])-1]
			switch op := rapid.IntRange(0, 3).Draw(t, fmt.Sprint("op", i)); op {
			case 0: // Assign: reserve on e
				var tk fleet.Ticket
				res.locked(func() { tk = res.addLocked(e, 1) })
				reserved[e] = append(reserved[e], tk.Seq)
				waiting[e] = append(waiting[e], tk.Seq)
			case 1: // a device arrives; its record is written
				if len(waiting[e]) == 0 {
					continue
				}
				j := 0
				if !inOrder {
					j = rapid.IntRange(0, len(waiting[e])-1).Draw(t, fmt.Sprint("which", i))
				}
				seq := waiting[e][j]
				waiting[e] = append(waiting[e][:j:j], waiting[e][j+1:]...)
				next := state{conns: cur.conns + 1, mark: max(cur.mark, seq), arrived: map[uint64]bool{seq: true}}
				for s := range cur.arrived {
					next.arrived[s] = true
				}
				history[e] = append(history[e], next)
			case 2: // a device leaves
				if cur.conns == 0 {
					continue
				}
				left[e]++
				next := cur
				next.conns--
				history[e] = append(history[e], next)
			case 3: // the replica reads a record of e from some moment
				k := rapid.IntRange(read[e], len(history[e])-1).Draw(t, fmt.Sprint("read", i))
				read[e] = k
				st := history[e][k]
				var p float64
				res.locked(func() { p = res.Pending(reporting(e, st.conns, map[string]uint64{"cp-1": st.mark})) })
				// Devices there or on their way, now.
				truth := len(reserved[e]) - left[e]
				// Those that left after record k was written are still in
				// its count: the record is older than their leaving.
				leftSince := 0
				for x := k + 1; x < len(history[e]); x++ {
					if history[e][x].conns < history[e][x-1].conns {
						leftSince++
					}
				}
				passed := 0
				for _, s := range reserved[e] {
					if s <= st.mark && !st.arrived[s] {
						passed++
					}
				}
				if got, want := float64(st.conns)+p, float64(truth+leftSince-passed); got != want {
					t.Fatalf("executor %s, record %d of %d (count %d, mark %d): count+pending = %v, want %v (reserved %d, left %d, left since %d, passed over %d)",
						e, k, len(history[e])-1, st.conns, st.mark, got, want, len(reserved[e]), left[e], leftSince, passed)
				}
				if inOrder && passed != 0 {
					t.Fatalf("devices arriving in order, yet %d reservations passed over", passed)
				}
			}
		}
	})
}
