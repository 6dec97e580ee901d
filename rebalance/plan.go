package rebalance

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// Reason says why a device moves. Moves are made in the order of the
// reasons.
type Reason int

// Reasons, in the order moves are made.
const (
	// ReasonPolicy: the device's group is no longer a candidate for it
	// under the policy in force (its label changed under a policy applied
	// with migrate, or its group's labels changed).
	ReasonPolicy Reason = iota + 1
	// ReasonDrain: the device is on a draining or disabled group (or one
	// that was deleted), or on an executor an operator drained.
	ReasonDrain
	// ReasonBalance: the device's group is above its fair share by more
	// than the thresholds, or another group of its pool below it.
	ReasonBalance
)

// String names the reason as status shows it.
func (r Reason) String() string {
	switch r {
	case ReasonPolicy:
		return "policy"
	case ReasonDrain:
		return "drain"
	case ReasonBalance:
		return "balance"
	}
	return "unknown"
}

// Thresholds bound how far a group may be from its fair share of its pool:
// it is over when it holds more than fair + max(Abs, Rel x fair), under
// when it holds less than fair - max(Abs, Rel x fair), as EMQX's rebalance
// does with its relative and absolute connection thresholds.
type Thresholds struct {
	// Rel is relative to the fair share (0.1: 10%).
	Rel float64
	// Abs is in devices (or load units when the policy balances by load).
	Abs float64
}

// of returns the allowed distance from fair.
func (t Thresholds) of(fair float64) float64 { return max(t.Abs, t.Rel*fair) }

// Device is one connected device as the planner sees it.
type Device struct {
	// ID is the device's id.
	ID string
	// Executor and Group hold its stream (from its presence).
	Executor, Group string
	// HasRecord tells whether it has an assignment record; a device
	// without one is counted but never moved (its inputs are unknown).
	HasRecord bool
	// Label is the label the policy in force gives it now, RecordLabel the
	// one its assignment record holds.
	Label, RecordLabel string
	// Weight is its load weight (used when the policy balances by load).
	Weight float64
	// MovedAt is when the rebalancer last moved it (zero: never).
	MovedAt time.Time
	// InFlightTo, when set, is the group a move under way takes it to: it
	// counts there and is not planned again.
	InFlightTo string
}

// Input is what a plan is made of.
type Input struct {
	// Snapshot is the registry (groups, executors with drain marks).
	Snapshot *registry.Snapshot
	// Policy is the policy in force.
	Policy *policy.Compiled
	// Devices are the connected devices.
	Devices []Device
	// Migrate lets label changes of the policy in force move devices.
	Migrate bool
	// Now is the planning time.
	Now time.Time
	// MinInterval is how long a moved device is left alone.
	MinInterval time.Duration
	// Thresholds bound the balance.
	Thresholds Thresholds
}

// Move is one device to move.
type Move struct {
	// Device, Executor and Group say which device and where it is.
	Device, Executor, Group string
	// Reason is why.
	Reason Reason
	// Weight is its load weight.
	Weight float64
}

// Plan is what the rebalancer would do now.
type Plan struct {
	// Moves are the devices to move, in order: by reason, and within a
	// reason in turns over their groups, so that no group takes every move
	// at once.
	Moves []Move
	// Policy, Drain and Balance count Moves by reason.
	Policy, Drain, Balance int
	// BalanceMinimum is the fewest moves that bring every group of every
	// pool within the thresholds.
	BalanceMinimum int
	// Waiting counts devices that should move but were moved less than
	// MinInterval ago.
	Waiting int
	// Unmigrated counts devices whose label changed under a policy applied
	// without migrate.
	Unmigrated int
	// NoTarget counts devices that must leave but have no usable group.
	NoTarget int
	// Groups describe every group of the snapshot, by id.
	Groups []registry.GroupBalance
	// Room is, per group of a pool, how much balance moves may bring to it
	// before it would be over its fair share.
	Room map[string]float64
}

// Mandatory counts the moves that are not for balance.
func (p Plan) Mandatory() int { return p.Policy + p.Drain }

// balanceCand is a device that may move for balance.
type balanceCand struct {
	dev Device
	w   float64
}

// Make computes a plan. It is a pure function of its input.
func Make(in Input) Plan {
	snap, pol := in.Snapshot, in.Policy
	byLoad := pol.BalanceByLoad()
	weight := func(d Device) float64 {
		if byLoad && d.Weight > 0 {
			return d.Weight
		}
		return 1
	}
	pools := map[string]*placement.Pool{}
	poolOf := func(label string) *placement.Pool {
		p, seen := pools[label]
		if !seen {
			if pp, ok := placement.PoolFor(snap, pol, label); ok {
				p = &pp
			}
			pools[label] = p
		}
		return p
	}
	recent := func(d Device) bool {
		return !d.MovedAt.IsZero() && in.Now.Sub(d.MovedAt) < in.MinInterval
	}

	var plan Plan
	used := map[string]float64{}
	connected := map[string]int{}
	var mandatory []Move
	// cands[pool label][group] are the devices that may move for balance.
	cands := map[string]map[string][]balanceCand{}
	for _, d := range in.Devices {
		w := weight(d)
		connected[d.Group]++
		if d.InFlightTo != "" {
			used[d.InFlightTo] += w
			continue
		}
		g, gok := snap.Groups[d.Group]
		e, eok := snap.Executors[d.Executor]
		if !d.HasRecord || (eok && e.Draining && !e.DrainMarked) {
			// Unknown inputs, or an executor redirecting its devices by
			// itself (it is stopping): not the rebalancer's to move.
			used[d.Group] += w
			continue
		}
		pool := poolOf(d.Label)
		candidate := pool != nil && pool.Has(d.Group)
		labelChanged := d.RecordLabel != d.Label
		drain := !gok || g.State != registry.GroupActive || (eok && e.DrainMarked)
		var reason Reason
		switch {
		case !candidate && labelChanged && in.Migrate:
			reason = ReasonPolicy
		case drain:
			reason = ReasonDrain
		case !candidate && labelChanged:
			plan.Unmigrated++
		case !candidate:
			reason = ReasonPolicy
		}
		switch {
		case reason == 0:
			used[d.Group] += w
			if candidate && !recent(d) {
				bc := cands[pool.Label]
				if bc == nil {
					bc = map[string][]balanceCand{}
					cands[pool.Label] = bc
				}
				bc[d.Group] = append(bc[d.Group], balanceCand{dev: d, w: w})
			}
		case pool == nil:
			plan.NoTarget++
			used[d.Group] += w
		case recent(d):
			plan.Waiting++
			used[d.Group] += w
		default:
			// It is leaving: it counts where it lands, next time.
			mandatory = append(mandatory, Move{Device: d.ID, Executor: d.Executor, Group: d.Group, Reason: reason, Weight: d.Weight})
		}
	}
	for _, r := range []Reason{ReasonPolicy, ReasonDrain} {
		var these []Move
		for _, m := range mandatory {
			if m.Reason == r {
				these = append(these, m)
			}
		}
		plan.Moves = append(plan.Moves, interleave(these)...)
		switch r {
		case ReasonPolicy:
			plan.Policy = len(these)
		case ReasonDrain:
			plan.Drain = len(these)
		}
	}

	fair := map[string]float64{}
	capOf := map[string]int{}
	plan.Room = map[string]float64{}
	var balance []Move
	labels := make([]string, 0, len(pools))
	for l, p := range pools {
		if p != nil {
			labels = append(labels, l)
		}
	}
	slices.Sort(labels)
	done := map[string]bool{}
	for _, l := range labels {
		p := pools[l]
		if done[p.Label] {
			continue
		}
		done[p.Label] = true
		moves, minimum := balancePool(*p, used, cands[p.Label], in.Thresholds, fair, capOf, plan.Room)
		plan.BalanceMinimum += minimum
		balance = append(balance, moves...)
	}
	plan.Balance = len(balance)
	plan.Moves = append(plan.Moves, interleave(balance)...)

	for _, g := range snap.SortedGroups() {
		c, ok := capOf[g.ID]
		if !ok {
			c = g.Capacity
		}
		plan.Groups = append(plan.Groups, registry.GroupBalance{ID: g.ID, State: g.State, Connected: connected[g.ID], Fair: fair[g.ID], Capacity: c})
	}
	return plan
}

// balancePool plans the balance moves of one pool: from the group furthest
// above its fair share to the one furthest below, one device at a time,
// while a group is beyond the thresholds. It fills fair, capacity and room
// for the pool's groups and returns the moves and the fewest moves that
// would do.
func balancePool(p placement.Pool, used map[string]float64, cands map[string][]balanceCand, th Thresholds,
	fair map[string]float64, capOf map[string]int, room map[string]float64,
) ([]Move, int) {
	var total, capTotal float64
	for _, g := range p.Groups {
		total += used[g.ID]
		capTotal += float64(g.Capacity)
	}
	if capTotal <= 0 {
		return nil, 0
	}
	n := len(p.Groups)
	excess := make([]float64, n) // used - fair, as moves are planned
	thr := make([]float64, n)
	var over, under float64
	for i, g := range p.Groups {
		f := total * float64(g.Capacity) / capTotal
		if _, seen := fair[g.ID]; !seen {
			fair[g.ID], capOf[g.ID] = f, g.Capacity
		}
		excess[i], thr[i] = used[g.ID]-f, th.of(f)
		over += max(0, excess[i]-thr[i])
		under += max(0, -excess[i]-thr[i])
		r := max(0, thr[i]-excess[i])
		if old, seen := room[g.ID]; !seen || r < old {
			room[g.ID] = r
		}
	}
	minimum := int(math.Ceil(max(over, under) - 1e-9))

	// Candidates of each group in a stable order, the same for every
	// leader: by a hash of the device id.
	order := make([][]balanceCand, n)
	for i, g := range p.Groups {
		cs := slices.Clone(cands[g.ID])
		slices.SortFunc(cs, func(a, b balanceCand) int {
			return cmp.Or(cmp.Compare(placement.Hash(a.dev.ID), placement.Hash(b.dev.ID)), cmp.Compare(a.dev.ID, b.dev.ID))
		})
		order[i] = cs
	}
	taken := make([]int, n)
	var moves []Move
	for {
		beyond := false
		for i := range n {
			if excess[i] > thr[i] || excess[i] < -thr[i] {
				beyond = true
				break
			}
		}
		if !beyond {
			break
		}
		src, dst := -1, -1
		for i := range n {
			if taken[i] < len(order[i]) && (src < 0 || excess[i] > excess[src]) {
				src = i
			}
			if dst < 0 || excess[i] < excess[dst] {
				dst = i
			}
		}
		if src < 0 || src == dst {
			break
		}
		c := order[src][taken[src]]
		if excess[src]-excess[dst] <= c.w {
			// Moving it would not narrow the spread.
			break
		}
		taken[src]++
		excess[src] -= c.w
		excess[dst] += c.w
		moves = append(moves, Move{Device: c.dev.ID, Executor: c.dev.Executor, Group: c.dev.Group, Reason: ReasonBalance, Weight: c.dev.Weight})
	}
	return moves, minimum
}

// interleave orders moves in turns over their source groups (by id),
// keeping each group's order.
func interleave(moves []Move) []Move {
	if len(moves) == 0 {
		return nil
	}
	by := map[string][]Move{}
	var groups []string
	for _, m := range moves {
		if _, ok := by[m.Group]; !ok {
			groups = append(groups, m.Group)
		}
		by[m.Group] = append(by[m.Group], m)
	}
	slices.Sort(groups)
	out := make([]Move, 0, len(moves))
	for i := 0; len(out) < len(moves); i++ {
		for _, g := range groups {
			if i < len(by[g]) {
				out = append(out, by[g][i])
			}
		}
	}
	return out
}
