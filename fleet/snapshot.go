package fleet

import (
	"maps"
	"slices"
	"strings"
)

// Snapshot is an immutable view of groups, executors, tenants and the
// stored policy at one registry revision. Never modify what it holds.
type Snapshot struct {
	// Revision is the etcd revision the snapshot reflects.
	Revision int64
	// Groups by id.
	Groups map[string]Group
	// Executors by id.
	Executors map[string]Executor
	// Tenants by id.
	Tenants map[string]Tenant
	// Policy is the stored placement policy, nil when none was applied.
	Policy  *StoredPolicy
	byGroup map[string][]Executor
	sorted  []Group
}

// GroupExecutors returns the executors registered for group, sorted by id.
func (s *Snapshot) GroupExecutors(group string) []Executor { return s.byGroup[group] }

// SortedGroups returns the groups sorted by id. Do not modify the slice.
func (s *Snapshot) SortedGroups() []Group { return s.sorted }

// Build makes a snapshot of the given maps, which it takes over: the
// caller must not modify them afterwards. Nil maps read as empty.
func Build(rev int64, groups map[string]Group, execs map[string]Executor, tenants map[string]Tenant, policy *StoredPolicy) *Snapshot {
	by := make(map[string][]Executor)
	for _, e := range execs {
		by[e.GroupID] = append(by[e.GroupID], e)
	}
	for _, es := range by {
		slices.SortFunc(es, func(a, b Executor) int { return strings.Compare(a.ID, b.ID) })
	}
	sorted := slices.Collect(maps.Values(groups))
	slices.SortFunc(sorted, func(a, b Group) int { return strings.Compare(a.ID, b.ID) })
	return &Snapshot{Revision: rev, Groups: groups, Executors: execs, Tenants: tenants, Policy: policy, byGroup: by, sorted: sorted}
}

// NewSnapshot builds a snapshot from lists, for tests and tools that make
// one without a cache.
func NewSnapshot(rev int64, groups []Group, execs []Executor) *Snapshot {
	gm := make(map[string]Group, len(groups))
	for _, g := range groups {
		gm[g.ID] = g
	}
	em := make(map[string]Executor, len(execs))
	for _, e := range execs {
		em[e.ID] = e
	}
	return Build(rev, gm, em, map[string]Tenant{}, nil)
}

// WithPolicy returns a copy of s with the given policy and tenants, for
// tests and tools.
func (s *Snapshot) WithPolicy(p *StoredPolicy, tenants []Tenant) *Snapshot {
	tm := make(map[string]Tenant, len(tenants))
	for _, t := range tenants {
		tm[t.ID] = t
	}
	return Build(s.Revision, s.Groups, s.Executors, tm, p)
}
