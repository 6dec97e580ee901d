package e2e

import (
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// summary is one parsed `berth simulate` summary line.
type summary struct {
	fields    map[string]int
	groups    map[string]int
	executors map[string]int
}

func parseSummary(line string) (summary, bool) {
	_, rest, ok := strings.Cut(line, "simulate: ")
	if !ok {
		return summary{}, false
	}
	s := summary{fields: map[string]int{}, groups: map[string]int{}, executors: map[string]int{}}
	for _, f := range strings.Fields(rest) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "groups", "executors":
			m := s.groups
			if k == "executors" {
				m = s.executors
			}
			if v == "-" {
				continue
			}
			for _, kv := range strings.Split(v, ",") {
				name, n, _ := strings.Cut(kv, ":")
				m[name], _ = strconv.Atoi(n)
			}
		default:
			s.fields[k], _ = strconv.Atoi(v)
		}
	}
	return s, true
}

// cluster is a control plane and executors, all real processes.
type cluster struct {
	t         *testing.T
	etcd      string
	pubKey    string
	cp        *proc
	cpAddr    string
	executors map[string]*proc
}

// startCluster starts a control plane and, per group, n executors of the
// given capacity.
func startCluster(t *testing.T, groups, perGroup, execCapacity int) *cluster {
	t.Helper()
	c := &cluster{t: t, etcd: startEtcd(t), executors: map[string]*proc{}}
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "signing.pem"), filepath.Join(dir, "public.pem")
	c.pubKey = pub
	kg := start(t, "keygen", "keygen", "--private", priv, "--public", pub)
	if err := kg.wait(30 * time.Second); err != nil {
		t.Fatalf("keygen: %v", err)
	}
	c.cp = start(t, "controlplane", "controlplane", "--etcd", c.etcd, "--signing-key", priv, "--listen", "127.0.0.1:0")
	c.cpAddr = c.cp.addr()
	for g := 1; g <= groups; g++ {
		ctl(t, c.cpAddr, "group", "put", fmt.Sprintf("group-%d", g), "--capacity", strconv.Itoa(perGroup*execCapacity))
	}
	for g := 1; g <= groups; g++ {
		for i := 1; i <= perGroup; i++ {
			id := fmt.Sprintf("group-%d-exec-%d", g, i)
			c.executors[id] = start(t, id, "executor", "--etcd", c.etcd, "--group", fmt.Sprintf("group-%d", g),
				"--id", id, "--capacity", strconv.Itoa(execCapacity), "--token-public-key", pub,
				"--lease-ttl", "3s", "--refresh", "1s", "--drain-timeout", "20s")
			c.executors[id].addr()
		}
	}
	var ids []string
	for id := range c.executors {
		ids = append(ids, id)
	}
	waitRegistered(t, c.cpAddr, ids...)
	return c
}

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
