package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthproject/berth/internal/testutil"
)

// TestCtlRegistry runs the break-glass commands against etcd, with no
// control plane up.
func TestCtlRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("embedded etcd")
	}
	etcd := testutil.StartEtcd(t).Endpoint()
	ctl := func(args ...string) (string, string) {
		t.Helper()
		out, errOut, err := berth(t, append([]string{"ctl", "registry", "--etcd", etcd}, args...)...)
		if err != nil {
			t.Fatalf("berth ctl registry %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return out, errOut
	}
	ctl("group", "put", "g1", "--labels", "default,eu", "--capacity", "500")
	var groups []struct {
		ID       string   `json:"id"`
		Labels   []string `json:"labels"`
		Capacity int      `json:"capacity"`
		State    string   `json:"state"`
	}
	out, _ := ctl("groups", "-o", "json")
	if err := json.Unmarshal([]byte(out), &groups); err != nil {
		t.Fatal(err)
	}
	if len(groups) != 1 || groups[0].ID != "g1" || groups[0].Capacity != 500 || len(groups[0].Labels) != 2 || groups[0].State != "active" {
		t.Errorf("groups = %+v, want g1 with 2 labels, capacity 500, active", groups)
	}
	if out, _ := ctl("groups"); !strings.Contains(out, "GROUP") || !strings.Contains(out, "default,eu") {
		t.Errorf("groups table:\n%s", out)
	}
	for _, list := range []string{"executors", "devices"} {
		if out, _ := ctl(list, "-o", "json"); strings.TrimSpace(out) != "[]" {
			t.Errorf("%s of an empty cluster = %q, want []", list, out)
		}
	}
	if out, _, err := berth(t, "ctl", "registry", "--etcd", etcd, "--prefix", "/other", "groups", "-o", "json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("groups under another prefix = %q, want []", out)
	}
	if _, _, err := berth(t, "ctl", "registry", "--etcd", etcd, "group", "put", "bad/id"); err == nil || !strings.Contains(err.Error(), "group id") {
		t.Errorf("group put bad/id = %v, want an error about the group id", err)
	}
	if out, _ := ctl("group", "drain", "g1"); !strings.Contains(out, "group g1 draining") {
		t.Errorf("group drain: %q", out)
	}
	if out, _ := ctl("group", "undrain", "g1"); !strings.Contains(out, "group g1 active") {
		t.Errorf("group undrain: %q", out)
	}

	// Policies are validated here, before anything is stored.
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(bad, []byte("default_label: default\nrules:\n  - {name: r, when: 'device.nope', label: x}\nfallbacks: {a: {labels: [b]}, b: {labels: [a]}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, []byte("default_label: default\nrules:\n  - {name: eu, when: 'device.model == \"EU\"', label: eu}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := berth(t, "ctl", "registry", "--etcd", etcd, "policy", "apply", "-f", bad)
	if err == nil || !strings.Contains(err.Error(), "rules[0] (r).when") || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("apply of a bad policy = %v, want both problems named", err)
	}
	if out, _ := ctl("policy", "get"); !strings.Contains(out, "no policy applied") {
		t.Errorf("policy get after a refused apply:\n%s", out)
	}
	if out, _ := ctl("policy", "apply", "-f", good, "--migrate"); !strings.Contains(out, "policy applied: version") || !strings.Contains(out, "rebalancer moves") {
		t.Errorf("apply of a good policy:\n%s", out)
	}
	if out, _ := ctl("policy", "get"); !strings.Contains(out, "device.model == \"EU\"") {
		t.Errorf("policy get:\n%s", out)
	}

	ctl("tenant", "put", "acme", "--attr", "tier=gold", "--services", "print,scan")
	if out, _ := ctl("tenants"); !strings.Contains(out, "tier=gold") || !strings.Contains(out, "print,scan") {
		t.Errorf("tenants:\n%s", out)
	}

	// An executor nobody knows is refused (exit 3), and nothing is marked.
	if _, _, err := berth(t, "ctl", "registry", "--etcd", etcd, "executor", "drain", "ex-1"); exitCode(err) != exitNotFound || !strings.Contains(err.Error(), "not registered") {
		t.Errorf("executor drain of an unknown executor = %v (exit %d), want not found (exit %d)", err, exitCode(err), exitNotFound)
	}
	if out, _ := ctl("executor", "undrain", "ex-1"); !strings.Contains(out, "was not drained") {
		t.Errorf("undrain after a refused drain: %q, want no mark", out)
	}
	out, warn := ctl("executor", "drain", "ex-1", "--allow-unregistered")
	if !strings.Contains(out, "executor ex-1 drained") || !strings.Contains(warn, "not registered") {
		t.Errorf("executor drain: %q, %q", out, warn)
	}
	if out, _ := ctl("executor", "undrain", "ex-1"); !strings.Contains(out, "undrained") {
		t.Errorf("executor undrain: %q", out)
	}
	if out, _ := ctl("executor", "undrain", "ex-1"); !strings.Contains(out, "was not drained") {
		t.Errorf("executor undrain twice: %q", out)
	}
	ctl("rebalance", "pause", "--reason", "upgrade")
	if out, _ := ctl("rebalance", "status"); !strings.Contains(out, "yes, by") || !strings.Contains(out, "upgrade") {
		t.Errorf("status after pause:\n%s", out)
	}
	ctl("rebalance", "resume")
	if out, _ := ctl("rebalance", "status"); !strings.Contains(out, "paused    no") {
		t.Errorf("status after resume:\n%s", out)
	}
}
