package placement

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"pgregory.net/rapid"

	"github.com/berthproject/berth/fleet"
	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/policy"
)

// The properties below check Decide against a model written from the
// documented rules, not from the code: a group can take a device when it is
// active, has a live executor that is not draining (with a capacity), the
// device fits in its effective capacity (its own, bounded by the sum of its
// usable executors'), and its least utilized usable executor has room.

// eps absorbs float rounding in comparisons of utilizations.
const eps = 1e-9

// world is a random registry state with pending devices.
type world struct {
	groups  []fleet.Group
	execs   []fleet.Executor
	pending fixedPending
}

func (w world) snapshot() *fleet.Snapshot { return snap(w.groups, w.execs) }

// groupModel is what the model says of one group for a device of weight 1.
type groupModel struct {
	group fleet.Group
	// usable are its executors that are not draining and have a capacity.
	usable []fleet.Executor
	// used counts its devices on usable executors plus pending ones.
	used float64
	// capacity is the effective capacity.
	capacity int
	// open: active with a usable executor (it may still be full).
	open bool
	// fits: open and the device fits (a candidate).
	fits bool
}

func (m groupModel) utilAfter() float64 { return (m.used + 1) / float64(m.capacity) }

func (w world) model(g fleet.Group) groupModel {
	m := groupModel{group: g}
	execCap := 0
	minUtil := math.Inf(1)
	for _, e := range w.execs {
		if e.GroupID != g.ID || e.Draining || e.Capacity <= 0 {
			continue
		}
		m.usable = append(m.usable, e)
		p := w.pending[e.ID]
		m.used += float64(e.Connections) + p
		execCap += e.Capacity
		minUtil = min(minUtil, (float64(e.Connections)+p)/float64(e.Capacity))
	}
	m.open = g.State == fleet.GroupActive && len(m.usable) > 0
	if !m.open {
		return m
	}
	m.used += w.pending["group:"+g.ID]
	m.capacity = min(g.Capacity, execCap)
	m.fits = m.used+1 <= float64(m.capacity) && minUtil < 1
	return m
}

// candidates returns the model of every group that can take the device.
func (w world) candidates() []groupModel {
	var out []groupModel
	for _, g := range w.groups {
		if m := w.model(g); m.fits {
			out = append(out, m)
		}
	}
	return out
}

// fair is the candidates' mean utilization once the device is placed.
func fair(cands []groupModel) float64 {
	var used, capacity float64
	for _, c := range cands {
		used += c.used
		capacity += float64(c.capacity)
	}
	return (used + 1) / capacity
}

func modelOf(cands []groupModel, id string) (groupModel, bool) {
	for _, c := range cands {
		if c.group.ID == id {
			return c, true
		}
	}
	return groupModel{}, false
}

// The draws below pick from lists rather than ranges where it matters:
// rapid leans towards small values (capacity 1, no connections, the first
// element), which would leave most worlds without a usable group, or with a
// single empty one, where sticky and affinity have nothing to choose.

// groupStates are mostly active.
var groupStates = []fleet.GroupState{fleet.GroupActive, fleet.GroupActive, fleet.GroupActive, fleet.GroupActive, fleet.GroupActive, fleet.GroupActive, fleet.GroupDraining, fleet.GroupDisabled, "bogus"}

// capacityScales are orders of magnitude: a capacity is drawn in
// scale/10..scale (1..scale for the smallest).
var capacityScales = []int{1000, 100, 10, 3}

// loadLevels are executor utilizations in percent.
var loadLevels = []int{50, 20, 80, 0, 95, 40, 60, 99, 100, 5, 102}

// pendingLevels are devices pending on a group or an executor.
var pendingLevels = []int{0, 0, 0, 1, 3}

// drawCapacity draws a capacity in 1..1000, of any order of magnitude.
func drawCapacity(t *rapid.T, name string) int {
	scale := rapid.SampledFrom(capacityScales).Draw(t, name+".scale")
	return rapid.IntRange(max(1, scale/10), scale).Draw(t, name)
}

// drawWorld draws 1-8 groups labelled default with capacities 1-1000,
// random states, 0-3 executors each (some draining, some without capacity)
// sized around the group's capacity and at any utilization, and random
// pending devices.
func drawWorld(t *rapid.T) world {
	w := world{pending: fixedPending{}}
	n := rapid.SampledFrom([]int{3, 2, 5, 8, 1, 4, 6, 7}).Draw(t, "groups")
	for i := range n {
		id := fmt.Sprintf("g%d", i)
		g := grp(id, drawCapacity(t, id+".capacity"), rapid.SampledFrom(groupStates).Draw(t, id+".state"))
		w.groups = append(w.groups, g)
		if p := rapid.SampledFrom(pendingLevels).Draw(t, id+".pending"); p > 0 {
			w.pending["group:"+id] = float64(p)
		}
		k := rapid.SampledFrom([]int{1, 2, 3, 1, 2, 3, 0}).Draw(t, id+".executors")
		for j := range k {
			eid := fmt.Sprintf("%s-e%d", id, j)
			// Executors share the group's capacity, with some slack
			// either way; a few report none.
			pct := rapid.SampledFrom([]int{100, 150, 50, 25, 100, 150, 0}).Draw(t, eid+".capacityPct")
			capacity := 0
			if pct > 0 {
				capacity = max(1, g.Capacity*pct/100/k)
			}
			load := rapid.SampledFrom(loadLevels).Draw(t, eid+".load")
			conns := max(0, capacity*load/100+rapid.IntRange(-2, 2).Draw(t, eid+".jitter"))
			e := exe(eid, id, capacity, conns)
			e.Draining = rapid.SampledFrom([]bool{false, false, false, false, false, false, false, true}).Draw(t, eid+".draining")
			w.execs = append(w.execs, e)
			if p := rapid.SampledFrom(pendingLevels).Draw(t, eid+".pending"); p > 0 {
				w.pending[eid] = float64(p)
			}
		}
	}
	return w
}

// drawRequest draws a device of one of a few tenants, and a last group that
// may or may not exist.
func drawRequest(t *rapid.T, w world, name string) Request {
	tenant := rapid.SampledFrom(tenants).Draw(t, name+".tenant")
	last := rapid.SampledFrom([]string{"", "nowhere"}).Draw(t, name+".last")
	if len(w.groups) > 0 && rapid.Bool().Draw(t, name+".lastIsAGroup") {
		last = rapid.SampledFrom(w.groups).Draw(t, name+".lastGroup").ID
	}
	return dev(name, "m", tenant, nil, last)
}

// checkDecision checks what holds for every decision whatever the policy:
// an error only when no group can take the device (the right one of the
// two), else a group that can, with its usable executors least utilized
// first.
func checkDecision(t *rapid.T, w world, d Decision, err error) {
	t.Helper()
	cands := w.candidates()
	if err != nil {
		if len(cands) > 0 {
			t.Fatalf("Decide err = %v, but %s can take the device", err, cands[0].group.ID)
		}
		anyOpen := false
		for _, g := range w.groups {
			anyOpen = anyOpen || w.model(g).open
		}
		want := ErrNoGroup
		if anyOpen {
			want = ErrNoCapacity
		}
		if !errors.Is(err, want) {
			t.Fatalf("Decide err = %v, want %v", err, want)
		}
		return
	}
	m := w.model(d.Group)
	switch {
	case d.Group.State != fleet.GroupActive:
		t.Fatalf("picked %s in state %q (%s)", d.Group.ID, d.Group.State, d.Reason)
	case len(m.usable) == 0:
		t.Fatalf("picked %s without a usable executor (%s)", d.Group.ID, d.Reason)
	case m.used+1 > float64(m.capacity):
		t.Fatalf("picked %s holding %v of %d: would go above capacity (%s)", d.Group.ID, m.used, m.capacity, d.Reason)
	case !m.fits:
		t.Fatalf("picked %s whose executors are full (%s)", d.Group.ID, d.Reason)
	}
	if len(d.Endpoints) != len(m.usable) {
		t.Fatalf("%d endpoints, want the %d usable executors of %s", len(d.Endpoints), len(m.usable), d.Group.ID)
	}
	for i, ep := range d.Endpoints {
		e := ep.Executor
		if e.GroupID != d.Group.ID || e.Draining || e.Capacity <= 0 {
			t.Fatalf("endpoint %s (group %s, draining %v, capacity %d) is not a usable executor of %s", e.ID, e.GroupID, e.Draining, e.Capacity, d.Group.ID)
		}
		if ep.Pending != w.pending[e.ID] {
			t.Fatalf("endpoint %s pending %v, want %v", e.ID, ep.Pending, w.pending[e.ID])
		}
		if i > 0 && ep.Utilization() < d.Endpoints[i-1].Utilization() {
			t.Fatalf("endpoints not least utilized first: %s at %v after %s at %v", e.ID, ep.Utilization(), d.Endpoints[i-1].Executor.ID, d.Endpoints[i-1].Utilization())
		}
	}
	if d.Endpoints[0].Utilization() >= 1 {
		t.Fatalf("first endpoint %s is full", d.Endpoints[0].Executor.ID)
	}
}

// TestDecidePropertyDefaultPolicy: with the default policy Decide picks a
// group that can take the device, and the least utilized one once it is
// placed.
func TestDecidePropertyDefaultPolicy(t *testing.T) {
	pol := policy.Default()
	rapid.Check(t, func(t *rapid.T) {
		w := drawWorld(t)
		d, err := Decide(w.snapshot(), pol, drawRequest(t, w, "d"), w.pending)
		checkDecision(t, w, d, err)
		if err != nil {
			return
		}
		if d.Method != "balance" {
			t.Fatalf("method %s with the default policy", d.Method)
		}
		got, _ := modelOf(w.candidates(), d.Group.ID)
		for _, c := range w.candidates() {
			if c.utilAfter() < got.utilAfter()-eps {
				t.Fatalf("picked %s at %v once placed, but %s would be at %v", d.Group.ID, got.utilAfter(), c.group.ID, c.utilAfter())
			}
		}
	})
}

// compilePolicy compiles p, failing the check if it does not compile.
func compilePolicy(t *rapid.T, p *policyv1.Policy) *policy.Compiled {
	t.Helper()
	c, err := policy.Compile(p)
	if err != nil {
		t.Fatalf("Compile(%v) = %v", p, err)
	}
	return c
}

// drawLoadFactor draws an affinity load factor, 0 meaning the default.
func drawLoadFactor(t *rapid.T) float64 {
	return rapid.SampledFrom([]float64{0, 0.01, 0.1, 0.25, 0.5, 1, 2}).Draw(t, "loadFactor")
}

// tenants are the affinity keys devices draw from ("" is no key).
var tenants = []string{"", "acme", "globex", "initech", "umbrella", "hooli", "stark"}

// TestDecidePropertySticky: sticky keeps a device on its last group only
// while that group, with the device, is within fair*(1+margin) — fair being
// the candidates' mean utilization with the device — and always does then,
// before affinity is even considered. Each world is tried with every group
// as the last one, and with none or an unknown one. Every decision obeys
// checkDecision.
func TestDecidePropertySticky(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := drawWorld(t)
		p := &policyv1.Policy{DefaultLabel: "default", Sticky: &policyv1.Sticky{
			Enabled: true,
			Margin:  rapid.SampledFrom([]float64{0, 0.05, 0.1, 0.5, 1, 3}).Draw(t, "margin"),
		}}
		if rapid.Bool().Draw(t, "affinity") {
			p.Affinity = &policyv1.Affinity{Key: "tenant.id", LoadFactor: drawLoadFactor(t)}
		}
		pol := compilePolicy(t, p)
		s := w.snapshot()
		cands := w.candidates()
		f := fair(cands)
		_, margin := pol.Sticky()
		bound := f * (1 + margin)
		lasts := []string{"", "nowhere"}
		for _, g := range w.groups {
			lasts = append(lasts, g.ID)
		}
		for _, last := range lasts {
			req := dev("d", "m", rapid.SampledFrom(tenants).Draw(t, "tenant"), nil, last)
			d, err := Decide(s, pol, req, w.pending)
			checkDecision(t, w, d, err)
			if err != nil {
				continue
			}
			lastM, lastIsCand := modelOf(cands, last)
			if d.Method == "sticky" {
				if d.Group.ID != last {
					t.Fatalf("sticky picked %s, last group %q", d.Group.ID, last)
				}
				if lastM.utilAfter() > bound*(1+eps) {
					t.Fatalf("sticky kept %s at %v once placed, above fair %v * (1 + %v) = %v (%s)", last, lastM.utilAfter(), f, margin, bound, d.Reason)
				}
			}
			if lastIsCand && lastM.utilAfter() <= bound*(1-eps) && d.Method != "sticky" {
				t.Fatalf("method %s, but the last group %s is at %v once placed, within %v (%s)", d.Method, last, lastM.utilAfter(), bound, d.Reason)
			}
		}
	})
}

// TestDecidePropertyAffinity: with affinity on the tenant id, affinity
// picks only a group that, with the device, is within (1+load_factor) times
// the fair share; it falls back to balance only when no candidate is; and a
// device's group depends only on its key and the registry state: another
// device of the same tenant (another model, attributes and history), decided
// by another replica (the same state from lists in another order, the policy
// compiled again), lands in the same group. Each world is tried with every
// tenant. Every decision obeys checkDecision.
func TestDecidePropertyAffinity(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := drawWorld(t)
		src := &policyv1.Policy{DefaultLabel: "default", Affinity: &policyv1.Affinity{Key: "tenant.id", LoadFactor: drawLoadFactor(t)}}
		pol := compilePolicy(t, src)
		s := w.snapshot()
		// Another replica: the same state listed in another order, the
		// same document compiled on its own.
		s2 := snap(rapid.Permutation(w.groups).Draw(t, "groupOrder"), rapid.Permutation(w.execs).Draw(t, "execOrder"))
		pol2 := compilePolicy(t, src)
		cands := w.candidates()
		bound := fair(cands) * (1 + pol.LoadFactor())
		for _, key := range tenants {
			d, err := Decide(s, pol, dev("d", "m", key, nil, ""), w.pending)
			checkDecision(t, w, d, err)
			if err != nil {
				continue
			}
			if d.AffinityKey != key {
				t.Fatalf("affinity key %q, want the tenant %q", d.AffinityKey, key)
			}
			picked, _ := modelOf(cands, d.Group.ID)
			switch {
			case key == "" && d.Method != "balance":
				t.Fatalf("method %s without an affinity key", d.Method)
			case d.Method == "affinity" && picked.used+1 > AffinityCeiling(bound, picked.capacity)+eps:
				t.Fatalf("affinity %q picked %s holding %v of %d, above the ceiling %v of bound %v (%s)", key, d.Group.ID, picked.used, picked.capacity, AffinityCeiling(bound, picked.capacity), bound, d.Reason)
			case d.Method == "balance" && key != "":
				for _, c := range cands {
					if c.used+1 <= AffinityCeiling(bound, c.capacity)-eps {
						t.Fatalf("affinity %q fell back to balance, but %s holds %v of %d, within the ceiling %v", key, c.group.ID, c.used, c.capacity, AffinityCeiling(bound, c.capacity))
					}
				}
			case d.Method != "affinity" && d.Method != "balance":
				t.Fatalf("method %s without sticky", d.Method)
			}

			other := dev("other", "other-model", key, map[string]string{"tier": "x"}, "elsewhere")
			other.Input.History.MessagesPerDay = 5000
			d2, err := Decide(s2, pol2, other, w.pending)
			if err != nil {
				t.Fatalf("second device of tenant %q: %v", key, err)
			}
			if d2.Group.ID != d.Group.ID || d2.Method != d.Method {
				t.Fatalf("tenant %q: %s by %s, then %s by %s", key, d.Group.ID, d.Method, d2.Group.ID, d2.Method)
			}
		}
	})
}
