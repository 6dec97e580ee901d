package e2e

import (
	"strings"
	"testing"
)

// TestConnectBurstCountsExact puts a burst of devices on real processes
// into two groups of unequal size whose room barely exceeds the fleet:
// 300 devices, capacities 220 and 110. Counted twice while they connect,
// devices would be refused ("every usable group is full") while their
// groups have room; missed, a group would fill ahead of its share. With
// reservations that end exactly when an executor's count includes them,
// every device connects on its first Assign and the groups end at their
// capacity shares.
func TestConnectBurstCountsExact(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	const devices = 300
	c := startCluster(t, 2, 2, 150)
	ctl(t, c.cpAddr, "group", "put", "group-1", "--capacity", "220")
	ctl(t, c.cpAddr, "group", "put", "group-2", "--capacity", "110")
	sim, line := startSimulate(t, c.cpAddr, devices)
	t.Logf("connected: %s", line)
	s, _ := parseSummary(line)
	if s.fields["connects"] != devices {
		t.Errorf("%d stream establishments for %d devices, want one each", s.fields["connects"], devices)
	}
	// Shares of 220:110: 200 and 100, each within 3 devices (1% of the
	// fleet: devices that connected to another endpoint of their answer
	// are counted twice until their reservation ages out).
	for g, share := range map[string]int{"group-1": 200, "group-2": 100} {
		if d := s.groups[g] - share; d < -3 || d > 3 {
			t.Errorf("%s holds %d devices, want its share %d±3 (%v)", g, s.groups[g], share, s.groups)
		}
	}
	if log := sim.stderr(); strings.Contains(log, "every usable group is full") {
		i := strings.Index(log, "every usable group is full")
		t.Errorf("a device was refused as if its groups were full, with room for %d more:\n%s",
			330-devices, log[max(0, strings.LastIndex(log[:i], "\n")):min(len(log), i+200)])
	}
}
