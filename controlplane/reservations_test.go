package controlplane

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// The reservations are what placement.Decide reads as Pending on Assign's
// path. These tests place bursts of devices with them, as Assign does.

var _ placement.Pending = (*reservations)(nil)

// eps absorbs float rounding in comparisons of utilizations.
const eps = 1e-9

// snap builds a snapshot from groups and executors.
func snap(groups []registry.Group, execs []registry.Executor) *registry.Snapshot {
	return registry.NewSnapshot(1, groups, execs)
}

func grp(id string, capacity int, st registry.GroupState) registry.Group {
	return registry.Group{ID: id, Capacity: capacity, State: st, Labels: []string{"default"}}
}

func exe(id, group string, capacity, conns int) registry.Executor {
	return registry.Executor{ID: id, GroupID: group, Address: id + ":1", Capacity: capacity, Connections: conns, Load: float64(conns)}
}

// dev builds a request for a device with no history.
func dev(id string) placement.Request {
	return placement.Request{Input: &policyv1.Input{
		Device:   &policyv1.DeviceInput{Id: id, Model: "m", Attributes: map[string]string{}},
		Tenant:   &policyv1.TenantInput{},
		Services: &policyv1.ServicesInput{},
		History:  &policyv1.HistoryInput{},
	}, Weight: 1}
}

// capacityScales are orders of magnitude: a capacity is drawn in
// scale/10..scale (1..scale for the smallest).
var capacityScales = []int{1000, 100, 10, 3}

// drawCapacity draws a capacity in 1..1000, of any order of magnitude.
func drawCapacity(t *rapid.T, name string) int {
	scale := rapid.SampledFrom(capacityScales).Draw(t, name+".scale")
	return rapid.IntRange(max(1, scale/10), scale).Draw(t, name)
}

// TestReservationsBalanceABurst assigns many devices with no heartbeat in
// between: the reservations alone must keep groups level.
func TestReservationsBalanceABurst(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	res := newReservations("cp-1", time.Second, 30*time.Second, clock)
	groups := []registry.Group{grp("a", 300, registry.GroupActive), grp("b", 100, registry.GroupActive)}
	execs := []registry.Executor{exe("a1", "a", 150, 0), exe("a2", "a", 150, 0), exe("b1", "b", 100, 0)}
	for i := range execs {
		execs[i].ObservedAt = now.Add(-time.Millisecond)
	}
	s := snap(groups, execs)
	pol := policy.Default()
	got := map[string]int{}
	for i := range 200 {
		var d placement.Decision
		var err error
		res.locked(func() {
			d, err = placement.Decide(s, pol, dev(fmt.Sprint("d", i)), res)
			if err == nil {
				res.addLocked(d.Endpoints[0].Executor.ID, 1)
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
	// These executors do not report reservations (Admitted is nil): once
	// the count observed after the grace includes them, they are no longer
	// pending; after the max age they are forgotten.
	a1 := func(observed time.Time) *registry.Executor {
		e := exe("a1", "a", 150, 0)
		e.ObservedAt = observed
		return &e
	}
	res.locked(func() {
		if p := res.Pending(a1(now.Add(2 * time.Second))); p != 0 {
			t.Errorf("pending after a later count = %v, want 0", p)
		}
		if p := res.Pending(a1(now)); p != float64(got["a1"]) {
			t.Errorf("pending against an older count = %v, want %d", p, got["a1"])
		}
	})
	now = now.Add(time.Minute)
	res.locked(func() {
		if p := res.Pending(a1(time.Time{})); p != 0 {
			t.Errorf("pending after max age = %v, want 0", p)
		}
	})
}

// TestDecidePropertyBurstWithReservations places devices one by one into
// empty groups with only the reservations to count them (no heartbeat in
// between), as Assign does: no group or executor goes above capacity,
// placement fails only once every group is full, and the counts stay level
// relative to capacity.
//
// Balance picks the group least utilized once the device is added, so for
// every pair of groups i, j: n_i/c_i <= (n_j+1)/c_j. Summing over j gives
// each group at least its capacity-proportional share q minus one device,
// and at most q + k·c_i/C (k groups, C their total capacity): a large group
// may be ahead of its share by more than one device. With capacities 3, 1,
// 1, 1, 1, 1, 1 the first two devices both go to the group of 3 (at 2/3
// rather than a group of 1 at 1/1): 2 devices for a share of 0.67.
func TestDecidePropertyBurstWithReservations(t *testing.T) {
	pol := policy.Default()
	rapid.Check(t, func(t *rapid.T) {
		now := time.Unix(1000, 0)
		res := newReservations("cp-1", time.Second, 30*time.Second, func() time.Time { return now })
		k := rapid.SampledFrom([]int{3, 2, 5, 8, 1, 4, 6, 7}).Draw(t, "groups")
		var groups []registry.Group
		var execs []registry.Executor
		capOf := map[string]int{}
		total := 0
		for i := range k {
			id := fmt.Sprintf("g%d", i)
			g := grp(id, drawCapacity(t, id+".capacity"), registry.GroupActive)
			groups = append(groups, g)
			execCap := 0
			for j := range rapid.SampledFrom([]int{1, 2, 3}).Draw(t, id+".executors") {
				eid := fmt.Sprintf("%s-e%d", id, j)
				e := exe(eid, id, drawCapacity(t, eid+".capacity"), 0)
				e.ObservedAt = now.Add(-time.Millisecond)
				execs = append(execs, e)
				execCap += e.Capacity
			}
			capOf[id] = min(g.Capacity, execCap)
			total += capOf[id]
		}
		s := snap(groups, execs)
		// Up to a little more than fits, bounded to keep the run short.
		pct := rapid.SampledFrom([]int{100, 50, 10, 90, 33, 75, 105}).Draw(t, "devicesPct")
		n := min(max(1, total*pct/100+rapid.IntRange(0, 3).Draw(t, "devicesExtra")), 2000)
		perGroup := map[string]int{}
		perExec := map[string]int{}
		placed := 0
		for i := range n {
			var d placement.Decision
			var err error
			res.locked(func() {
				d, err = placement.Decide(s, pol, dev(fmt.Sprint("d", i)), res)
				if err == nil {
					res.addLocked(d.Endpoints[0].Executor.ID, 1)
				}
			})
			if err != nil {
				if placed < total || !errors.Is(err, placement.ErrNoCapacity) {
					t.Fatalf("device %d: %v with %d of %d places taken (%v)", i, err, placed, total, perGroup)
				}
				continue
			}
			placed++
			perGroup[d.Group.ID]++
			perExec[d.Endpoints[0].Executor.ID]++
			// Level after every placement: no group is fuller than
			// another would be with one more device.
			gi := d.Group.ID
			ni, ci := perGroup[gi], capOf[gi]
			for _, gj := range groups {
				nj, cj := perGroup[gj.ID], capOf[gj.ID]
				if float64(ni)/float64(ci) > float64(nj+1)/float64(cj)+eps {
					t.Fatalf("device %d: %s now at %d/%d, yet %s at %d/%d was less utilized with it", i, gi, ni, ci, gj.ID, nj, cj)
				}
			}
		}
		for _, e := range execs {
			if perExec[e.ID] > e.Capacity {
				t.Fatalf("executor %s got %d devices, capacity %d", e.ID, perExec[e.ID], e.Capacity)
			}
		}
		for _, g := range groups {
			ni, ci := perGroup[g.ID], capOf[g.ID]
			if ni > ci {
				t.Fatalf("group %s got %d devices, capacity %d", g.ID, ni, ci)
			}
			share := float64(placed) * float64(ci) / float64(total)
			if float64(ni) < share-1-eps || float64(ni) > share+float64(k*ci)/float64(total)+eps {
				t.Fatalf("group %s got %d devices, share %.2f of %d (all %v, capacities %v)", g.ID, ni, share, placed, perGroup, capOf)
			}
		}
	})
}
