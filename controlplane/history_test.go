package controlplane_test

import (
	"context"
	"testing"
	"time"

	"github.com/berthproject/berth/controlplane"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/registry"
)

// A device's traffic history reaches the policy's rules and, in load mode,
// its weight: a heavy sender is labelled by a history rule and carries a
// heavier token; a device without history weighs 1.
func TestAssignUsesHistory(t *testing.T) {
	groups, execs := twoGroups()
	groups[1].Labels = []string{"chatty"}
	f := start(t, controlplane.DefaultConfig(), groups, execs)
	doc := []byte(`{"defaultLabel": "default", "balance": {"mode": "BALANCE_MODE_LOAD"},
	  "rules": [{"name": "heavy", "when": "history.messages_per_day > 5000 && history.connects_last_day >= 2", "label": "chatty"}]}`)
	f.cache.mu.Lock()
	f.cache.snap = f.cache.snap.WithPolicy(&registry.StoredPolicy{Document: doc, Version: 7}, nil)
	f.cache.history = map[string]registry.History{
		// Written a moment ago: decay changes nothing that matters.
		"heavy": {Connects: 3, Messages: 9000, Bytes: 1 << 20, At: time.Now()},
		"light": {Connects: 3, Messages: 10, At: time.Now()},
	}
	f.cache.mu.Unlock()

	ctx := context.Background()
	for _, tc := range []struct {
		device, label string
		weight        float64
	}{
		{"heavy", "chatty", placement.LoadWeight(registry.History{Messages: 9000})},
		{"light", "default", 1},
		{"new", "default", 1},
	} {
		resp, err := f.client.Assign(ctx, &controlplanev1.AssignRequest{DeviceId: tc.device})
		if err != nil {
			t.Fatalf("%s: %v", tc.device, err)
		}
		if got := resp.GetDestination().GetLabel(); got != tc.label {
			t.Errorf("%s: label %s (%s), want %s", tc.device, got, resp.GetReason(), tc.label)
		}
		c, err := f.verifier.Verify(resp.GetDestination().GetToken())
		if err != nil {
			t.Fatal(err)
		}
		if c.Weight != tc.weight {
			t.Errorf("%s: token weight %v, want %v", tc.device, c.Weight, tc.weight)
		}
	}
	if w := placement.LoadWeight(registry.History{Messages: 9000}); w < 9 || w > 11 {
		t.Errorf("weight of 9000 messages a day = %v, want about 10", w)
	}
}

// A device asking again gets the label its inputs give now: the label memo
// misses when its history or the policy version changed.
func TestAssignLabelFollowsChangedInputs(t *testing.T) {
	groups, execs := twoGroups()
	groups[1].Labels = []string{"chatty"}
	f := start(t, controlplane.DefaultConfig(), groups, execs)
	setPolicy := func(version int64, threshold string) {
		doc := []byte(`{"defaultLabel": "default", "rules": [{"name": "heavy", "when": "history.messages_per_day > ` + threshold + `", "label": "chatty"}]}`)
		f.cache.mu.Lock()
		f.cache.snap = f.cache.snap.WithPolicy(&registry.StoredPolicy{Document: doc, Version: version}, nil)
		f.cache.mu.Unlock()
	}
	setMessages := func(n float64) {
		f.cache.mu.Lock()
		f.cache.history = map[string]registry.History{"dev": {Connects: 1, Messages: n, At: time.Now()}}
		f.cache.mu.Unlock()
	}
	label := func() string {
		t.Helper()
		resp, err := f.client.Assign(context.Background(), &controlplanev1.AssignRequest{DeviceId: "dev"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetDestination().GetLabel()
	}
	setPolicy(7, "5000")
	setMessages(10)
	for range 2 {
		if got := label(); got != "default" {
			t.Fatalf("quiet device: label %s, want default", got)
		}
	}
	setMessages(9000)
	if got := label(); got != "chatty" {
		t.Errorf("after its history grew: label %s, want chatty", got)
	}
	setPolicy(8, "100000")
	if got := label(); got != "default" {
		t.Errorf("under a policy with a higher threshold: label %s, want default", got)
	}
}
