package device

import (
	"maps"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
)

// Spec describes a device's hardware and software. The control plane's
// placement policy sees it as device.model, device.firmware and
// device.attributes. Every field is optional; the zero Spec sends none.
//
// The control plane refuses an Assign whose model or firmware is longer than
// 128 bytes, or whose attributes number more than 64, have an empty key or
// one longer than 128 bytes, or a value longer than 1024 bytes
// (INVALID_ARGUMENT, reported as StateChange.Err).
type Spec struct {
	// Model is the model name, for example "HL-L2350DW".
	Model string
	// Firmware is the firmware version, for example "1.4.2".
	Firmware string
	// Attributes are free-form hardware attributes: site, region, hardware
	// revision... [Connect] copies the map, so the caller may change it
	// afterwards.
	Attributes map[string]string
}

// IsZero reports whether s describes nothing.
func (s Spec) IsZero() bool {
	return s.Model == "" && s.Firmware == "" && len(s.Attributes) == 0
}

// clone returns s with its own copy of Attributes.
func (s Spec) clone() Spec {
	s.Attributes = maps.Clone(s.Attributes)
	return s
}

// proto converts s to the wire type; the zero Spec becomes nil, so that an
// Assign without a spec carries none.
func (s Spec) proto() *controlplanev1.DeviceSpec {
	if s.IsZero() {
		return nil
	}
	return &controlplanev1.DeviceSpec{Model: s.Model, Firmware: s.Firmware, Attributes: s.Attributes}
}
