package placement

import (
	"github.com/berthproject/berth/fleet"
	"github.com/berthproject/berth/policy"
)

// Pool is where devices given one label are placed: the first label of
// the label's fallback chain that some usable group carries, and those
// groups. Devices of one pool are balanced among its groups.
type Pool struct {
	// Label is the label devices are placed under (the assigned one, or a
	// fallback).
	Label string
	// Groups are the usable groups carrying Label, by id, with their
	// effective capacities.
	Groups []PoolGroup
}

// PoolGroup is one group of a pool.
type PoolGroup struct {
	// ID is the group's id.
	ID string
	// Capacity is its effective capacity: its own, bounded by the sum of
	// its usable executors' capacities.
	Capacity int
}

// Has reports whether group is in the pool.
func (p Pool) Has(group string) bool {
	for _, g := range p.Groups {
		if g.ID == group {
			return true
		}
	}
	return false
}

// PoolFor returns the pool of devices the policy gives label: what Decide
// would choose among, capacity aside (a full group stays in its pool: the
// devices on it count in it). ok is false when no group is usable for the
// label or its fallbacks.
func PoolFor(snap *fleet.Snapshot, pol *policy.Compiled, label string) (Pool, bool) {
	for _, l := range pol.Chain(label) {
		var p Pool
		for _, g := range snap.SortedGroups() {
			if !g.HasLabel(l) {
				continue
			}
			execs := snap.GroupExecutors(g.ID)
			c, _ := evaluate(&g, execs, NoPending{}, pol, 0, make([]Endpoint, 0, len(execs)))
			if c.Dropped == "" || c.Dropped == DroppedFull {
				p.Groups = append(p.Groups, PoolGroup{ID: g.ID, Capacity: c.Capacity})
			}
		}
		if len(p.Groups) > 0 {
			p.Label = l
			return p, true
		}
	}
	return Pool{}, false
}
