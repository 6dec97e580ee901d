package placement

import (
	"testing"

	"pgregory.net/rapid"

	"github.com/berthproject/berth/fleet"
	"github.com/berthproject/berth/policy"
)

// TestDecideReason: the reason names the rule and label (and the fallback
// placed under), then how the group was picked, with its figures.
func TestDecideReason(t *testing.T) {
	active := fleet.GroupActive
	twoEqual := []fleet.Group{grp("a", 100, active), grp("b", 100, active)}
	three := []fleet.Group{grp("a", 100, active), grp("b", 100, active), grp("c", 100, active)}
	rules := `
default_label: std
rules:
  - name: gold-tenants
    when: tenant.attributes["tier"] == "gold"
    label: gold
fallbacks:
  gold: {labels: [std]}
`
	// The affinity key's home: the first of its rendezvous order.
	home := three[RendezvousOrder("acme", []PoolGroup{{"a", 100}, {"b", 100}, {"c", 100}})[0]].ID
	tests := []struct {
		name   string
		policy string
		groups []fleet.Group
		execs  []fleet.Executor
		req    Request
		want   string
	}{
		{
			name:   "balance, default label",
			groups: twoEqual, execs: []fleet.Executor{exe("a1", "a", 100, 50), exe("b1", "b", 100, 10)},
			req:  dev("d", "m", "", nil, ""),
			want: "default label default; balance: least utilized of 2 candidates, b at 10% of 100",
		},
		{
			name:   "balance, rule and fallback",
			policy: rules, groups: []fleet.Group{grp("gold-1", 100, active, "gold"), grp("std-1", 100, active, "std")},
			execs: []fleet.Executor{exe("std-1x", "std-1", 100, 10)},
			req:   dev("d", "m", "acme", map[string]string{"tier": "gold"}, ""),
			want:  "rule gold-tenants: label gold (fallback std); balance: least utilized of 1 candidates, std-1 at 10% of 100",
		},
		{
			name:   "sticky",
			policy: "default_label: default\nsticky: {enabled: true, margin: 0.2}\n",
			groups: twoEqual, execs: []fleet.Executor{exe("a1", "a", 100, 55), exe("b1", "b", 100, 44)},
			req:  dev("d", "m", "", nil, "a"),
			want: "default label default; sticky: back to a at 55% (fair share 50% +20%)",
		},
		{
			name:   "affinity",
			policy: "default_label: default\naffinity: {key: tenant.id, load_factor: 0.25}\n",
			groups: three, execs: []fleet.Executor{exe("a1", "a", 100, 10), exe("b1", "b", 100, 10), exe("c1", "c", 100, 10)},
			req:  dev("d", "m", "acme", nil, ""),
			want: `default label default; affinity "acme": ` + home + " at 10% (bound 13%)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Decide(snap(tt.groups, tt.execs), compile(t, tt.policy), tt.req, nil)
			if err != nil {
				t.Fatal(err)
			}
			if d.Reason != tt.want {
				t.Errorf("reason = %q\nwant     %q", d.Reason, tt.want)
			}
		})
	}
}

// TestDecidePropertyCandidateEndpoints: every candidate's endpoints are its
// own group's usable executors, each once (least utilized first when the
// group was measured), in a
// window no other candidate's endpoints overlap (they share one array).
func TestDecidePropertyCandidateEndpoints(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := drawWorld(t)
		d, _ := Decide(w.snapshot(), policy.Default(), drawRequest(t, w, "d"), w.pending)
		seen := map[*fleet.Executor]string{}
		for _, c := range d.Candidates {
			if cap(c.Endpoints) != len(c.Endpoints) {
				t.Fatalf("group %s: %d endpoints in a window of %d: an append would reach another group's", c.Group.ID, len(c.Endpoints), cap(c.Endpoints))
			}
			want := 0
			for _, e := range w.snapshot().GroupExecutors(c.Group.ID) {
				if !e.Draining && e.Capacity > 0 {
					want++
				}
			}
			if len(c.Endpoints) != want {
				t.Fatalf("group %s: %d endpoints, want its %d usable executors", c.Group.ID, len(c.Endpoints), want)
			}
			for i, ep := range c.Endpoints {
				if ep.Executor.GroupID != c.Group.ID {
					t.Fatalf("group %s lists executor %s of %s", c.Group.ID, ep.Executor.ID, ep.Executor.GroupID)
				}
				if g, ok := seen[ep.Executor]; ok {
					t.Fatalf("executor %s listed by %s and %s", ep.Executor.ID, g, c.Group.ID)
				}
				seen[ep.Executor] = c.Group.ID
				// Groups dropped before measuring (state, no executor)
				// are not sorted.
				sorted := c.Dropped == "" || c.Dropped == DroppedFull
				if sorted && i > 0 && ep.Utilization() < c.Endpoints[i-1].Utilization() {
					t.Fatalf("group %s: endpoints not least utilized first", c.Group.ID)
				}
			}
		}
	})
}
