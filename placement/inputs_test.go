package placement_test

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/berthproject/berth/fleet"
	"github.com/berthproject/berth/placement"
)

// LoadWeight moves in steps, so that a slowly decaying counter does not
// give a new weight (and a record write) on every Assign.
func TestLoadWeightSteps(t *testing.T) {
	prev, changes := 0.0, 0
	for m := 0.0; m <= 100000; m += 10 {
		w := placement.LoadWeight(fleet.History{Messages: m})
		if want := 1 + m/placement.MessagesPerWeightUnit; math.Abs(w-want)/want > 0.05 {
			t.Fatalf("LoadWeight(%v messages) = %v, want within 5%% of %v", m, w, want)
		}
		if w != prev {
			changes++
			prev = w
		}
	}
	if changes > 60 {
		t.Errorf("%d distinct weights from 0 to 100,000 messages a day; want at most 60 steps", changes)
	}
}

func TestPolicyInput(t *testing.T) {
	snap := fleet.NewSnapshot(1, nil, nil).WithPolicy(nil, []fleet.Tenant{
		{ID: "acme", Attributes: map[string]string{"tier": "gold"}, Services: []string{"print", "scan"}},
		{ID: "bare"},
	})
	in := &fleet.DeviceInputs{Model: "P-100", Firmware: "2.1", Attributes: map[string]string{"site": "osaka"}, Tenant: "acme", Services: []string{"print"}}
	traffic := fleet.History{Connects: 2.6, Messages: 1499.4, Bytes: 0.5, At: time.Unix(1000, 0)}
	tests := []struct {
		name                    string
		in                      *fleet.DeviceInputs
		lastGroup, lastLabel    string
		traffic                 fleet.History
		wantTenantAttrs         map[string]string
		wantEntitled            []string
		wantConnects, wantMsgs  int64
		wantBytes               int64
		wantLastGroup, wantLast string
	}{
		{
			name: "known tenant with history", in: in, lastGroup: "g1", lastLabel: "gold", traffic: traffic,
			wantTenantAttrs: map[string]string{"tier": "gold"}, wantEntitled: []string{"print", "scan"},
			wantConnects: 3, wantMsgs: 1499, wantBytes: 1, wantLastGroup: "g1", wantLast: "gold",
		},
		{
			name: "unknown tenant, no history", in: &fleet.DeviceInputs{Tenant: "nobody"},
			wantTenantAttrs: map[string]string{},
		},
		{
			name: "tenant without attributes", in: &fleet.DeviceInputs{Tenant: "bare"},
			wantTenantAttrs: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := placement.PolicyInput(snap, "d1", tt.in, tt.lastGroup, tt.lastLabel, tt.traffic)
			d, tn, s, h := got.GetDevice(), got.GetTenant(), got.GetServices(), got.GetHistory()
			if d.GetId() != "d1" || d.GetModel() != tt.in.Model || d.GetFirmware() != tt.in.Firmware || d.GetAttributes() == nil {
				t.Errorf("device = %v, want d1, %q, %q with attributes (never nil)", d, tt.in.Model, tt.in.Firmware)
			}
			if tn.GetId() != tt.in.Tenant || tn.GetAttributes() == nil || len(tn.GetAttributes()) != len(tt.wantTenantAttrs) {
				t.Errorf("tenant = %v, want %s with attributes %v (never nil)", tn, tt.in.Tenant, tt.wantTenantAttrs)
			}
			for k, v := range tt.wantTenantAttrs {
				if tn.GetAttributes()[k] != v {
					t.Errorf("tenant attribute %s = %q, want %q", k, tn.GetAttributes()[k], v)
				}
			}
			if !slices.Equal(s.GetRequested(), tt.in.Services) || !slices.Equal(s.GetEntitled(), tt.wantEntitled) {
				t.Errorf("services = %v, want requested %v, entitled %v", s, tt.in.Services, tt.wantEntitled)
			}
			if h.GetLastGroup() != tt.wantLastGroup || h.GetLastLabel() != tt.wantLast {
				t.Errorf("history last = %q/%q, want %q/%q", h.GetLastGroup(), h.GetLastLabel(), tt.wantLastGroup, tt.wantLast)
			}
			if h.GetConnectsLastDay() != tt.wantConnects || h.GetMessagesPerDay() != tt.wantMsgs || h.GetBytesPerDay() != tt.wantBytes {
				t.Errorf("history counts = %d connects, %d messages, %d bytes; want %d, %d, %d (rounded)",
					h.GetConnectsLastDay(), h.GetMessagesPerDay(), h.GetBytesPerDay(), tt.wantConnects, tt.wantMsgs, tt.wantBytes)
			}
		})
	}
}
