package placement_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/berthproject/berth/fleet"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/policy"
)

// explainFleet is two groups: g-std (label std) and g-gold (label gold),
// each with one executor.
func explainFleet() *fleet.Snapshot {
	return fleet.NewSnapshot(1,
		[]fleet.Group{
			{ID: "g-gold", Labels: []string{"gold"}, Capacity: 100, State: fleet.GroupActive},
			{ID: "g-std", Labels: []string{"std"}, Capacity: 100, State: fleet.GroupActive},
		},
		[]fleet.Executor{
			{ID: "e-gold", GroupID: "g-gold", Address: "a:1", Capacity: 100, Connections: 10},
			{ID: "e-std", GroupID: "g-std", Address: "b:1", Capacity: 100, Connections: 10},
		},
	).WithPolicy(nil, []fleet.Tenant{{ID: "acme", Attributes: map[string]string{"tier": "gold"}}})
}

const goldPolicy = `
default_label: std
rules:
  - name: gold-tenants
    when: tenant.attributes["tier"] == "gold"
    label: gold
`

func TestValidatePolicy(t *testing.T) {
	tests := []struct {
		name      string
		doc       string
		wantErr   error
		wantWarns []string // substrings, one per warning
	}{
		{name: "every label carried", doc: goldPolicy},
		{name: "label nobody carries", doc: "default_label: std\nrules: [{name: r, when: 'true', label: eu}]\n", wantWarns: []string{`label "eu" is carried by no group`}},
		{name: "bad expression", doc: "default_label: std\nrules: [{name: r, when: '1 +', label: eu}]\n", wantErr: policy.ErrInvalid},
		{name: "not a policy", doc: "default_label: [1]\n", wantErr: policy.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, warns, err := placement.ValidatePolicy([]byte(tt.doc), explainFleet())
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("ValidatePolicy err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if c == nil {
				t.Fatal("ValidatePolicy returned no policy")
			}
			if len(warns) != len(tt.wantWarns) {
				t.Fatalf("warnings = %q, want %d like %q", warns, len(tt.wantWarns), tt.wantWarns)
			}
			for i, w := range tt.wantWarns {
				if !strings.Contains(warns[i], w) {
					t.Errorf("warning %d = %q, want it to say %q", i, warns[i], w)
				}
			}
		})
	}
}

func TestDryRun(t *testing.T) {
	snap := explainFleet()
	records := []fleet.Assignment{
		{DeviceID: "a1", GroupID: "g-std", Label: "std", Inputs: &fleet.DeviceInputs{Tenant: "acme"}},
		{DeviceID: "a2", GroupID: "g-gold", Label: "gold", Inputs: &fleet.DeviceInputs{Tenant: "acme"}},
		{DeviceID: "o1", GroupID: "g-std", Label: "std", Inputs: &fleet.DeviceInputs{Tenant: "other"}},
		{DeviceID: "n1", GroupID: "g-std", Label: "std"}, // no inputs recorded
	}
	rangeRecords := func(fn func(fleet.Assignment) bool) {
		for _, a := range records {
			if !fn(a) {
				return
			}
		}
	}
	pol, _, err := placement.ValidatePolicy([]byte(goldPolicy), snap)
	if err != nil {
		t.Fatal(err)
	}
	got := placement.DryRun(snap, pol, rangeRecords, nil)
	want := placement.DryRunResult{
		Devices: 4, LabelChanges: 1, GroupChanges: 1,
		ByLabel: []placement.LabelCount{
			{Label: "gold", Devices: 2, LabelChanges: 1, GroupChanges: 1},
			{Label: "std", Devices: 2},
		},
	}
	if got.Devices != want.Devices || got.LabelChanges != want.LabelChanges || got.GroupChanges != want.GroupChanges || !slices.Equal(got.ByLabel, want.ByLabel) {
		t.Errorf("DryRun = %+v, want %+v", got, want)
	}
}

func TestExplain(t *testing.T) {
	snap := explainFleet()
	pol, _, err := placement.ValidatePolicy([]byte(goldPolicy), snap)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                 string
		snap                 *fleet.Snapshot
		rec                  fleet.Assignment
		wantGroup, wantLabel string
		wantRule             string
		wantCandidates       int
		wantErr              error
	}{
		{
			name: "gold tenant", snap: snap,
			rec:       fleet.Assignment{DeviceID: "a1", GroupID: "g-std", Label: "std", Inputs: &fleet.DeviceInputs{Tenant: "acme"}},
			wantGroup: "g-gold", wantLabel: "gold", wantRule: "gold-tenants", wantCandidates: 1,
		},
		{
			name: "no inputs recorded", snap: snap,
			rec:       fleet.Assignment{DeviceID: "n1", GroupID: "g-std", Label: "std"},
			wantGroup: "g-std", wantLabel: "std", wantCandidates: 1,
		},
		{
			name: "no usable group", snap: fleet.NewSnapshot(1, snap.SortedGroups(), nil),
			rec:       fleet.Assignment{DeviceID: "n1", GroupID: "g-std", Label: "std"},
			wantLabel: "std", wantCandidates: 1, wantErr: placement.ErrNoGroup,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := placement.Explain(tt.snap, pol, tt.rec, fleet.History{})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Explain err = %v, want %v", err, tt.wantErr)
			}
			if d.Group.ID != tt.wantGroup || d.Label != tt.wantLabel || d.Rule != tt.wantRule || len(d.Candidates) != tt.wantCandidates {
				t.Errorf("Explain = group %q, label %q, rule %q, %d candidates; want %q, %q, %q, %d",
					d.Group.ID, d.Label, d.Rule, len(d.Candidates), tt.wantGroup, tt.wantLabel, tt.wantRule, tt.wantCandidates)
			}
			if err != nil && d.Candidates[0].Dropped != placement.DroppedNoExec {
				t.Errorf("dropped = %q, want %q", d.Candidates[0].Dropped, placement.DroppedNoExec)
			}
		})
	}
}
