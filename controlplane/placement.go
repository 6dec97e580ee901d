package controlplane

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/berthproject/berth/registry"
)

// Errors of the placement. The RPC edge turns them into statuses.
var (
	// ErrNoGroup means no group is healthy (active, with a live executor
	// that is not draining).
	ErrNoGroup = errors.New("controlplane: no healthy group")
	// ErrNoCapacity means healthy groups exist but all are full.
	ErrNoCapacity = errors.New("controlplane: every healthy group is full")
)

// Pending tells how many devices were sent to an executor but may not yet be
// in the connection count it last reported (observed at countedAt).
type Pending interface {
	Pending(executorID string, countedAt time.Time) int
}

// noPending is a Pending with nothing reserved.
type noPending struct{}

func (noPending) Pending(string, time.Time) int { return 0 }

// Candidate is a group the placement considered, with what it saw.
type Candidate struct {
	// Group is the group.
	Group registry.Group
	// Connections is the live connection count of its usable executors.
	Connections int
	// Pending counts devices assigned but not yet counted.
	Pending int
	// Capacity is the effective capacity: the group's own, bounded by the
	// sum of its usable executors' capacities.
	Capacity int
	// Endpoints are its usable executors, least utilized first.
	Endpoints []Endpoint
	// Dropped says why the group is not a candidate ("" if it is).
	Dropped string
}

// Utilization is (connections + pending) / capacity.
func (c Candidate) Utilization() float64 {
	if c.Capacity <= 0 {
		return 1
	}
	return float64(c.Connections+c.Pending) / float64(c.Capacity)
}

// Endpoint is a usable executor with its utilization.
type Endpoint struct {
	// Executor is the executor's record.
	Executor registry.Executor
	// Pending counts devices sent to it but not yet counted.
	Pending int
}

// Utilization is (connections + pending) / capacity of the executor.
func (e Endpoint) Utilization() float64 {
	return float64(e.Executor.Connections+e.Pending) / float64(e.Executor.Capacity)
}

// Decision is the outcome of a placement.
type Decision struct {
	// Group is the chosen group.
	Group registry.Group
	// Label is the label the device was assigned.
	Label string
	// Endpoints of the chosen group, least utilized first.
	Endpoints []Endpoint
	// Reason says in a few words why.
	Reason string
	// Candidates are every group considered, kept or dropped, sorted by id.
	Candidates []Candidate
}

// Place chooses a group for a device from snap: among healthy groups that
// are not full it picks the one with the lowest utilization, counting
// devices already sent there but not yet connected (pending). Ties go to the
// group with more free room, then to the lower id, so the choice is
// deterministic. It is a pure function of its inputs.
func Place(snap *registry.Snapshot, pending Pending) (Decision, error) {
	if pending == nil {
		pending = noPending{}
	}
	cands := make([]Candidate, 0, len(snap.Groups))
	best := -1
	healthy := 0
	for _, g := range snap.SortedGroups() {
		c := evaluate(g, snap.GroupExecutors(g.ID), pending)
		if c.Dropped == "" || c.Dropped == droppedFull {
			healthy++
		}
		cands = append(cands, c)
		if c.Dropped != "" {
			continue
		}
		if best < 0 || better(c, cands[best]) {
			best = len(cands) - 1
		}
	}
	if best < 0 {
		if healthy > 0 {
			return Decision{Candidates: cands}, fmt.Errorf("%w (%d groups)", ErrNoCapacity, healthy)
		}
		return Decision{Candidates: cands}, fmt.Errorf("%w among %d groups", ErrNoGroup, len(cands))
	}
	b := cands[best]
	return Decision{
		Group:      b.Group,
		Endpoints:  b.Endpoints,
		Reason:     fmt.Sprintf("least utilized of %d healthy groups (%.0f%% of %d)", healthy, 100*b.Utilization(), b.Capacity),
		Candidates: cands,
	}, nil
}

// better orders candidates: lower utilization, then more free room, then id.
func better(a, b Candidate) bool {
	if ua, ub := a.Utilization(), b.Utilization(); ua != ub {
		return ua < ub
	}
	fa, fb := a.Capacity-a.Connections-a.Pending, b.Capacity-b.Connections-b.Pending
	if fa != fb {
		return fa > fb
	}
	return a.Group.ID < b.Group.ID
}

// Reasons a group is dropped.
const (
	droppedDraining  = "group draining"
	droppedDisabled  = "group disabled"
	droppedNoExec    = "no live executor"
	droppedAllDrain  = "every executor draining"
	droppedFull      = "full"
	droppedUnknownSt = "unknown state"
)

// evaluate measures one group.
func evaluate(g registry.Group, execs []registry.Executor, pending Pending) Candidate {
	c := Candidate{Group: g}
	switch g.State {
	case registry.GroupActive:
	case registry.GroupDraining:
		c.Dropped = droppedDraining
	case registry.GroupDisabled:
		c.Dropped = droppedDisabled
	default:
		c.Dropped = droppedUnknownSt
	}
	if len(execs) == 0 && c.Dropped == "" {
		c.Dropped = droppedNoExec
	}
	execCap := 0
	for _, e := range execs {
		if e.Draining || e.Capacity <= 0 {
			continue
		}
		ep := Endpoint{Executor: e, Pending: pending.Pending(e.ID, e.ObservedAt)}
		c.Endpoints = append(c.Endpoints, ep)
		c.Connections += e.Connections
		c.Pending += ep.Pending
		execCap += e.Capacity
	}
	if c.Dropped != "" {
		return c
	}
	if len(c.Endpoints) == 0 {
		c.Dropped = droppedAllDrain
		return c
	}
	c.Capacity = min(g.Capacity, execCap)
	slices.SortStableFunc(c.Endpoints, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.Utilization(), b.Utilization()), cmp.Compare(a.Executor.ID, b.Executor.ID))
	})
	if c.Connections+c.Pending >= c.Capacity || c.Endpoints[0].Utilization() >= 1 {
		c.Dropped = droppedFull
	}
	return c
}
