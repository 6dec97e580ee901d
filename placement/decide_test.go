package placement

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/berthproject/berth/fleet"
	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/policy"
)

// snap builds a snapshot from groups and executors.
func snap(groups []fleet.Group, execs []fleet.Executor) *fleet.Snapshot {
	return fleet.NewSnapshot(1, groups, execs)
}

func grp(id string, capacity int, st fleet.GroupState, labels ...string) fleet.Group {
	if len(labels) == 0 {
		labels = []string{"default"}
	}
	return fleet.Group{ID: id, Capacity: capacity, State: st, Labels: labels}
}

func exe(id, group string, capacity, conns int) fleet.Executor {
	return fleet.Executor{ID: id, GroupID: group, Address: id + ":1", Capacity: capacity, Connections: conns, Load: float64(conns)}
}

// fixedPending reports a fixed pending count per executor.
type fixedPending map[string]float64

func (f fixedPending) Pending(e *fleet.Executor) float64           { return f[e.ID] }
func (f fixedPending) GroupPending(id string, _ time.Time) float64 { return f["group:"+id] }

// compile builds a policy from YAML, failing the test if it does not compile.
func compile(t *testing.T, doc string) *policy.Compiled {
	t.Helper()
	if doc == "" {
		return policy.Default()
	}
	p, err := policy.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	c, err := policy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dev builds a request for a device.
func dev(id, model, tenant string, tenantAttrs map[string]string, lastGroup string) Request {
	return Request{Input: &policyv1.Input{
		Device:   &policyv1.DeviceInput{Id: id, Model: model, Attributes: map[string]string{}},
		Tenant:   &policyv1.TenantInput{Id: tenant, Attributes: tenantAttrs},
		Services: &policyv1.ServicesInput{},
		History:  &policyv1.HistoryInput{LastGroup: lastGroup},
	}, Weight: 1}
}

func TestDecide(t *testing.T) {
	active := fleet.GroupActive
	twoEqual := []fleet.Group{grp("a", 100, active), grp("b", 100, active)}
	labelled := []fleet.Group{grp("gold-1", 100, active, "gold"), grp("std-1", 100, active, "std", "default"), grp("eu-1", 100, active, "eu")}
	labelledExecs := []fleet.Executor{exe("gold-1x", "gold-1", 100, 10), exe("std-1x", "std-1", 100, 10), exe("eu-1x", "eu-1", 100, 10)}
	rules := `
default_label: std
rules:
  - name: gold-tenants
    when: tenant.attributes["tier"] == "gold"
    label: gold
  - name: eu-printers
    when: device.model.startsWith("EU-")
    label: eu
fallbacks:
  gold: {labels: [std]}
`
	tests := []struct {
		name       string
		policy     string
		groups     []fleet.Group
		execs      []fleet.Executor
		pending    fixedPending
		req        Request
		wantGroup  string
		wantLabel  string
		wantRule   string
		wantMethod string
		wantFirst  string
		wantErr    error
	}{
		{
			name:   "balance: lowest utilization wins",
			groups: twoEqual, execs: []fleet.Executor{exe("a1", "a", 100, 50), exe("b1", "b", 100, 10)},
			req:       dev("d", "m", "", nil, ""),
			wantGroup: "b", wantLabel: "default", wantMethod: "balance", wantFirst: "b1",
		},
		{
			name:   "balance: relative to capacity",
			groups: []fleet.Group{grp("big", 1000, active), grp("small", 10, active)},
			execs:  []fleet.Executor{exe("big1", "big", 1000, 100), exe("small1", "small", 10, 2)},
			req:    dev("d", "m", "", nil, ""), wantGroup: "big", wantLabel: "default", wantMethod: "balance",
		},
		{
			name:   "balance: pending devices count",
			groups: twoEqual, execs: []fleet.Executor{exe("a1", "a", 100, 10), exe("b1", "b", 100, 20)},
			pending: fixedPending{"a1": 20},
			req:     dev("d", "m", "", nil, ""), wantGroup: "b", wantMethod: "balance",
		},
		{
			name:   "balance: other replicas' pending devices count",
			groups: twoEqual, execs: []fleet.Executor{exe("a1", "a", 100, 10), exe("b1", "b", 100, 20)},
			pending: fixedPending{"group:a": 20},
			req:     dev("d", "m", "", nil, ""), wantGroup: "b", wantMethod: "balance",
		},
		{
			name:   "balance by load: heavy devices weigh more",
			policy: "default_label: default\nbalance: {mode: BALANCE_MODE_LOAD}\n",
			groups: twoEqual,
			execs: []fleet.Executor{
				{ID: "a1", GroupID: "a", Address: "x", Capacity: 100, Connections: 10, Load: 60},
				{ID: "b1", GroupID: "b", Address: "y", Capacity: 100, Connections: 40, Load: 40},
			},
			req: dev("d", "m", "", nil, ""), wantGroup: "b", wantMethod: "balance",
		},
		{
			name:   "filter: draining, disabled and executor-less groups dropped",
			groups: []fleet.Group{grp("a", 100, fleet.GroupDraining), grp("b", 100, fleet.GroupDisabled), grp("c", 100, active), grp("d", 100, active)},
			execs:  []fleet.Executor{exe("a1", "a", 100, 0), exe("b1", "b", 100, 0), exe("d1", "d", 100, 90)},
			req:    dev("x", "m", "", nil, ""), wantGroup: "d", wantMethod: "balance", wantFirst: "d1",
		},
		{
			name:   "filter: max utilization",
			policy: "default_label: default\nfilter: {max_utilization: 0.5}\n",
			groups: twoEqual, execs: []fleet.Executor{exe("a1", "a", 100, 50), exe("b1", "b", 100, 60)},
			req: dev("d", "m", "", nil, ""), wantErr: ErrNoCapacity,
		},
		{
			name:   "filter: draining executor is no endpoint",
			groups: []fleet.Group{grp("a", 100, active)},
			execs:  []fleet.Executor{{ID: "a1", GroupID: "a", Address: "x", Capacity: 50, Draining: true}, exe("a2", "a", 50, 40)},
			req:    dev("d", "m", "", nil, ""), wantGroup: "a", wantFirst: "a2",
		},
		{
			name:    "endpoints least utilized first, pending included",
			groups:  []fleet.Group{grp("a", 100, active)},
			execs:   []fleet.Executor{exe("a1", "a", 50, 10), exe("a2", "a", 50, 10)},
			pending: fixedPending{"a1": 1},
			req:     dev("d", "m", "", nil, ""), wantGroup: "a", wantFirst: "a2",
		},
		{
			name:   "label: tenant attribute rule",
			policy: rules, groups: labelled, execs: labelledExecs,
			req:       dev("d", "X", "acme", map[string]string{"tier": "gold"}, ""),
			wantGroup: "gold-1", wantLabel: "gold", wantRule: "gold-tenants",
		},
		{
			name:   "label: device model rule",
			policy: rules, groups: labelled, execs: labelledExecs,
			req:       dev("d", "EU-200", "", nil, ""),
			wantGroup: "eu-1", wantLabel: "eu", wantRule: "eu-printers",
		},
		{
			name:   "label: first match wins",
			policy: rules, groups: labelled, execs: labelledExecs,
			req:       dev("d", "EU-200", "acme", map[string]string{"tier": "gold"}, ""),
			wantGroup: "gold-1", wantLabel: "gold", wantRule: "gold-tenants",
		},
		{
			name:   "label: default when nothing matches",
			policy: rules, groups: labelled, execs: labelledExecs,
			req:       dev("d", "X", "", nil, ""),
			wantGroup: "std-1", wantLabel: "std",
		},
		{
			name:   "label: fallback when the label has no usable group",
			policy: rules, groups: labelled,
			execs:     []fleet.Executor{exe("std-1x", "std-1", 100, 10), exe("eu-1x", "eu-1", 100, 10)},
			req:       dev("d", "X", "acme", map[string]string{"tier": "gold"}, ""),
			wantGroup: "std-1", wantLabel: "gold", wantRule: "gold-tenants",
		},
		{
			name:   "label: no fallback, no group",
			policy: rules, groups: labelled,
			execs:   []fleet.Executor{exe("std-1x", "std-1", 100, 10)},
			req:     dev("d", "EU-1", "", nil, ""),
			wantErr: ErrNoGroup,
		},
		{
			name:   "sticky: back to the last group within the margin",
			policy: "default_label: default\nsticky: {enabled: true, margin: 0.2}\n",
			groups: twoEqual, execs: []fleet.Executor{exe("a1", "a", 100, 55), exe("b1", "b", 100, 45)},
			req: dev("d", "m", "", nil, "a"), wantGroup: "a", wantMethod: "sticky",
		},
		{
			name:   "sticky: not when the last group is above the margin",
			policy: "default_label: default\nsticky: {enabled: true, margin: 0.05}\n",
			groups: twoEqual, execs: []fleet.Executor{exe("a1", "a", 100, 70), exe("b1", "b", 100, 30)},
			req: dev("d", "m", "", nil, "a"), wantGroup: "b", wantMethod: "balance",
		},
		{
			name:   "sticky: not when the last group is no candidate",
			policy: "default_label: default\nsticky: {enabled: true, margin: 1}\n",
			groups: []fleet.Group{grp("a", 100, fleet.GroupDraining), grp("b", 100, active)},
			execs:  []fleet.Executor{exe("a1", "a", 100, 10), exe("b1", "b", 100, 30)},
			req:    dev("d", "m", "", nil, "a"), wantGroup: "b", wantMethod: "balance",
		},
		{
			name:   "sticky off: balance even with history",
			groups: twoEqual, execs: []fleet.Executor{exe("a1", "a", 100, 55), exe("b1", "b", 100, 45)},
			req: dev("d", "m", "", nil, "a"), wantGroup: "b", wantMethod: "balance",
		},
		{
			name:    "no groups",
			req:     dev("d", "m", "", nil, ""),
			wantErr: ErrNoGroup,
		},
		{
			name:   "all full",
			groups: []fleet.Group{grp("a", 10, active)}, execs: []fleet.Executor{exe("a1", "a", 10, 10)},
			req: dev("d", "m", "", nil, ""), wantErr: ErrNoCapacity,
		},
		{
			name:   "executor capacity bounds the group",
			groups: []fleet.Group{grp("a", 100, active)}, execs: []fleet.Executor{exe("a1", "a", 5, 5)},
			req: dev("d", "m", "", nil, ""), wantErr: ErrNoCapacity,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Pending
			if tt.pending != nil {
				p = tt.pending
			}
			d, err := Decide(snap(tt.groups, tt.execs), compile(t, tt.policy), tt.req, p)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decide err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if d.Group.ID != tt.wantGroup {
				t.Errorf("group = %s, want %s (reason %q)", d.Group.ID, tt.wantGroup, d.Reason)
			}
			if tt.wantLabel != "" && d.Label != tt.wantLabel {
				t.Errorf("label = %s, want %s", d.Label, tt.wantLabel)
			}
			if d.Rule != tt.wantRule {
				t.Errorf("rule = %q, want %q", d.Rule, tt.wantRule)
			}
			if tt.wantMethod != "" && d.Method != tt.wantMethod {
				t.Errorf("method = %s, want %s (reason %q)", d.Method, tt.wantMethod, d.Reason)
			}
			if tt.wantFirst != "" && d.Endpoints[0].Executor.ID != tt.wantFirst {
				t.Errorf("first endpoint = %s, want %s", d.Endpoints[0].Executor.ID, tt.wantFirst)
			}
			if d.Reason == "" || len(d.Candidates) == 0 {
				t.Errorf("decision without reason or candidates: %+v", d)
			}
		})
	}
}

// TestDecideAffinity: devices with the same key share a group while it has
// room, the mapping is the same for any replica (a pure function of key and
// groups), and the bound sends the overflow elsewhere.
func TestDecideAffinity(t *testing.T) {
	pol := compile(t, "default_label: default\naffinity: {key: tenant.id, load_factor: 0.25}\n")
	groups := []fleet.Group{grp("a", 100, fleet.GroupActive), grp("b", 100, fleet.GroupActive), grp("c", 100, fleet.GroupActive)}
	execs := []fleet.Executor{exe("a1", "a", 100, 10), exe("b1", "b", 100, 10), exe("c1", "c", 100, 10)}
	s := snap(groups, execs)
	home := map[string]string{}
	spread := map[string]bool{}
	for i := range 30 {
		tenant := fmt.Sprintf("tenant-%d", i%10)
		d, err := Decide(s, pol, dev(fmt.Sprint("d", i), "m", tenant, nil, ""), nil)
		if err != nil {
			t.Fatal(err)
		}
		if d.Method != "affinity" {
			t.Fatalf("method = %s, want affinity", d.Method)
		}
		if h, ok := home[tenant]; ok && h != d.Group.ID {
			t.Errorf("tenant %s placed on %s and %s", tenant, h, d.Group.ID)
		}
		home[tenant] = d.Group.ID
		spread[d.Group.ID] = true
	}
	if len(spread) < 2 {
		t.Errorf("10 tenants all hashed to %v: affinity does not spread keys", spread)
	}
	// Fill tenant-0's home group above the bound: its devices go elsewhere.
	full := make([]fleet.Executor, len(execs))
	copy(full, execs)
	for i := range full {
		if full[i].GroupID == home["tenant-0"] {
			full[i].Connections = 60
		}
	}
	d, err := Decide(snap(groups, full), pol, dev("z", "m", "tenant-0", nil, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Group.ID == home["tenant-0"] {
		t.Errorf("tenant-0 stayed on %s above the bound (reason %q)", d.Group.ID, d.Reason)
	}
}

// TestRendezvousSpreadsByCapacity: keys spread over groups in proportion to
// capacity, not all to the largest one.
func TestRendezvousSpreadsByCapacity(t *testing.T) {
	cands := []Candidate{
		{Group: &fleet.Group{ID: "g1"}, Capacity: 100},
		{Group: &fleet.Group{ID: "g2"}, Capacity: 100},
		{Group: &fleet.Group{ID: "g3"}, Capacity: 100},
		{Group: &fleet.Group{ID: "g4"}, Capacity: 101},
	}
	wins := make([]int, len(cands))
	const keys = 10000
	for i := range keys {
		wins[rendezvous(fmt.Sprintf("tenant-%d", i), cands)[0]]++
	}
	for i, w := range wins {
		if w < keys/4-500 || w > keys/4+500 {
			t.Errorf("group %s won %d of %d keys, want about %d (all: %v)", cands[i].Group.ID, w, keys, keys/4, wins)
		}
	}
}
