package e2e

import (
	"math"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFleetSurvivesExecutorLoss is the walking skeleton end to end: 300
// devices connect through Assign and balance over two groups; a kill -9 of
// one executor moves its devices to others; a SIGTERM of another drains it
// with every device reconnected elsewhere.
func TestFleetSurvivesExecutorLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	const devices = 300
	c := startCluster(t, 2, 2, 150)
	sim := start(t, "simulate", "simulate", "--controlplane", c.cpAddr, "--devices", strconv.Itoa(devices),
		"--every", "200ms", "--backoff-base", "50ms", "--backoff-max", "1s")

	allConnected := func(avoid ...string) func(string) bool {
		return func(line string) bool {
			s, ok := parseSummary(line)
			if !ok || s.fields["connected"] != devices {
				return false
			}
			for _, a := range avoid {
				if s.executors[a] != 0 {
					return false
				}
			}
			return true
		}
	}

	line := sim.waitLine(60*time.Second, "all devices connected", allConnected())
	s, _ := parseSummary(line)
	t.Logf("connected: %s", line)
	u1, u2 := float64(s.groups["group-1"])/300, float64(s.groups["group-2"])/300
	if math.Abs(u1-u2) > 0.10 {
		t.Errorf("group utilization %.2f vs %.2f: more than 10%% apart (%v)", u1, u2, s.groups)
	}
	out := ctl(t, c.cpAddr, "devices", "-o", "json")
	if n := strings.Count(out, `"device"`); n != devices {
		t.Errorf("ctl devices lists %d assignment records, want %d", n, devices)
	}

	// kill -9 one executor: its devices must land on others.
	victim := "group-1-exec-1"
	if s.executors[victim] == 0 {
		t.Fatalf("%s holds no device before the kill: %v", victim, s.executors)
	}
	c.executors[victim].signal(syscall.SIGKILL)
	line = sim.waitLine(60*time.Second, "all devices connected without "+victim, allConnected(victim))
	t.Logf("after kill -9 of %s: %s", victim, line)

	// SIGTERM another: it drains, every device reconnects elsewhere, and it
	// exits cleanly.
	drained := "group-2-exec-1"
	s, _ = parseSummary(line)
	if s.executors[drained] == 0 {
		t.Fatalf("%s holds no device before the drain: %v", drained, s.executors)
	}
	c.executors[drained].signal(syscall.SIGTERM)
	if err := c.executors[drained].wait(60 * time.Second); err != nil {
		t.Errorf("%s exited with %v after SIGTERM, want a clean exit", drained, err)
	}
	line = sim.waitLine(60*time.Second, "all devices connected without "+victim+" and "+drained, allConnected(victim, drained))
	t.Logf("after SIGTERM of %s: %s", drained, line)

	sim.signal(syscall.SIGINT)
	if err := sim.wait(30 * time.Second); err != nil {
		t.Errorf("simulate exited with %v after SIGINT", err)
	}
}
