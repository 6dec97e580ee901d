package placement

import (
	"fmt"
	"slices"

	"github.com/berthproject/berth/fleet"
	"github.com/berthproject/berth/policy"
)

// ValidatePolicy parses and compiles a policy document (YAML or JSON) and
// lists warnings against snap: labels the policy can assign that no group
// carries. The error wraps policy.ErrInvalid for a bad document.
func ValidatePolicy(doc []byte, snap *fleet.Snapshot) (*policy.Compiled, []string, error) {
	p, err := policy.Parse(doc)
	if err != nil {
		return nil, nil, err
	}
	c, err := policy.Compile(p)
	if err != nil {
		return nil, nil, err
	}
	known := map[string]bool{}
	for _, g := range snap.Groups {
		for _, l := range g.Labels {
			known[l] = true
		}
	}
	var warns []string
	for _, l := range c.UnknownLabels(known) {
		warns = append(warns, fmt.Sprintf("label %q is carried by no group: devices given it will use its fallbacks or be refused", l))
	}
	return c, warns, nil
}

// DryRunResult says what a policy would change for known devices.
type DryRunResult struct {
	// Devices is the number of known devices.
	Devices int
	// LabelChanges counts devices whose label would change.
	LabelChanges int
	// GroupChanges counts devices whose recorded group would no longer be a
	// candidate for them, so they would have to move.
	GroupChanges int
	// ByLabel breaks the counts down by new label, sorted by label.
	ByLabel []LabelCount
}

// LabelCount is one line of a dry run: the devices the policy would give
// Label, and how many of them change label or would have to move.
type LabelCount struct {
	Label                               string
	Devices, LabelChanges, GroupChanges int
}

// DryRun applies pol to every record: the label it would assign, and
// whether the recorded group would still be a candidate. Decisions among
// candidates (balance, affinity) are not counted as moves: they only place
// devices that connect. history returns a device's traffic history as of
// now (nil: none).
func DryRun(snap *fleet.Snapshot, pol *policy.Compiled, records func(func(fleet.Assignment) bool), history func(deviceID string) fleet.History) DryRunResult {
	var res DryRunResult
	by := map[string]*LabelCount{}
	records(func(a fleet.Assignment) bool {
		res.Devices++
		in := a.Inputs
		if in == nil {
			in = &fleet.DeviceInputs{}
		}
		var h fleet.History
		if history != nil {
			h = history(a.DeviceID)
		}
		req := Request{Input: PolicyInput(snap, a.DeviceID, in, a.GroupID, a.Label, h), Weight: in.Weight}
		m, _ := pol.Label(req.Input)
		lc := by[m.Label]
		if lc == nil {
			lc = &LabelCount{Label: m.Label}
			by[m.Label] = lc
		}
		lc.Devices++
		if m.Label != a.Label {
			res.LabelChanges++
			lc.LabelChanges++
		}
		if !stillCandidate(snap, pol, m.Label, a.GroupID) {
			res.GroupChanges++
			lc.GroupChanges++
		}
		return true
	})
	for _, lc := range by {
		res.ByLabel = append(res.ByLabel, *lc)
	}
	slices.SortFunc(res.ByLabel, func(a, b LabelCount) int {
		switch {
		case a.Label < b.Label:
			return -1
		case a.Label > b.Label:
			return 1
		}
		return 0
	})
	return res
}

// stillCandidate reports whether group would be among the candidates of a
// device with label: the first label of the chain that has any usable group
// must be one group carries, and the group itself must be usable. Capacity
// is ignored: the device already counts in it.
func stillCandidate(snap *fleet.Snapshot, pol *policy.Compiled, label, group string) bool {
	for _, l := range pol.Chain(label) {
		usable := false
		for _, g := range snap.SortedGroups() {
			if !g.HasLabel(l) {
				continue
			}
			execs := snap.GroupExecutors(g.ID)
			c, _ := evaluate(&g, execs, NoPending{}, pol, 0, make([]Endpoint, 0, len(execs)))
			if c.Dropped == "" || c.Dropped == DroppedFull {
				usable = true
				if g.ID == group {
					return true
				}
			}
		}
		if usable {
			return false
		}
	}
	return false
}

// Explain decides again for a recorded device with pol and snap, and its
// traffic history as of now, without reserving anything, and returns the
// decision with every candidate. A decision error (no usable group) is
// returned with the partial decision.
func Explain(snap *fleet.Snapshot, pol *policy.Compiled, rec fleet.Assignment, traffic fleet.History) (Decision, error) {
	in := rec.Inputs
	if in == nil {
		in = &fleet.DeviceInputs{}
	}
	return Decide(snap, pol, Request{Input: PolicyInput(snap, rec.DeviceID, in, rec.GroupID, rec.Label, traffic), Weight: in.Weight}, nil)
}
