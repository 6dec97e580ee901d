package executor

import (
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/berthproject/berth/fleet"
)

// TestAdmittedRangesHoldExactlyTheAdmitted: numbers admitted in any order
// read back as a set holding exactly them, in few, ascending, disjoint,
// non-adjacent ranges.
func TestAdmittedRangesHoldExactlyTheAdmitted(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var m admittedMarks
		now := time.Unix(1000, 0)
		in := map[uint64]bool{}
		for i := range rapid.IntRange(1, 300).Draw(t, "n") {
			n := rapid.Uint64Range(1000, 1200).Draw(t, fmt.Sprint("seq", i))
			changed := m.admit(fleet.Ticket{Replica: "cp-1", Executor: "e", Seq: n}, now)
			if changed == in[n] {
				t.Fatalf("admit(%d) changed=%v, but it was admitted before: %v", n, changed, in[n])
			}
			in[n] = true
		}
		set := m.snapshot()["cp-1"]
		if err := set.Validate(); err != nil && len(set) <= fleet.MaxAdmittedRanges {
			t.Fatalf("set %v: %v", set, err)
		}
		for i := 1; i < len(set); i++ {
			if set[i][0] <= set[i-1][1]+1 {
				t.Fatalf("ranges %v and %v touch: want merged", set[i-1], set[i])
			}
		}
		for n := uint64(990); n <= 1210; n++ {
			if set.Contains(n) != in[n] {
				t.Fatalf("set %v contains %d: %v, admitted: %v", set, n, set.Contains(n), in[n])
			}
		}
	})
}

// TestAdmittedMarksBounded: ranges beyond the bound merge from the lowest,
// old ranges expire, and replicas beyond the bound leave least recently
// heard of first.
func TestAdmittedMarksBounded(t *testing.T) {
	var m admittedMarks
	now := time.Unix(1000, 0)
	for i := range fleet.MaxAdmittedRanges + 2 {
		m.admit(fleet.Ticket{Replica: "cp-1", Executor: "e", Seq: uint64(10 + 2*i)}, now)
	}
	set := m.snapshot()["cp-1"]
	if len(set) != fleet.MaxAdmittedRanges || set[0] != [2]uint64{10, 14} {
		t.Fatalf("after %d separate numbers: %d ranges starting %v; want %d, the lowest three merged into [10 14]",
			fleet.MaxAdmittedRanges+2, len(set), set[0], fleet.MaxAdmittedRanges)
	}
	now = now.Add(admittedWindow + time.Second)
	m.admit(fleet.Ticket{Replica: "cp-1", Executor: "e", Seq: 5000}, now)
	if set := m.snapshot()["cp-1"]; len(set) != 1 || set[0] != [2]uint64{5000, 5000} {
		t.Fatalf("after the window: %v, want only [5000 5000]", set)
	}
	for i := range fleet.MaxAdmittedReplicas + 3 {
		now = now.Add(time.Millisecond)
		m.admit(fleet.Ticket{Replica: fmt.Sprintf("cp-%d", i+2), Executor: "e", Seq: 1}, now)
	}
	view := m.snapshot()
	if len(view) != fleet.MaxAdmittedReplicas {
		t.Fatalf("%d replicas reported, want %d", len(view), fleet.MaxAdmittedReplicas)
	}
	if _, ok := view["cp-1"]; ok {
		t.Errorf("cp-1, heard of least recently, is still reported")
	}
	if _, ok := view[fmt.Sprintf("cp-%d", fleet.MaxAdmittedReplicas+4)]; !ok {
		t.Errorf("the newest replica is not reported")
	}
}
