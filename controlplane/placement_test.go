package controlplane

import (
	"errors"
	"testing"
	"time"

	"github.com/berthproject/berth/registry"
)

// snap builds a snapshot from groups and executors.
func snap(groups []registry.Group, execs []registry.Executor) *registry.Snapshot {
	return registry.NewSnapshot(1, groups, execs)
}

func grp(id string, capacity int, st registry.GroupState) registry.Group {
	return registry.Group{ID: id, Capacity: capacity, State: st, Labels: []string{"default"}}
}

func exe(id, group string, capacity, conns int) registry.Executor {
	return registry.Executor{ID: id, GroupID: group, Address: id + ":1", Capacity: capacity, Connections: conns}
}

// fixedPending reports a fixed pending count per executor.
type fixedPending map[string]int

func (f fixedPending) Pending(id string, _ time.Time) int { return f[id] }

func TestPlace(t *testing.T) {
	tests := []struct {
		name      string
		groups    []registry.Group
		execs     []registry.Executor
		pending   fixedPending
		wantGroup string
		wantFirst string
		wantErr   error
	}{
		{
			name:      "lowest utilization wins",
			groups:    []registry.Group{grp("a", 100, registry.GroupActive), grp("b", 100, registry.GroupActive)},
			execs:     []registry.Executor{exe("a1", "a", 100, 50), exe("b1", "b", 100, 10)},
			wantGroup: "b", wantFirst: "b1",
		},
		{
			name:      "utilization is relative to capacity",
			groups:    []registry.Group{grp("big", 1000, registry.GroupActive), grp("small", 10, registry.GroupActive)},
			execs:     []registry.Executor{exe("big1", "big", 1000, 100), exe("small1", "small", 10, 2)},
			wantGroup: "big", wantFirst: "big1",
		},
		{
			name:      "pending devices count",
			groups:    []registry.Group{grp("a", 100, registry.GroupActive), grp("b", 100, registry.GroupActive)},
			execs:     []registry.Executor{exe("a1", "a", 100, 10), exe("b1", "b", 100, 20)},
			pending:   fixedPending{"a1": 20},
			wantGroup: "b", wantFirst: "b1",
		},
		{
			name:      "draining group skipped",
			groups:    []registry.Group{grp("a", 100, registry.GroupDraining), grp("b", 100, registry.GroupActive)},
			execs:     []registry.Executor{exe("a1", "a", 100, 0), exe("b1", "b", 100, 90)},
			wantGroup: "b", wantFirst: "b1",
		},
		{
			name:      "disabled group skipped",
			groups:    []registry.Group{grp("a", 100, registry.GroupDisabled), grp("b", 100, registry.GroupActive)},
			execs:     []registry.Executor{exe("a1", "a", 100, 0), exe("b1", "b", 100, 90)},
			wantGroup: "b", wantFirst: "b1",
		},
		{
			name:      "group without executors skipped",
			groups:    []registry.Group{grp("a", 100, registry.GroupActive), grp("b", 100, registry.GroupActive)},
			execs:     []registry.Executor{exe("b1", "b", 100, 90)},
			wantGroup: "b", wantFirst: "b1",
		},
		{
			name:   "draining executor is no endpoint",
			groups: []registry.Group{grp("a", 100, registry.GroupActive)},
			execs: []registry.Executor{
				{ID: "a1", GroupID: "a", Address: "x", Capacity: 50, Draining: true},
				exe("a2", "a", 50, 40),
			},
			wantGroup: "a", wantFirst: "a2",
		},
		{
			name:      "endpoints least utilized first",
			groups:    []registry.Group{grp("a", 100, registry.GroupActive)},
			execs:     []registry.Executor{exe("a1", "a", 50, 30), exe("a2", "a", 50, 10)},
			wantGroup: "a", wantFirst: "a2",
		},
		{
			name:      "pending spreads endpoints",
			groups:    []registry.Group{grp("a", 100, registry.GroupActive)},
			execs:     []registry.Executor{exe("a1", "a", 50, 10), exe("a2", "a", 50, 10)},
			pending:   fixedPending{"a1": 1},
			wantGroup: "a", wantFirst: "a2",
		},
		{
			name:    "all full",
			groups:  []registry.Group{grp("a", 10, registry.GroupActive)},
			execs:   []registry.Executor{exe("a1", "a", 10, 10)},
			wantErr: ErrNoCapacity,
		},
		{
			name:    "executor capacity bounds the group",
			groups:  []registry.Group{grp("a", 100, registry.GroupActive)},
			execs:   []registry.Executor{exe("a1", "a", 5, 5)},
			wantErr: ErrNoCapacity,
		},
		{
			name:    "nothing healthy",
			groups:  []registry.Group{grp("a", 10, registry.GroupDraining)},
			execs:   []registry.Executor{exe("a1", "a", 10, 0)},
			wantErr: ErrNoGroup,
		},
		{
			name:    "no groups",
			wantErr: ErrNoGroup,
		},
		{
			name:      "tie goes to more room then id",
			groups:    []registry.Group{grp("b", 100, registry.GroupActive), grp("a", 100, registry.GroupActive)},
			execs:     []registry.Executor{exe("a1", "a", 100, 0), exe("b1", "b", 100, 0)},
			wantGroup: "a", wantFirst: "a1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Pending
			if tt.pending != nil {
				p = tt.pending
			}
			d, err := Place(snap(tt.groups, tt.execs), p)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Place err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if d.Group.ID != tt.wantGroup {
				t.Errorf("group = %s, want %s (reason %q)", d.Group.ID, tt.wantGroup, d.Reason)
			}
			if got := d.Endpoints[0].Executor.ID; got != tt.wantFirst {
				t.Errorf("first endpoint = %s, want %s", got, tt.wantFirst)
			}
			if d.Reason == "" {
				t.Error("decision has no reason")
			}
		})
	}
}

// TestReservationsBalanceABurst assigns many devices with no heartbeat in
// between: the reservations alone must keep groups level.
func TestReservationsBalanceABurst(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	res := newReservations(time.Second, 30*time.Second, clock)
	groups := []registry.Group{grp("a", 300, registry.GroupActive), grp("b", 100, registry.GroupActive)}
	execs := []registry.Executor{exe("a1", "a", 150, 0), exe("a2", "a", 150, 0), exe("b1", "b", 100, 0)}
	for i := range execs {
		execs[i].ObservedAt = now.Add(-time.Millisecond)
	}
	s := snap(groups, execs)
	got := map[string]int{}
	for range 200 {
		var d Decision
		var err error
		res.locked(func() {
			d, err = Place(s, res)
			if err == nil {
				res.addLocked(d.Endpoints[0].Executor.ID)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		got[d.Endpoints[0].Executor.ID]++
	}
	want := map[string]int{"a1": 75, "a2": 75, "b1": 50}
	for id, n := range want {
		if d := got[id] - n; d < -1 || d > 1 {
			t.Errorf("executor %s got %d devices, want %d±1 (all: %v)", id, got[id], n, got)
		}
	}
	// Once the count observed after the grace includes them, they are no
	// longer pending; after the max age they are forgotten.
	res.locked(func() {
		if p := res.Pending("a1", now.Add(2*time.Second)); p != 0 {
			t.Errorf("pending after a later count = %d, want 0", p)
		}
		if p := res.Pending("a1", now); p != got["a1"] {
			t.Errorf("pending against an older count = %d, want %d", p, got["a1"])
		}
	})
	now = now.Add(time.Minute)
	res.locked(func() {
		if p := res.Pending("a1", time.Time{}); p != 0 {
			t.Errorf("pending after max age = %d, want 0", p)
		}
	})
}
