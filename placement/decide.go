package placement

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berthproject/berth/fleet"
	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/policy"
)

// Errors of the placement. The RPC edge turns them into statuses.
var (
	// ErrNoGroup means no group carrying the device's label (or one of its
	// fallbacks) is usable.
	ErrNoGroup = errors.New("placement: no usable group")
	// ErrNoCapacity means usable groups exist but all are full.
	ErrNoCapacity = errors.New("placement: every usable group is full")
)

// Pending tells how much was sent somewhere but may not yet be in the
// counts executors reported: devices sent to an executor, and devices other
// replicas sent to a group without saying to which executor. The
// control plane's reservations implement it; Decide only reads it.
type Pending interface {
	// Pending is the weight sent to executor e and not yet in its record's
	// count (e.Connections, as e.Admitted tells, or observed at
	// e.ObservedAt).
	Pending(e *fleet.Executor) float64
	// GroupPending is the weight other replicas sent to the group and not
	// yet in a count observed at countedAt.
	GroupPending(groupID string, countedAt time.Time) float64
}

// NoPending is a Pending with nothing reserved: what Decide uses when given
// nil.
type NoPending struct{}

// Pending implements Pending: nothing.
func (NoPending) Pending(*fleet.Executor) float64 { return 0 }

// GroupPending implements Pending: nothing.
func (NoPending) GroupPending(string, time.Time) float64 { return 0 }

// Request is what the placement knows about one device.
type Request struct {
	// Input is what policy expressions see.
	Input *policyv1.Input
	// Weight is the device's load weight (1 for an average device).
	Weight float64
	// Match, when set, is the outcome of the policy's label rules for
	// Input, computed beforehand (outside any lock); Decide uses it instead
	// of evaluating the rules again.
	Match *policy.Match
	// MatchErr goes with Match: rules that failed to evaluate.
	MatchErr error
}

// Candidate is a group the placement considered, with what it saw.
type Candidate struct {
	// Group is the group, in the snapshot (do not modify).
	Group *fleet.Group
	// Label is the label under which it was considered.
	Label string
	// Used is what the group holds: live connections, or load in load
	// mode, plus pending devices.
	Used float64
	// Pending is the part of Used not yet in executor counts.
	Pending float64
	// Capacity is the effective capacity: the group's own, bounded by the
	// sum of its usable executors' capacities.
	Capacity int
	// Endpoints are its usable executors, least utilized first.
	Endpoints []Endpoint
	// Dropped says why the group is not a candidate ("" if it is).
	Dropped string
}

// Utilization is Used / Capacity.
func (c Candidate) Utilization() float64 {
	if c.Capacity <= 0 {
		return math.Inf(1)
	}
	return c.Used / float64(c.Capacity)
}

// Endpoint is a usable executor with its utilization.
type Endpoint struct {
	// Executor is the executor's record, in the snapshot (do not modify).
	Executor *fleet.Executor
	// Pending is what was sent to it but not yet counted.
	Pending float64
}

// Utilization is (connections + pending) / capacity of the executor.
func (e Endpoint) Utilization() float64 {
	return (float64(e.Executor.Connections) + e.Pending) / float64(e.Executor.Capacity)
}

// Decision is the outcome of a placement, with everything needed to explain
// it.
type Decision struct {
	// Group is the chosen group.
	Group fleet.Group
	// Label is the device's assigned label; FromLabel the label it was
	// placed under (differs when a fallback was used).
	Label, FromLabel string
	// Rule names the rule that matched ("" for the default label).
	Rule string
	// Method says how the group was picked: "sticky", "affinity" or
	// "balance".
	Method string
	// Endpoints of the chosen group, least utilized first.
	Endpoints []Endpoint
	// Reason says in a line why.
	Reason string
	// AffinityKey is the device's affinity key, if any.
	AffinityKey string
	// Candidates are every group considered, kept or dropped, by label in
	// the order tried, then by id.
	Candidates []Candidate
	// PolicyVersion is the version of the policy that decided.
	PolicyVersion int64
	// RuleErrors are evaluation errors of rules that were skipped.
	RuleErrors error
}

// Reasons a group is dropped: the values of Candidate.Dropped.
const (
	// DroppedDraining: the group is draining.
	DroppedDraining = "group draining"
	// DroppedDisabled: the group is disabled.
	DroppedDisabled = "group disabled"
	// DroppedState: the group's state is unknown.
	DroppedState = "unknown group state"
	// DroppedNoExec: no executor of the group is registered.
	DroppedNoExec = "no live executor"
	// DroppedAllDrain: every executor of the group is draining (or has no
	// capacity).
	DroppedAllDrain = "every executor draining"
	// DroppedFull: the device would take the group above the policy's
	// maximum utilization, or its least utilized executor is full.
	DroppedFull = "full"
)

// Decide places one device: the policy's first matching rule gives its
// label (else the default); groups that carry the label, or else each
// fallback label in order, and pass the filter are the candidates; then
// sticky, affinity and balance pick among them, in that order. It is a pure
// function of its inputs.
func Decide(snap *fleet.Snapshot, pol *policy.Compiled, req Request, pending Pending) (Decision, error) {
	if pending == nil {
		pending = NoPending{}
	}
	if req.Weight <= 0 {
		req.Weight = 1
	}
	w := 1.0
	if pol.BalanceByLoad() {
		w = req.Weight
	}
	var m policy.Match
	var ruleErrs error
	if req.Match != nil {
		m, ruleErrs = *req.Match, req.MatchErr
	} else {
		m, ruleErrs = pol.Label(req.Input)
	}
	d := Decision{Label: m.Label, Rule: m.Rule, PolicyVersion: pol.Version(), RuleErrors: ruleErrs}

	groups := snap.SortedGroups()
	d.Candidates = make([]Candidate, 0, len(groups))
	// cands are the kept groups of the label placed under: a view of
	// d.Candidates when that label's groups were all kept (the usual
	// case, no copy), else a copy of the kept ones.
	var cands []Candidate
	full := 0
	for _, label := range pol.Chain(m.Label) {
		// One array holds the endpoints of every group of the label:
		// each candidate's are a capped window of it. The groups'
		// executors are looked up once, into a buffer on the stack for
		// up to 16 groups.
		var lists [16][]fleet.Executor
		execs, n := lists[:0], 0
		for i := range groups {
			if groups[i].HasLabel(label) {
				e := snap.GroupExecutors(groups[i].ID)
				execs, n = append(execs, e), n+len(e)
			}
		}
		eps := make([]Endpoint, 0, n)
		start, kept := len(d.Candidates), 0
		for i := range groups {
			g := &groups[i]
			if !g.HasLabel(label) {
				continue
			}
			var c Candidate
			c, eps = evaluate(g, execs[0], pending, pol, w, eps)
			execs = execs[1:]
			c.Label = label
			d.Candidates = append(d.Candidates, c)
			switch c.Dropped {
			case "":
				kept++
			case DroppedFull:
				full++
			}
		}
		if kept == 0 {
			continue
		}
		d.FromLabel = label
		if these := d.Candidates[start:]; kept == len(these) {
			cands = these
		} else {
			cands = make([]Candidate, 0, kept)
			for _, c := range these {
				if c.Dropped == "" {
					cands = append(cands, c)
				}
			}
		}
		break
	}
	if len(cands) == 0 {
		chain := strings.Join(pol.Chain(m.Label), ", then ")
		if full > 0 {
			return d, fmt.Errorf("%w: label %s (%d full groups; tried %s)", ErrNoCapacity, m.Label, full, chain)
		}
		return d, fmt.Errorf("%w for label %s (tried %s)", ErrNoGroup, m.Label, chain)
	}

	var used, capacity float64
	for _, c := range cands {
		used += c.Used
		capacity += float64(c.Capacity)
	}
	fair := (used + w) / capacity // mean utilization once this device is placed

	// The reason is written into one buffer: the label's part, then the
	// method's.
	var buf [192]byte
	r := buf[:0]
	if m.Rule != "" {
		r = append(append(append(append(r, "rule "...), m.Rule...), ": label "...), m.Label...)
	} else {
		r = append(append(r, "default label "...), m.Label...)
	}
	if d.FromLabel != m.Label {
		r = append(append(append(r, " (fallback "...), d.FromLabel...), ')')
	}
	r = append(r, "; "...)

	var pick *Candidate
	if sticky, margin := pol.Sticky(); sticky {
		last := req.Input.GetHistory().GetLastGroup()
		for i := range cands {
			c := &cands[i]
			if c.Group.ID == last && (c.Used+w)/float64(c.Capacity) <= fair*(1+margin) {
				pick, d.Method = c, "sticky"
				r = appendPct(append(append(append(r, "sticky: back to "...), c.Group.ID...), " at "...), c.Utilization())
				r = appendPct(append(appendPct(append(r, " (fair share "...), fair), " +"...), margin)
				r = append(r, ')')
				break
			}
		}
	}
	if pick == nil && pol.HasAffinity() {
		key, err := pol.AffinityKey(req.Input)
		if err == nil && key != "" {
			d.AffinityKey = key
			bound := fair * (1 + pol.LoadFactor())
			for _, i := range rendezvous(key, cands) {
				c := &cands[i]
				if c.Used+w <= AffinityCeiling(bound, c.Capacity) {
					pick, d.Method = c, "affinity"
					r = appendPct(append(append(append(strconv.AppendQuote(append(r, "affinity "...), key), ": "...), c.Group.ID...), " at "...), c.Utilization())
					r = append(appendPct(append(r, " (bound "...), bound), ')')
					break
				}
			}
		}
	}
	if pick == nil {
		best := 0
		for i := 1; i < len(cands); i++ {
			if better(cands[i], cands[best], w) {
				best = i
			}
		}
		pick, d.Method = &cands[best], "balance"
		r = append(strconv.AppendInt(append(r, "balance: least utilized of "...), int64(len(cands)), 10), " candidates, "...)
		r = appendPct(append(append(r, pick.Group.ID...), " at "...), pick.Utilization())
		r = strconv.AppendInt(append(r, " of "...), int64(pick.Capacity), 10)
	}
	d.Group, d.Endpoints = *pick.Group, pick.Endpoints
	d.Reason = string(r)
	return d, nil
}

// AffinityCeiling is what a group of capacity c may hold, in devices (or
// load, when balancing by load), for affinity to place one more there:
// ⌈bound·c⌉, bound being the utilization fair × (1 + load_factor). The
// ceiling is bounded-load consistent hashing's (Mirrokni, Thorup,
// Zadimoghaddam: each bin holds at most ⌈(1+ε)·m/n⌉ balls), weighted by
// capacity: at low fill, where bound·c is below one device, a key still
// gets its home group rather than none.
func AffinityCeiling(bound float64, c int) float64 {
	// Less a hair, so that a product that should be whole but came out
	// just above it does not round up a whole device.
	return math.Ceil(bound*float64(c) - 1e-9)
}

// appendPct appends a fraction as a whole percentage, as %.0f%% would:
// reasons are built on every Assign, so without fmt.
func appendPct(b []byte, f float64) []byte {
	return append(strconv.AppendFloat(b, 100*f, 'f', 0, 64), '%')
}

// better orders candidates by utilization once the device is added, then
// by free room, then by id.
func better(a, b Candidate, w float64) bool {
	ua, ub := (a.Used+w)/float64(a.Capacity), (b.Used+w)/float64(b.Capacity)
	if ua != ub {
		return ua < ub
	}
	fa, fb := float64(a.Capacity)-a.Used, float64(b.Capacity)-b.Used
	if fa != fb {
		return fa > fb
	}
	return a.Group.ID < b.Group.ID
}

// evaluate measures one group. Its endpoints are appended to eps, which is
// returned: the candidate's are the window appended, capped, so that
// further appends never reach them.
func evaluate(g *fleet.Group, execs []fleet.Executor, pending Pending, pol *policy.Compiled, w float64, eps []Endpoint) (Candidate, []Endpoint) {
	c := Candidate{Group: g}
	from := len(eps)
	switch g.State {
	case fleet.GroupActive:
	case fleet.GroupDraining:
		c.Dropped = DroppedDraining
	case fleet.GroupDisabled:
		c.Dropped = DroppedDisabled
	default:
		c.Dropped = DroppedState
	}
	if len(execs) == 0 && c.Dropped == "" {
		c.Dropped = DroppedNoExec
	}
	execCap := 0
	var oldest time.Time
	for i := range execs {
		e := &execs[i]
		if e.Draining || e.Capacity <= 0 {
			continue
		}
		ep := Endpoint{Executor: e, Pending: pending.Pending(e)}
		eps = append(eps, ep)
		if pol.BalanceByLoad() {
			c.Used += e.Load
		} else {
			c.Used += float64(e.Connections)
		}
		c.Pending += ep.Pending
		execCap += e.Capacity
		if oldest.IsZero() || e.ObservedAt.Before(oldest) {
			oldest = e.ObservedAt
		}
	}
	c.Endpoints = eps[from:len(eps):len(eps)]
	if c.Dropped != "" {
		return c, eps
	}
	if len(c.Endpoints) == 0 {
		c.Dropped = DroppedAllDrain
		return c, eps
	}
	c.Pending += pending.GroupPending(g.ID, oldest)
	c.Used += c.Pending
	c.Capacity = min(g.Capacity, execCap)
	slices.SortStableFunc(c.Endpoints, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.Utilization(), b.Utilization()), cmp.Compare(a.Executor.ID, b.Executor.ID))
	})
	if (c.Used+w)/float64(c.Capacity) > pol.MaxUtilization() || c.Endpoints[0].Utilization() >= 1 {
		c.Dropped = DroppedFull
	}
	return c, eps
}
