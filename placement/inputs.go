package placement

import (
	"math"

	"github.com/berthproject/berth/fleet"
	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
)

// PolicyInput builds what policy expressions see for a device: its declared
// inputs, its tenant's stored attributes and entitlements, and its history:
// the group and label it was last in (from its assignment record, or, for a
// device without one, what it says it remembers; "" when neither), traffic
// and connects from its history record (decayed to the moment of the
// decision; zero when it has none).
func PolicyInput(snap *fleet.Snapshot, deviceID string, in *fleet.DeviceInputs, lastGroup, lastLabel string, traffic fleet.History) *policyv1.Input {
	t := snap.Tenants[in.Tenant]
	attrs := in.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	tattrs := t.Attributes
	if tattrs == nil {
		tattrs = map[string]string{}
	}
	// The five messages in one allocation: an Input is built on every
	// Assign.
	b := &inputMessages{
		device:   policyv1.DeviceInput{Id: deviceID, Model: in.Model, Firmware: in.Firmware, Attributes: attrs},
		tenant:   policyv1.TenantInput{Id: in.Tenant, Attributes: tattrs},
		services: policyv1.ServicesInput{Requested: in.Services, Entitled: t.Services},
		history: policyv1.HistoryInput{
			LastGroup:       lastGroup,
			LastLabel:       lastLabel,
			ConnectsLastDay: int64(math.Round(traffic.Connects)),
			MessagesPerDay:  int64(math.Round(traffic.Messages)),
			BytesPerDay:     int64(math.Round(traffic.Bytes)),
		},
	}
	b.input.Device, b.input.Tenant, b.input.Services, b.input.History = &b.device, &b.tenant, &b.services, &b.history
	return &b.input
}

// inputMessages are the messages of one policy Input.
type inputMessages struct {
	input    policyv1.Input
	device   policyv1.DeviceInput
	tenant   policyv1.TenantInput
	services policyv1.ServicesInput
	history  policyv1.HistoryInput
}

// MessagesPerWeightUnit is how many messages a day add 1 to a device's load
// weight: weight = 1 + messages per day / MessagesPerWeightUnit.
const MessagesPerWeightUnit = 1000

// LoadWeight is a device's load weight from its history (1 without one).
// It moves in steps of about 9% (eighths of a power of two), so that the
// small drift of a decaying counter does not rewrite the device's
// assignment record on every Assign.
func LoadWeight(traffic fleet.History) float64 {
	w := 1 + max(traffic.Messages, 0)/MessagesPerWeightUnit
	return math.Exp2(math.Round(8*math.Log2(w)) / 8)
}
