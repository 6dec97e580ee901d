package controlplane

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// Errors of the placement. The RPC edge turns them into statuses.
var (
	// ErrNoGroup means no group carrying the device's label (or one of its
	// fallbacks) is usable.
	ErrNoGroup = errors.New("controlplane: no usable group")
	// ErrNoCapacity means usable groups exist but all are full.
	ErrNoCapacity = errors.New("controlplane: every usable group is full")
)

// Pending tells how much was sent somewhere but may not yet be in the
// counts executors reported (observed at countedAt): devices this replica
// sent to an executor, and devices other replicas sent to a group.
type Pending interface {
	Pending(executorID string, countedAt time.Time) float64
	GroupPending(groupID string, countedAt time.Time) float64
}

// noPending is a Pending with nothing reserved.
type noPending struct{}

func (noPending) Pending(string, time.Time) float64      { return 0 }
func (noPending) GroupPending(string, time.Time) float64 { return 0 }

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
	Group *registry.Group
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
	Executor *registry.Executor
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
	Group registry.Group
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

// Reasons a group is dropped.
const (
	droppedDraining = "group draining"
	droppedDisabled = "group disabled"
	droppedState    = "unknown group state"
	droppedNoExec   = "no live executor"
	droppedAllDrain = "every executor draining"
	droppedFull     = "full"
)

// Decide places one device: the policy's first matching rule gives its
// label (else the default); groups that carry the label, or else each
// fallback label in order, and pass the filter are the candidates; then
// sticky, affinity and balance pick among them, in that order. It is a pure
// function of its inputs.
func Decide(snap *registry.Snapshot, pol *policy.Compiled, req Request, pending Pending) (Decision, error) {
	if pending == nil {
		pending = noPending{}
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
		start, kept := len(d.Candidates), 0
		for i := range groups {
			g := &groups[i]
			if !g.HasLabel(label) {
				continue
			}
			c := evaluate(g, snap.GroupExecutors(g.ID), pending, pol, w)
			c.Label = label
			d.Candidates = append(d.Candidates, c)
			switch c.Dropped {
			case "":
				kept++
			case droppedFull:
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

	var pick *Candidate
	if sticky, margin := pol.Sticky(); sticky {
		last := req.Input.GetHistory().GetLastGroup()
		for i := range cands {
			c := &cands[i]
			if c.Group.ID == last && (c.Used+w)/float64(c.Capacity) <= fair*(1+margin) {
				pick, d.Method = c, "sticky"
				d.Reason = "sticky: back to " + c.Group.ID + " at " + pct(c.Utilization()) + " (fair share " + pct(fair) + " +" + pct(margin) + ")"
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
				if (c.Used+w)/float64(c.Capacity) <= bound {
					pick, d.Method = c, "affinity"
					d.Reason = "affinity " + strconv.Quote(key) + ": " + c.Group.ID + " at " + pct(c.Utilization()) + " (bound " + pct(bound) + ")"
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
		d.Reason = "balance: least utilized of " + strconv.Itoa(len(cands)) + " candidates, " + pick.Group.ID + " at " + pct(pick.Utilization()) + " of " + strconv.Itoa(pick.Capacity)
	}
	d.Group, d.Endpoints = *pick.Group, pick.Endpoints
	prefix := "default label " + m.Label
	if m.Rule != "" {
		prefix = "rule " + m.Rule + ": label " + m.Label
	}
	if d.FromLabel != m.Label {
		prefix += " (fallback " + d.FromLabel + ")"
	}
	d.Reason = prefix + "; " + d.Reason
	return d, nil
}

// pct formats a fraction as a whole percentage, as %.0f%% would: reasons
// are built on every Assign, so without fmt.
func pct(f float64) string { return strconv.FormatFloat(100*f, 'f', 0, 64) + "%" }

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

// rendezvous orders candidates for key by weighted rendezvous hashing
// (highest random weight, scaled by capacity): the order depends only on
// the key, the group ids and capacities, so every replica computes the same
// one, across restarts, and adding a group moves only the keys it wins.
func rendezvous(key string, cands []Candidate) []int {
	type scored struct {
		i int
		s float64
	}
	ss := make([]scored, len(cands))
	for i, c := range cands {
		h := fnv.New64a()
		h.Write([]byte(key))
		h.Write([]byte{0})
		h.Write([]byte(c.Group.ID))
		u := (float64(mix64(h.Sum64())>>11) + 0.5) / (1 << 53) // uniform in (0,1)
		ss[i] = scored{i, -float64(c.Capacity) / math.Log(u)}
	}
	slices.SortFunc(ss, func(a, b scored) int { return cmp.Compare(b.s, a.s) })
	out := make([]int, len(ss))
	for i, s := range ss {
		out[i] = s.i
	}
	return out
}

// mix64 is MurmurHash3's 64-bit finalizer: FNV-1a alone leaves hashes of
// keys that differ only at the end (group ids) too close together, and the
// largest group would win nearly every key.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb93e185323
	x ^= x >> 33
	return x
}

// evaluate measures one group.
func evaluate(g *registry.Group, execs []registry.Executor, pending Pending, pol *policy.Compiled, w float64) Candidate {
	c := Candidate{Group: g, Endpoints: make([]Endpoint, 0, len(execs))}
	switch g.State {
	case registry.GroupActive:
	case registry.GroupDraining:
		c.Dropped = droppedDraining
	case registry.GroupDisabled:
		c.Dropped = droppedDisabled
	default:
		c.Dropped = droppedState
	}
	if len(execs) == 0 && c.Dropped == "" {
		c.Dropped = droppedNoExec
	}
	execCap := 0
	var oldest time.Time
	for i := range execs {
		e := &execs[i]
		if e.Draining || e.Capacity <= 0 {
			continue
		}
		ep := Endpoint{Executor: e, Pending: pending.Pending(e.ID, e.ObservedAt)}
		c.Endpoints = append(c.Endpoints, ep)
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
	if c.Dropped != "" {
		return c
	}
	if len(c.Endpoints) == 0 {
		c.Dropped = droppedAllDrain
		return c
	}
	c.Pending += pending.GroupPending(g.ID, oldest)
	c.Used += c.Pending
	c.Capacity = min(g.Capacity, execCap)
	slices.SortStableFunc(c.Endpoints, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.Utilization(), b.Utilization()), cmp.Compare(a.Executor.ID, b.Executor.ID))
	})
	if (c.Used+w)/float64(c.Capacity) > pol.MaxUtilization() || c.Endpoints[0].Utilization() >= 1 {
		c.Dropped = droppedFull
	}
	return c
}
