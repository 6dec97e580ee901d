package controlplane

import (
	"maps"
	"slices"

	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/policy"
)

// labelMemo keeps, per device, the label rules' outcome and the inputs it
// was computed from, so that a device that asks again with the same inputs
// under the same policy version skips the rules. The rules are a pure
// function of the inputs (CEL over them, with no clock), so the outcome is
// the one the rules would give. A device whose model, attributes, tenant,
// services or rounded history changed misses, and is evaluated afresh.
// Outcomes with evaluation errors are not kept. The memo is bounded; when
// full, an arbitrary entry is dropped.
type labelMemo struct{ m *boundedMap[memoEntry] }

type memoEntry struct {
	version int64
	in      *policyv1.Input
	match   policy.Match
}

func newLabelMemo(max int) *labelMemo {
	if max <= 0 {
		return nil
	}
	return &labelMemo{m: newBoundedMap[memoEntry](max)}
}

// get returns the remembered outcome for the device if it was computed
// under version from inputs equal to in.
func (c *labelMemo) get(device string, version int64, in *policyv1.Input) (policy.Match, bool) {
	if c == nil {
		return policy.Match{}, false
	}
	e, ok := c.m.get(device)
	if !ok || e.version != version || !sameInput(e.in, in) {
		return policy.Match{}, false
	}
	return e.match, true
}

// put remembers an outcome. in must not be modified afterwards.
func (c *labelMemo) put(device string, version int64, in *policyv1.Input, m policy.Match) {
	if c == nil {
		return
	}
	c.m.put(device, memoEntry{version: version, in: in, match: m})
}

// sameInput reports whether a and b hold the same values in every field the
// rules can read. TestSameInputCoversEveryField keeps it complete.
func sameInput(a, b *policyv1.Input) bool {
	ad, bd := a.GetDevice(), b.GetDevice()
	at, bt := a.GetTenant(), b.GetTenant()
	as, bs := a.GetServices(), b.GetServices()
	ah, bh := a.GetHistory(), b.GetHistory()
	return ad.GetId() == bd.GetId() && ad.GetModel() == bd.GetModel() && ad.GetFirmware() == bd.GetFirmware() &&
		maps.Equal(ad.GetAttributes(), bd.GetAttributes()) &&
		at.GetId() == bt.GetId() && maps.Equal(at.GetAttributes(), bt.GetAttributes()) &&
		slices.Equal(as.GetRequested(), bs.GetRequested()) && slices.Equal(as.GetEntitled(), bs.GetEntitled()) &&
		ah.GetLastGroup() == bh.GetLastGroup() && ah.GetLastLabel() == bh.GetLastLabel() &&
		ah.GetConnectsLastDay() == bh.GetConnectsLastDay() && ah.GetMessagesPerDay() == bh.GetMessagesPerDay() &&
		ah.GetBytesPerDay() == bh.GetBytesPerDay()
}
