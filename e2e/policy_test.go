package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/testutil"
)

// policyDoc is the placement policy of TestPolicyPlacesFleet.
const policyDoc = `
default_label: std
rules:
  - name: gold-tenants
    when: '"tier" in tenant.attributes && tenant.attributes["tier"] == "gold"'
    label: gold
  - name: eu-tenants
    when: '"region" in tenant.attributes && tenant.attributes["region"] == "eu"'
    label: eu
  - name: sensors
    when: device.model == "sensor-x" || "telemetry" in services.requested
    label: sensors
fallbacks:
  eu: {labels: [std]}
sticky: {enabled: true, margin: 0.1}
`

// TestPolicyPlacesFleet runs three control plane replicas, five groups with
// different labels and capacities, and 2,000 devices with varied models,
// tenants and services, and checks that every device landed on a group
// carrying the label the policy gives it, and that groups sharing a label
// are balanced relative to their capacities.
func TestPolicyPlacesFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	const devices = 2000
	c := &cluster{t: t, etcd: startEtcd(t), executors: map[string]*proc{}}
	priv, pub := keygen(t)
	groups := []struct {
		id       string
		labels   string
		capacity int
	}{
		{"g-gold", "gold", 700},
		{"g-std-1", "std,default", 900},
		{"g-std-2", "std,default", 450},
		{"g-sensors", "sensors", 900},
		{"g-eu", "eu", 450},
	}
	var cps []string
	for i := 1; i <= 3; i++ {
		// The rebalancer evens out what placement at connect time leaves
		// uneven (three replicas learn of each other's placements a
		// moment late): thresholds tight enough for the check below.
		p := start(t, fmt.Sprintf("controlplane-%d", i), "controlplane", "--etcd", c.etcd, "--signing-key", priv, "--listen", "127.0.0.1:0", "--open-enrollment",
			"--rebalance-rel-threshold", "0.05", "--rebalance-abs-threshold", "10", "--rebalance-interval", "200ms", "--rebalance-rate", "200")
		cps = append(cps, p.addr())
	}
	cp := strings.Join(cps, ",") // ctl uses the first that answers
	labelsOf := map[string][]string{}
	capOf := map[string]int{}
	for _, g := range groups {
		ctl(t, cp, "group", "put", g.id, "--labels", g.labels, "--capacity", strconv.Itoa(g.capacity))
		labelsOf[g.id] = strings.Split(g.labels, ",")
		capOf[g.id] = g.capacity
	}
	// Tenants: 1 and 3 are gold, 5 is in the EU.
	ctl(t, cp, "tenant", "put", "tenant-1", "--attr", "tier=gold")
	ctl(t, cp, "tenant", "put", "tenant-3", "--attr", "tier=gold,region=eu")
	ctl(t, cp, "tenant", "put", "tenant-5", "--attr", "region=eu", "--services", "print")
	polFile := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, polFile, policyDoc)
	out := ctl(t, cp, "policy", "apply", "-f", polFile)
	if !strings.Contains(out, "policy applied") {
		t.Fatalf("policy apply: %s", out)
	}

	for _, g := range groups {
		id := g.id + "-exec"
		c.executors[id] = start(t, id, "executor", "--etcd", c.etcd, "--group", g.id, "--id", id,
			"--capacity", strconv.Itoa(g.capacity), "--token-public-key", pub, "--lease-ttl", "3s", "--refresh", "1s")
		c.executors[id].addr()
	}
	var ids []string
	for id := range c.executors {
		ids = append(ids, id)
	}
	waitRegistered(t, cp, ids...)

	models := []string{"printer-a", "printer-b", "sensor-x", "printer-c"}
	services := []string{"print", "print+scan", "print", "telemetry", "scan"}
	sim := start(t, "simulate", "simulate", "--controlplane", strings.Join(cps, ","), "--devices", strconv.Itoa(devices),
		"--models", strings.Join(models, ","), "--tenants", "10", "--services", strings.Join(services, ","),
		"--every", "250ms", "--backoff-base", "50ms", "--backoff-max", "1s")
	line := sim.waitLine(90*time.Second, "all devices connected", func(l string) bool {
		s, ok := parseSummary(l)
		return ok && s.fields["connected"] == devices
	})
	t.Logf("connected: %s", line)

	// Every assignment record must agree with the policy, computed here
	// independently of berth's engine: at once, and after the rebalancer
	// has evened out the groups.
	checkRecords := func() map[string]int {
		t.Helper()
		var recs []struct {
			Device string `json:"device"`
			Group  string `json:"group"`
			Label  string `json:"label"`
			Rule   string `json:"rule"`
		}
		if err := json.Unmarshal([]byte(ctl(t, cp, "devices", "-o", "json")), &recs); err != nil {
			t.Fatal(err)
		}
		if len(recs) != devices {
			t.Fatalf("%d assignment records, want %d", len(recs), devices)
		}
		perGroup := map[string]int{}
		wrong := 0
		for _, r := range recs {
			i, err := strconv.Atoi(strings.TrimPrefix(r.Device, "sim-"))
			if err != nil {
				t.Fatalf("device id %q", r.Device)
			}
			want, placed := expectedLabel(i%10, models[i%len(models)], services[i%len(services)])
			if r.Label != want || !slices.Contains(labelsOf[r.Group], placed) {
				if wrong < 10 {
					t.Errorf("device %s (tenant-%d, %s, %s): label %s in group %s (rule %q), want label %s in a group carrying %s",
						r.Device, i%10, models[i%len(models)], services[i%len(services)], r.Label, r.Group, r.Rule, want, placed)
				}
				wrong++
			}
			perGroup[r.Group]++
		}
		if wrong > 0 {
			t.Fatalf("%d of %d devices placed against the policy", wrong, devices)
		}
		return perGroup
	}
	perGroup := checkRecords()
	t.Logf("devices per group at connect: %v", perGroup)
	// Groups sharing a label are balanced relative to capacity.
	spread := func(perGroup map[string]int) float64 {
		u1 := float64(perGroup["g-std-1"]) / float64(capOf["g-std-1"])
		u2 := float64(perGroup["g-std-2"]) / float64(capOf["g-std-2"])
		return math.Abs(u1 - u2)
	}
	testutil.WaitForEvery(t, 60*time.Second, pollEvery, "std groups within 10% of each other's utilization", func() bool {
		perGroup = checkRecords()
		return spread(perGroup) <= 0.10
	})
	t.Logf("devices per group: %v", perGroup)

	// Explain tells the same story for one device.
	ex := ctl(t, cp, "explain", "sim-000001")
	if !strings.Contains(ex, "rule gold-tenants -> label gold") || !strings.Contains(ex, "CHOSEN") {
		t.Errorf("explain sim-000001 does not show the gold rule and a choice:\n%s", ex)
	}

	sim.signal(syscall.SIGINT)
	if err := sim.wait(30 * time.Second); err != nil {
		t.Errorf("simulate exited with %v", err)
	}
}

// expectedLabel is the policy of TestPolicyPlacesFleet written out by hand:
// the assigned label and the label of the group the device must be in.
func expectedLabel(tenant int, model, services string) (label, placed string) {
	switch {
	case tenant == 1 || tenant == 3:
		return "gold", "gold"
	case tenant == 5:
		return "eu", "eu"
	case model == "sensor-x" || slices.Contains(strings.Split(services, "+"), "telemetry"):
		return "sensors", "sensors"
	}
	return "std", "std"
}
