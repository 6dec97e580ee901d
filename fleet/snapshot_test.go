package fleet_test

import (
	"slices"
	"testing"

	"github.com/berthproject/berth/fleet"
)

func TestSnapshot(t *testing.T) {
	groups := []fleet.Group{{ID: "b", Capacity: 1}, {ID: "a", Capacity: 2}, {ID: "c", Capacity: 3}}
	execs := []fleet.Executor{
		{ID: "b-2", GroupID: "b"}, {ID: "a-1", GroupID: "a"}, {ID: "b-1", GroupID: "b"}, {ID: "x-1", GroupID: "gone"},
	}
	snap := fleet.NewSnapshot(7, groups, execs)
	var sorted []string
	for _, g := range snap.SortedGroups() {
		sorted = append(sorted, g.ID)
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(sorted, want) {
		t.Errorf("SortedGroups() = %v, want %v", sorted, want)
	}
	tests := []struct {
		group string
		want  []string
	}{
		{"a", []string{"a-1"}},
		{"b", []string{"b-1", "b-2"}},
		{"c", nil},
		{"gone", []string{"x-1"}},
		{"unknown", nil},
	}
	for _, tt := range tests {
		var got []string
		for _, e := range snap.GroupExecutors(tt.group) {
			got = append(got, e.ID)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("GroupExecutors(%q) = %v, want %v", tt.group, got, tt.want)
		}
	}
	if snap.Revision != 7 || len(snap.Groups) != 3 || len(snap.Executors) != 4 || len(snap.Tenants) != 0 || snap.Policy != nil {
		t.Errorf("NewSnapshot = rev %d, %d groups, %d executors, %d tenants, policy %v; want 7, 3, 4, 0, nil",
			snap.Revision, len(snap.Groups), len(snap.Executors), len(snap.Tenants), snap.Policy)
	}

	sp := &fleet.StoredPolicy{Document: []byte(`{}`), Version: 9}
	with := snap.WithPolicy(sp, []fleet.Tenant{{ID: "t1"}, {ID: "t2"}})
	if with.Policy != sp || len(with.Tenants) != 2 || with.Tenants["t2"].ID != "t2" || with.Revision != 7 || len(with.SortedGroups()) != 3 {
		t.Errorf("WithPolicy = policy %v, tenants %v, rev %d, %d groups; want the policy, t1 and t2, 7, 3", with.Policy, with.Tenants, with.Revision, len(with.SortedGroups()))
	}
	if snap.Policy != nil || len(snap.Tenants) != 0 {
		t.Errorf("WithPolicy changed the original: policy %v, tenants %v", snap.Policy, snap.Tenants)
	}
}

func TestBuildWithNilMaps(t *testing.T) {
	snap := fleet.Build(1, nil, nil, nil, nil)
	if got := len(snap.SortedGroups()); got != 0 {
		t.Errorf("SortedGroups() of an empty snapshot has %d groups, want 0", got)
	}
	if got := snap.GroupExecutors("g"); got != nil {
		t.Errorf("GroupExecutors(g) of an empty snapshot = %v, want nil", got)
	}
}
