package controlplane

import (
	"maps"
	"slices"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/registry"
)

// inputsOf extracts what the device declared in its request.
func inputsOf(req *controlplanev1.AssignRequest) registry.DeviceInputs {
	sp := req.GetSpec()
	return registry.DeviceInputs{
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

// lastOf is the group and label a device was last in: its assignment
// record's, or for a device without one what it says it remembers.
func lastOf(rec registry.Assignment, hasRec bool, prev *controlplanev1.PreviousAssignment) (group, label string) {
	if hasRec {
		return rec.GroupID, rec.Label
	}
	return prev.GetGroupId(), prev.GetLabel()
}
