package rebalance_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/rebalance"
	"github.com/berthproject/berth/registry"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func group(id string, capacity int, st registry.GroupState, labels ...string) registry.Group {
	if len(labels) == 0 {
		labels = []string{"default"}
	}
	return registry.Group{ID: id, Capacity: capacity, State: st, Labels: labels}
}

// execOf is the one executor of a group, named after it.
func execOf(g string, capacity int) registry.Executor {
	return registry.Executor{ID: g + "-x", GroupID: g, Address: g + ":1", Capacity: capacity}
}

// devices returns n devices on group g's executor with label.
func devices(prefix, g string, n int, label string) []rebalance.Device {
	out := make([]rebalance.Device, n)
	for i := range out {
		out[i] = rebalance.Device{ID: fmt.Sprintf("%s-%04d", prefix, i), Executor: g + "-x", Group: g, HasRecord: true, Label: label, RecordLabel: label, Weight: 1}
	}
	return out
}

func compile(t *testing.T, doc string) *policy.Compiled {
	t.Helper()
	if doc == "" {
		return policy.Default()
	}
	p, err := policy.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	c, err := policy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// counts tallies moves by source group.
func counts(p rebalance.Plan) map[string]int {
	m := map[string]int{}
	for _, mv := range p.Moves {
		m[mv.Group]++
	}
	return m
}

func TestMake(t *testing.T) {
	three := []registry.Group{group("g1", 1000, registry.GroupActive), group("g2", 1000, registry.GroupActive), group("g3", 1000, registry.GroupActive)}
	threeExecs := []registry.Executor{execOf("g1", 1000), execOf("g2", 1000), execOf("g3", 1000)}
	even := slices.Concat(devices("a", "g1", 300, "default"), devices("b", "g2", 300, "default"), devices("c", "g3", 300, "default"))
	th := rebalance.Thresholds{Rel: 0.1, Abs: 10}

	type want struct {
		policy, drain, balance, minimum, waiting, unmigrated, noTarget int
		from                                                           map[string]int // moves by source group, when set
	}
	tests := []struct {
		name    string
		groups  []registry.Group
		execs   []registry.Executor
		policy  string
		devs    []rebalance.Device
		migrate bool
		th      rebalance.Thresholds
		want    want
	}{
		{
			name:   "balanced: nothing to do",
			groups: three, execs: threeExecs, devs: even, th: th,
		},
		{
			name:   "new empty group: fill it to its fair share less the threshold, from every group",
			groups: append(slices.Clone(three), group("g4", 1000, registry.GroupActive)),
			execs:  append(slices.Clone(threeExecs), execOf("g4", 1000)),
			// 900 over 4 groups: fair 225, threshold max(10, 22.5) = 22.5;
			// g4 needs 203 (ceil(225-22.5)) and each other group gives.
			devs: even, th: th,
			want: want{balance: 203, minimum: 203, from: map[string]int{"g1": 68, "g2": 68, "g3": 67}},
		},
		{
			name:   "within the relative threshold: nothing to do",
			groups: three, execs: threeExecs, th: th,
			devs: slices.Concat(devices("a", "g1", 320, "default"), devices("b", "g2", 300, "default"), devices("c", "g3", 280, "default")),
		},
		{
			name:   "the absolute threshold dominates small groups",
			groups: three, execs: threeExecs, th: rebalance.Thresholds{Rel: 0.1, Abs: 50},
			// fair 30, threshold 50: 60/20/10 is within it.
			devs: slices.Concat(devices("a", "g1", 60, "default"), devices("b", "g2", 20, "default"), devices("c", "g3", 10, "default")),
		},
		{
			name:   "over the thresholds: move off the over group only",
			groups: three, execs: threeExecs, th: th,
			// fair 300, threshold 30: g1 at 400 gives 70, down to 330.
			devs: slices.Concat(devices("a", "g1", 400, "default"), devices("b", "g2", 250, "default"), devices("c", "g3", 250, "default")),
			want: want{balance: 70, minimum: 70, from: map[string]int{"g1": 70}},
		},
		{
			name: "capacities weigh fair shares",
			groups: []registry.Group{
				group("big", 3000, registry.GroupActive), group("small", 1000, registry.GroupActive),
			},
			execs: []registry.Executor{execOf("big", 3000), execOf("small", 1000)},
			th:    rebalance.Thresholds{Rel: 0.05, Abs: 1},
			// 800 devices: fair 600 and 200; all on small.
			devs: devices("s", "small", 800, "default"),
			want: want{balance: 590, minimum: 590, from: map[string]int{"small": 590}},
		},
		{
			name:   "drain: every device of a draining group, none of the others",
			groups: []registry.Group{group("g1", 1000, registry.GroupDraining), group("g2", 1000, registry.GroupActive), group("g3", 1000, registry.GroupActive)},
			execs:  threeExecs, devs: even, th: th,
			want: want{drain: 300, from: map[string]int{"g1": 300}},
		},
		{
			name:   "disabled group and deleted group drain too",
			groups: []registry.Group{group("g1", 1000, registry.GroupDisabled), group("g2", 1000, registry.GroupActive)},
			execs:  threeExecs, devs: even, th: th,
			want: want{drain: 600, from: map[string]int{"g1": 300, "g3": 300}},
		},
		{
			name:   "executor drain mark: its devices move, within the group if it must",
			groups: []registry.Group{group("g1", 1000, registry.GroupActive)},
			execs: []registry.Executor{
				{ID: "g1-x", GroupID: "g1", Address: "a:1", Capacity: 500, Draining: true, DrainMarked: true},
				{ID: "g1-y", GroupID: "g1", Address: "b:1", Capacity: 500},
			},
			devs: devices("a", "g1", 40, "default"), th: th,
			want: want{drain: 40},
		},
		{
			name:   "executor stopping by itself: its devices are left to it",
			groups: three,
			execs: []registry.Executor{
				{ID: "g1-x", GroupID: "g1", Address: "a:1", Capacity: 1000, Draining: true},
				execOf("g2", 1000), execOf("g3", 1000),
			},
			devs: even, th: th,
		},
		{
			name:   "draining group and nowhere to go",
			groups: []registry.Group{group("g1", 1000, registry.GroupDraining)},
			execs:  threeExecs, devs: devices("a", "g1", 5, "default"), th: th,
			want: want{noTarget: 5},
		},
		{
			name: "policy relabels one model: with migrate it moves",
			groups: []registry.Group{
				group("g1", 1000, registry.GroupActive, "std"), group("g2", 1000, registry.GroupActive, "std"), group("s", 1000, registry.GroupActive, "sensors"),
			},
			execs:  []registry.Executor{execOf("g1", 1000), execOf("g2", 1000), execOf("s", 1000)},
			policy: "default_label: std\nrules:\n  - {name: sensors, when: 'device.model == \"x\"', label: sensors}\n",
			devs: slices.Concat(devices("p", "g1", 100, "std"), devices("q", "g2", 100, "std"),
				relabel(devices("x", "g1", 30, "std"), "sensors"), relabel(devices("y", "g2", 20, "std"), "sensors")),
			migrate: true, th: th,
			want: want{policy: 50, from: map[string]int{"g1": 30, "g2": 20}},
		},
		{
			name: "policy relabels one model: without migrate it waits for reconnects",
			groups: []registry.Group{
				group("g1", 1000, registry.GroupActive, "std"), group("s", 1000, registry.GroupActive, "sensors"),
			},
			execs:  []registry.Executor{execOf("g1", 1000), execOf("s", 1000)},
			policy: "default_label: std\nrules:\n  - {name: sensors, when: 'device.model == \"x\"', label: sensors}\n",
			devs:   slices.Concat(devices("p", "g1", 100, "std"), relabel(devices("x", "g1", 30, "std"), "sensors")),
			th:     th,
			want:   want{unmigrated: 30},
		},
		{
			name: "a relabelled group: its devices move without migrate",
			groups: []registry.Group{
				group("g1", 1000, registry.GroupActive, "other"), group("g2", 1000, registry.GroupActive),
			},
			execs: []registry.Executor{execOf("g1", 1000), execOf("g2", 1000)},
			devs:  devices("a", "g1", 10, "default"), th: th,
			want: want{policy: 10, from: map[string]int{"g1": 10}},
		},
		{
			name:   "moved less than the minimum interval ago: waiting",
			groups: []registry.Group{group("g1", 1000, registry.GroupDraining), group("g2", 1000, registry.GroupActive)},
			execs:  threeExecs,
			devs: slices.Concat(moved(devices("a", "g1", 4, "default"), t0.Add(-time.Minute)),
				moved(devices("b", "g1", 6, "default"), t0.Add(-time.Hour))),
			th:   th,
			want: want{drain: 6, waiting: 4},
		},
		{
			name:   "moves in flight count at their target and are not planned again",
			groups: append(slices.Clone(three), group("g4", 1000, registry.GroupActive)),
			execs:  append(slices.Clone(threeExecs), execOf("g4", 1000)),
			// 203 of the new-group case are already on their way.
			devs: slices.Concat(inFlight(devices("a", "g1", 68, "default"), "g4"), devices("a2", "g1", 232, "default"),
				inFlight(devices("b", "g2", 68, "default"), "g4"), devices("b2", "g2", 232, "default"),
				inFlight(devices("c", "g3", 67, "default"), "g4"), devices("c2", "g3", 233, "default")),
			th: th,
		},
		{
			name:   "devices without an assignment record are never moved",
			groups: []registry.Group{group("g1", 1000, registry.GroupDraining), group("g2", 1000, registry.GroupActive)},
			execs:  threeExecs,
			devs:   norecord(devices("a", "g1", 7, "default")),
			th:     th,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := registry.NewSnapshot(1, tt.groups, tt.execs)
			p := rebalance.Make(rebalance.Input{
				Snapshot: snap, Policy: compile(t, tt.policy), Devices: tt.devs, Migrate: tt.migrate,
				Now: t0, MinInterval: 10 * time.Minute, Thresholds: tt.th,
			})
			got := want{policy: p.Policy, drain: p.Drain, balance: p.Balance, minimum: p.BalanceMinimum,
				waiting: p.Waiting, unmigrated: p.Unmigrated, noTarget: p.NoTarget}
			w := tt.want
			if got.policy != w.policy || got.drain != w.drain || got.balance != w.balance || got.minimum != w.minimum ||
				got.waiting != w.waiting || got.unmigrated != w.unmigrated || got.noTarget != w.noTarget {
				t.Errorf("plan counts = %+v, want %+v", got, w)
			}
			if n := p.Policy + p.Drain + p.Balance; len(p.Moves) != n {
				t.Errorf("%d moves, want %d (policy + drain + balance)", len(p.Moves), n)
			}
			if w.from != nil {
				if c := counts(p); fmt.Sprint(c) != fmt.Sprint(w.from) {
					t.Errorf("moves by source group = %v, want %v", c, w.from)
				}
			}
			seen := map[string]bool{}
			for _, m := range p.Moves {
				if seen[m.Device] {
					t.Errorf("device %s planned twice", m.Device)
				}
				seen[m.Device] = true
			}
		})
	}
}

func reversed(ds []rebalance.Device) []rebalance.Device {
	out := slices.Clone(ds)
	slices.Reverse(out)
	return out
}

func relabel(ds []rebalance.Device, label string) []rebalance.Device {
	for i := range ds {
		ds[i].Label = label
	}
	return ds
}

func moved(ds []rebalance.Device, at time.Time) []rebalance.Device {
	for i := range ds {
		ds[i].MovedAt = at
	}
	return ds
}

func inFlight(ds []rebalance.Device, to string) []rebalance.Device {
	for i := range ds {
		ds[i].InFlightTo = to
	}
	return ds
}

func norecord(ds []rebalance.Device) []rebalance.Device {
	for i := range ds {
		ds[i].HasRecord, ds[i].RecordLabel = false, ""
	}
	return ds
}

// TestMakeOrder checks that moves go by reason (policy, drain, balance) and,
// within a reason, in turns over the source groups.
func TestMakeOrder(t *testing.T) {
	groups := []registry.Group{
		group("d1", 1000, registry.GroupDraining, "std"), group("d2", 1000, registry.GroupDraining, "std"),
		group("g1", 1000, registry.GroupActive, "std"), group("g2", 1000, registry.GroupActive, "std"),
		group("s", 1000, registry.GroupActive, "sensors"),
	}
	var execs []registry.Executor
	for _, g := range groups {
		execs = append(execs, execOf(g.ID, 1000))
	}
	pol := compile(t, "default_label: std\nrules:\n  - {name: sensors, when: 'device.model == \"x\"', label: sensors}\n")
	devs := slices.Concat(
		devices("d1", "d1", 3, "std"), devices("d2", "d2", 3, "std"),
		devices("g1", "g1", 200, "std"), // g2 empty: balance
		relabel(devices("x", "g1", 2, "std"), "sensors"), relabel(devices("y", "g2", 2, "std"), "sensors"),
	)
	p := rebalance.Make(rebalance.Input{Snapshot: registry.NewSnapshot(1, groups, execs), Policy: pol, Devices: devs,
		Migrate: true, Now: t0, MinInterval: time.Minute, Thresholds: rebalance.Thresholds{Rel: 0.1, Abs: 5}})
	if p.Policy != 4 || p.Drain != 6 || p.Balance == 0 {
		t.Fatalf("plan: policy %d, drain %d, balance %d; want 4, 6 and some", p.Policy, p.Drain, p.Balance)
	}
	var reasons []rebalance.Reason
	var groupsOf []string
	for _, m := range p.Moves[:10] {
		reasons = append(reasons, m.Reason)
		groupsOf = append(groupsOf, m.Group)
	}
	wantReasons := []rebalance.Reason{1, 1, 1, 1, 2, 2, 2, 2, 2, 2}
	if !slices.Equal(reasons, wantReasons) {
		t.Errorf("reasons of the first 10 moves = %v, want %v", reasons, wantReasons)
	}
	wantGroups := []string{"g1", "g2", "g1", "g2", "d1", "d2", "d1", "d2", "d1", "d2"}
	if !slices.Equal(groupsOf, wantGroups) {
		t.Errorf("source groups of the first 10 moves = %v, want turns %v", groupsOf, wantGroups)
	}
	for _, m := range p.Moves[10:] {
		if m.Reason != rebalance.ReasonBalance || m.Group != "g1" {
			t.Errorf("move %+v after the mandatory ones, want balance off g1", m)
		}
	}
	// Every leader picks the same devices.
	again := rebalance.Make(rebalance.Input{Snapshot: registry.NewSnapshot(1, groups, execs), Policy: pol, Devices: reversed(devs),
		Migrate: true, Now: t0, MinInterval: time.Minute, Thresholds: rebalance.Thresholds{Rel: 0.1, Abs: 5}})
	var a, b []string
	for _, m := range p.Moves {
		if m.Reason == rebalance.ReasonBalance {
			a = append(a, m.Device)
		}
	}
	for _, m := range again.Moves {
		if m.Reason == rebalance.ReasonBalance {
			b = append(b, m.Device)
		}
	}
	if !slices.Equal(a, b) {
		t.Error("balance moves depend on the order devices are listed in")
	}
	if p.Room["g2"] <= 0 || p.Room["g1"] != 0 {
		t.Errorf("room g1 %.1f, g2 %.1f; want none on the over group and some on the empty one", p.Room["g1"], p.Room["g2"])
	}
}
