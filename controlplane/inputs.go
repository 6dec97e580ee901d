package controlplane

import (
	"maps"
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
// inputs, its tenant's stored attributes and entitlements, and its history
// from the assignment record (or, for a device without one, what it says it
// remembers).
func PolicyInput(snap *registry.Snapshot, deviceID string, in *registry.DeviceInputs, rec registry.Assignment, hasRec bool, prev *controlplanev1.PreviousAssignment) *policyv1.Input {
	t := snap.Tenants[in.Tenant]
	hist := &policyv1.HistoryInput{}
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
