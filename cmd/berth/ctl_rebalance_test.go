package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthproject/berth/internal/testutil"
)

func TestCtlRebalance(t *testing.T) {
	if testing.Short() {
		t.Skip("embedded etcd")
	}
	cp := startControlPlane(t)
	ctl := func(args ...string) (string, string) {
		t.Helper()
		out, errOut, err := berth(t, append([]string{"ctl", "--controlplane", cp.addr}, args...)...)
		if err != nil {
			t.Fatalf("berth ctl %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return out, errOut
	}
	ctl("group", "put", "g1", "--capacity", "10")
	if out, _ := ctl("group", "drain", "g1"); !strings.Contains(out, "group g1 draining") {
		t.Errorf("group drain: %q", out)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "g1 listed draining", func() bool {
		out, _ := ctl("groups")
		return strings.Contains(out, "draining")
	})
	if out, _ := ctl("group", "undrain", "g1"); !strings.Contains(out, "group g1 active") {
		t.Errorf("group undrain: %q", out)
	}
	if _, _, err := berth(t, "ctl", "--controlplane", cp.addr, "group", "drain", "nope"); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("group drain nope: err = %v, want not found", err)
	}

	// An executor nobody knows is refused (exit 3), and nothing is marked.
	if _, _, err := berth(t, "ctl", "--controlplane", cp.addr, "executor", "drain", "ex-1"); exitCode(err) != exitNotFound || !strings.Contains(err.Error(), "not registered") {
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

	if out, _ := ctl("rebalance", "status"); !strings.Contains(out, "leader") || !strings.Contains(out, "none") || !strings.Contains(out, "paused    no") {
		t.Errorf("status without a rebalancer:\n%s", out)
	}
	ctl("rebalance", "pause", "--reason", "upgrade")
	if out, _ := ctl("rebalance", "status"); !strings.Contains(out, "yes, by") || !strings.Contains(out, "upgrade") {
		t.Errorf("status after pause:\n%s", out)
	}
	out, _ = ctl("rebalance", "status", "-o", "json")
	var st struct {
		Paused       bool   `json:"paused"`
		PausedReason string `json:"pausedReason"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || !st.Paused || st.PausedReason != "upgrade" {
		t.Errorf("status -o json = %s (%v), want paused for upgrade", out, err)
	}
	ctl("rebalance", "resume")
	if out, _ := ctl("rebalance", "status"); !strings.Contains(out, "paused    no") {
		t.Errorf("status after resume:\n%s", out)
	}

	doc := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(doc, []byte("default_label: default\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := ctl("policy", "apply", "-f", doc, "--migrate"); !strings.Contains(out, "the rebalancer moves") {
		t.Errorf("policy apply --migrate: %q", out)
	}
}
