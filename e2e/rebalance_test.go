package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/testutil"
)

// rbRate is the rebalancer's move rate in TestRebalance.
const rbRate = 60

// TestRebalance runs two control plane replicas with the rebalancer, four
// groups and 1,000 simulated devices, while a service sends messages to
// them, and moves the fleet on purpose four times: a policy applied with
// migrate relabels one model (exactly those devices move), a new group
// fills to its fair share (never faster than the move rate), a drained
// group empties with every device connected elsewhere, and the leading
// replica is killed mid-drain (the other finishes). No acknowledged
// message is lost on the way.
func TestRebalance(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	const devices = 1000
	c := &cluster{t: t, etcd: startEtcd(t), executors: map[string]*proc{}}
	priv, pub := keygen(t)
	dir := t.TempDir()
	cps := map[string]*proc{}
	var addrs []string
	for _, id := range []string{"cp-1", "cp-2"} {
		cps[id] = start(t, id, "controlplane", "--etcd", c.etcd, "--signing-key", priv, "--listen", "127.0.0.1:0", "--open-enrollment", "--replica-id", id,
			"--rebalance-rate", strconv.Itoa(rbRate), "--rebalance-rel-threshold", "0.1", "--rebalance-abs-threshold", "10",
			"--rebalance-min-interval", "5s", "--rebalance-interval", "200ms", "--rebalance-lease-ttl", "2s")
		addrs = append(addrs, cps[id].addr())
	}
	cp := strings.Join(addrs, ",") // ctl uses the first that answers
	ctl(t, cp, "group", "put", "g1", "--labels", "std", "--capacity", "1000")
	ctl(t, cp, "group", "put", "g2", "--labels", "std", "--capacity", "1000")
	ctl(t, cp, "group", "put", "s", "--labels", "sensors", "--capacity", "1000")
	polFile := filepath.Join(dir, "policy.yaml")
	writeFile(t, polFile, "default_label: std\n")
	ctl(t, cp, "policy", "apply", "-f", polFile)

	startExec := func(g string) {
		id := g + "-exec"
		c.executors[id] = start(t, id, "executor", "--etcd", c.etcd, "--group", g, "--id", id, "--capacity", "1000",
			"--token-public-key", pub, "--lease-ttl", "3s", "--refresh", "1s")
		c.executors[id].addr()
		waitRegistered(t, cp, id)
	}
	for _, g := range []string{"g1", "g2", "s"} {
		startExec(g)
	}
	sim := start(t, "simulate", "simulate", "--controlplane", strings.Join(addrs, ","), "--devices", strconv.Itoa(devices),
		"--models", "printer-a,printer-b,sensor-x", "--every", "200ms", "--backoff-base", "50ms", "--backoff-max", "1s")
	connected := func(cond func(summary) bool) func(string) bool {
		return func(l string) bool {
			s, ok := parseSummary(l)
			return ok && s.fields["connected"] == devices && cond(s)
		}
	}
	line := sim.waitLine(60*time.Second, "all devices connected", connected(func(summary) bool { return true }))
	t.Logf("connected: %s", line)

	// A service sends to random devices all along, through either replica.
	sender := startSender(t, addrs, devices)

	// 1. A policy applied with migrate puts sensor-x on label sensors:
	// exactly those devices (every third) move, to group s.
	sensors := 0
	for i := range devices {
		if i%3 == 2 {
			sensors++
		}
	}
	writeFile(t, polFile, "default_label: std\nrules:\n  - {name: sensors, when: 'device.model == \"sensor-x\"', label: sensors}\n")
	if out := ctl(t, cp, "policy", "apply", "-f", polFile, "--migrate"); !strings.Contains(out, "rebalancer moves") {
		t.Fatalf("policy apply --migrate: %s", out)
	}
	line = sim.waitLine(60*time.Second, "every sensor in group s", connected(func(s summary) bool { return s.groups["s"] == sensors }))
	t.Logf("after the policy: %s", line)
	recs := rbRecords(t, cp)
	for _, r := range recs {
		i, _ := strconv.Atoi(strings.TrimPrefix(r.Device, "sim-"))
		isSensor := i%3 == 2
		movedForPolicy := strings.HasPrefix(r.Reason, "rebalance (policy)")
		if isSensor && (r.Group != "s" || r.Label != "sensors" || !movedForPolicy) {
			t.Errorf("sensor %s: group %s label %s reason %q; want moved to s for the policy", r.Device, r.Group, r.Label, r.Reason)
		}
		if !isSensor && movedForPolicy {
			t.Errorf("device %s is no sensor but was moved for the policy: %+v", r.Device, r)
		}
	}

	// 2. A new std group fills to its fair share: 667 std devices over
	// three groups, fair 222, threshold 22.
	ctl(t, cp, "group", "put", "g3", "--labels", "std", "--capacity", "1000")
	startExec("g3")
	within := func(s summary) bool {
		std := s.groups["g1"] + s.groups["g2"] + s.groups["g3"]
		fair := float64(std) / 3
		for _, g := range []string{"g1", "g2", "g3"} {
			if d := float64(s.groups[g]) - fair; d > max(10, 0.1*fair) || -d > max(10, 0.1*fair) {
				return false
			}
		}
		return true
	}
	line = sim.waitLine(60*time.Second, "std groups within the threshold", connected(within))
	t.Logf("after adding g3: %s", line)

	// 3. Drain g1 and kill the leading replica mid-drain: the other
	// leads, finishes, and g1 empties with every device connected
	// elsewhere.
	ctl(t, cp, "group", "drain", "g1")
	var st rbStatus
	underWay, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := testutil.Poll(underWay, pollEvery, func() bool {
		st = rbStatusOf(t, cp)
		moved, _ := strconv.Atoi(st.Progress.Moved)
		total, _ := strconv.Atoi(st.Plan.Total)
		return total > 0 && moved >= 30 && cps[st.Leader] != nil
	}); err != nil {
		t.Fatalf("the drain did not get under way: %+v", st)
	}
	leader := st.Leader
	t.Logf("killing the leader %s mid-drain", leader)
	cps[leader].signal(syscall.SIGKILL)
	line = sim.waitLine(60*time.Second, "g1 empty, every device connected", connected(func(s summary) bool { return s.groups["g1"] == 0 }))
	t.Logf("after the drain: %s", line)
	st = rbStatusOf(t, cp)
	if st.Leader == leader || st.Leader == "" {
		t.Errorf("leader after the kill = %q, want the other replica", st.Leader)
	}

	// No window of one second saw more moves than the rate (the limiter
	// lets one more through at the start of a window).
	recs = rbRecords(t, cp)
	var at []time.Time
	for _, r := range recs {
		if !r.MovedAt.IsZero() {
			at = append(at, r.MovedAt)
		}
		if r.Group == "g1" {
			t.Errorf("device %s still recorded in drained g1", r.Device)
		}
	}
	if m := maxInWindow(at, time.Second); m > rbRate+1 {
		t.Errorf("%d moves within one second; the rate is %d", m, rbRate)
	}
	t.Logf("%d devices moved at least once; at most %d moves in a second", len(at), maxInWindow(at, time.Second))

	// Every message the devices acknowledged reached them: the fleet
	// counts each message it took once.
	delivered, attempted := sender.stop()
	sim.signal(syscall.SIGINT)
	if err := sim.wait(30 * time.Second); err != nil {
		t.Errorf("simulate exited with %v", err)
	}
	final := sim.waitLine(10*time.Second, "final summary", func(l string) bool { return strings.Contains(l, "final") })
	s, _ := parseSummary(final)
	// Received counts what the devices' application was handed, acked
	// on its stream or not (an Ack on the stream a device just left fails;
	// the executor's redelivery on the new one is dropped as a duplicate
	// and acked by the SDK).
	if got := s.fields["received"]; got < delivered || got > attempted {
		t.Errorf("devices were handed %d messages; %d were acknowledged and %d sent", got, delivered, attempted)
	}
	t.Logf("messages: %d sent, %d acknowledged, %d handed to devices (%d acked on the stream that brought them)", attempted, delivered, s.fields["received"], s.fields["messages"])
}

// TestExecutorDrain: `berth ctl executor drain` empties one executor while
// it keeps running: the rebalancer moves its devices to the other executor
// of the group, none is lost, and undrain makes it take devices again.
func TestExecutorDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	const devices = 100
	c := startCluster(t, 1, 2, 200)
	sim := start(t, "simulate", "simulate", "--controlplane", c.cpAddr, "--devices", strconv.Itoa(devices),
		"--every", "200ms", "--backoff-base", "50ms", "--backoff-max", "1s")
	const drained, other = "group-1-exec-1", "group-1-exec-2"
	line := sim.waitLine(60*time.Second, "devices on both executors", func(l string) bool {
		s, ok := parseSummary(l)
		return ok && s.fields["connected"] == devices && s.executors[drained] > 0 && s.executors[other] > 0
	})
	t.Logf("before: %s", line)

	out := ctl(t, c.cpAddr, "executor", "drain", drained)
	t.Logf("drain: %s", strings.TrimSpace(out))
	line = sim.waitLine(60*time.Second, drained+" empty, every device connected", func(l string) bool {
		s, ok := parseSummary(l)
		return ok && s.fields["connected"] == devices && s.executors[drained] == 0 && s.executors[other] == devices
	})
	t.Logf("after the drain: %s", line)
	// marked reads the executors' records: registered, and drain-marked.
	marked := func() map[string]bool {
		var es []struct {
			ID          string `json:"id"`
			DrainMarked bool   `json:"drain_marked"`
		}
		if err := json.Unmarshal([]byte(ctl(t, c.cpAddr, "executors", "-o", "json")), &es); err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, e := range es {
			m[e.ID] = e.DrainMarked
		}
		return m
	}
	if d, ok := marked()[drained]; !ok || !d {
		t.Errorf("%s after the drain: registered %v, drain-marked %v; want it registered and marked", drained, ok, d)
	}
	select {
	case <-c.executors[drained].done:
		t.Errorf("the drained executor exited (%v); a drain must not stop it", c.executors[drained].err)
	default:
	}

	ctl(t, c.cpAddr, "executor", "undrain", drained)
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, drained+" no longer drain-marked", func() bool {
		d, ok := marked()[drained]
		return ok && !d
	})
}
