package controlplane

import (
	"maps"
	"math"
	"slices"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/registry"
)

// inputsOf extracts what the device declared in its request.
func inputsOf(req *controlplanev1.AssignRequest) *registry.DeviceInputs {
	sp := req.GetSpec()
	return &registry.DeviceInputs{
		Model:      sp.GetModel(),
		Firmware:   sp.GetFirmware(),
		Attributes: sp.GetAttributes(),
		Tenant:     req.GetTenantId(),
		User:       req.GetUserId(),
		Services:   req.GetServices(),
		Weight:     1,
	}
}

// sameInputs reports whether a recorded device's inputs are unchanged.
func sameInputs(a, b *registry.DeviceInputs) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Model == b.Model && a.Firmware == b.Firmware && a.Tenant == b.Tenant && a.User == b.User &&
		a.Weight == b.Weight && maps.Equal(a.Attributes, b.Attributes) && slices.Equal(a.Services, b.Services)
}

// PolicyInput builds what policy expressions see for a device: its declared
// inputs, its tenant's stored attributes and entitlements, and its history:
// last group and label from the assignment record (or, for a device without
// one, what it says it remembers), traffic and connects from its history
// record (decayed to the moment of the decision; zero when it has none).
func PolicyInput(snap *registry.Snapshot, deviceID string, in *registry.DeviceInputs, rec registry.Assignment, hasRec bool, prev *controlplanev1.PreviousAssignment, traffic registry.History) *policyv1.Input {
	t := snap.Tenants[in.Tenant]
	hist := &policyv1.HistoryInput{
		ConnectsLastDay: int64(math.Round(traffic.Connects)),
		MessagesPerDay:  int64(math.Round(traffic.Messages)),
		BytesPerDay:     int64(math.Round(traffic.Bytes)),
	}
	if hasRec {
		hist.LastGroup, hist.LastLabel = rec.GroupID, rec.Label
	} else if prev != nil {
		hist.LastGroup, hist.LastLabel = prev.GetGroupId(), prev.GetLabel()
	}
	attrs := in.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	tattrs := t.Attributes
	if tattrs == nil {
		tattrs = map[string]string{}
	}
	return &policyv1.Input{
		Device:   &policyv1.DeviceInput{Id: deviceID, Model: in.Model, Firmware: in.Firmware, Attributes: attrs},
		Tenant:   &policyv1.TenantInput{Id: in.Tenant, Attributes: tattrs},
		Services: &policyv1.ServicesInput{Requested: in.Services, Entitled: t.Services},
		History:  hist,
	}
}

// MessagesPerWeightUnit is how many messages a day add 1 to a device's load
// weight: weight = 1 + messages per day / MessagesPerWeightUnit.
const MessagesPerWeightUnit = 1000

// LoadWeight is a device's load weight from its history (1 without one).
// It moves in steps of about 9% (eighths of a power of two), so that the
// small drift of a decaying counter does not rewrite the device's
// assignment record on every Assign.
func LoadWeight(traffic registry.History) float64 {
	w := 1 + max(traffic.Messages, 0)/MessagesPerWeightUnit
	return math.Exp2(math.Round(8*math.Log2(w)) / 8)
}
