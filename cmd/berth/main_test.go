package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/berthproject/berth/internal/testutil"
)

func TestMain(m *testing.M) {
	// A developer's own berth dev context must not steer these tests;
	// the tests of the context file name theirs.
	os.Setenv(contextEnv, "off")
	goleak.VerifyTestMain(m)
}

// berth runs the command line in-process and returns stdout and stderr.
func berth(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	err := run(ctx, args, &out, &errb)
	return out.String(), errb.String(), err
}

// TestCtl runs the group, policy, tenant and explain commands against a
// running control plane.
func TestCtl(t *testing.T) {
	if testing.Short() {
		t.Skip("embedded etcd")
	}
	cp := startControlPlane(t)
	ctl := func(args ...string) string {
		t.Helper()
		out, errOut, err := berth(t, append([]string{"ctl", "--controlplane", cp.addr}, args...)...)
		if err != nil {
			t.Fatalf("berth ctl %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return out
	}
	ctl("group", "put", "g1", "--labels", "default,eu", "--capacity", "500")
	var groups []struct {
		ID       string   `json:"id"`
		Labels   []string `json:"labels"`
		Capacity int      `json:"capacity"`
		State    string   `json:"state"`
	}
	if err := json.Unmarshal([]byte(ctl("groups", "-o", "json")), &groups); err != nil {
		t.Fatal(err)
	}
	if len(groups) != 1 || groups[0].ID != "g1" || groups[0].Capacity != 500 || len(groups[0].Labels) != 2 || groups[0].State != "active" {
		t.Errorf("groups = %+v, want g1 with 2 labels, capacity 500, active", groups)
	}
	if out := ctl("groups"); !strings.Contains(out, "GROUP") || !strings.Contains(out, "default,eu") {
		t.Errorf("groups table:\n%s", out)
	}
	// Of several replicas, the first that answers serves.
	if out, _, err := berth(t, "ctl", "groups", "--controlplane", freeAddr(t)+","+cp.addr); err != nil || !strings.Contains(out, "default,eu") {
		t.Errorf("groups with a dead replica first = %q, %v; want the live one's answer", out, err)
	}
	if out := ctl("executors", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("executors of an empty cluster = %q, want []", out)
	}
	if out := ctl("devices", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("devices of an empty cluster = %q, want []", out)
	}

	// A bad group is refused with the reason.
	if _, _, err := berth(t, "ctl", "--controlplane", cp.addr, "group", "put", "bad/id"); err == nil || !strings.Contains(err.Error(), "InvalidArgument: group_id") {
		t.Errorf("group put bad/id = %v, want an error about the group id", err)
	}

	// Policies: a bad one is refused with every problem; a good one applies.
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(bad, []byte("default_label: default\nrules:\n  - {name: r, when: 'device.nope', label: x}\nfallbacks: {a: {labels: [b]}, b: {labels: [a]}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, []byte("default_label: default\nrules:\n  - {name: eu, when: 'device.model == \"EU\"', label: eu}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := berth(t, "ctl", "--controlplane", cp.addr, "policy", "apply", "-f", bad)
	if err == nil || !strings.Contains(err.Error(), "rules[0] (r).when") || !strings.Contains(err.Error(), "cycle") || !strings.Contains(err.Error(), "policy in force stays") {
		t.Errorf("apply of a bad policy = %v, want both problems named", err)
	}
	if _, _, err := berth(t, "ctl", "--controlplane", cp.addr, "policy", "dry-run", "-f", bad); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("dry-run of a bad policy = %v, want the problems named", err)
	}
	if out := ctl("policy", "get"); !strings.Contains(out, "no policy applied") || !strings.Contains(out, "defaultLabel: default") {
		t.Errorf("policy get after a refused apply:\n%s", out)
	}
	var none struct {
		Version  int64           `json:"version"`
		Document json.RawMessage `json:"document"`
	}
	if err := json.Unmarshal([]byte(ctl("policy", "get", "-o", "json")), &none); err != nil || none.Version != 0 || string(none.Document) != `{"defaultLabel":"default"}` {
		t.Errorf("policy get -o json with no policy = %+v, %v; want version 0 and the default document", none, err)
	}
	if out := ctl("policy", "apply", "-f", good); !strings.Contains(out, "policy applied: version") || !strings.Contains(out, "(was 0)") {
		t.Errorf("apply of a good policy:\n%s", out)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the applied policy in the control plane's view", func() bool {
		out, _, err := berth(t, "ctl", "--controlplane", cp.addr, "policy", "get")
		return err == nil && strings.Contains(out, "device.model == \"EU\"") && strings.Contains(out, "# version")
	})
	out, _, err := berth(t, "ctl", "--controlplane", cp.addr, "policy", "apply", "-f", good)
	if err != nil || !strings.Contains(out, "policy applied: version") || strings.Contains(out, "(was 0)") {
		t.Errorf("second apply = %q, %v; want it based on the first", out, err)
	}
	if out := ctl("policy", "dry-run", "-f", good); !strings.Contains(out, "known devices: 0") {
		t.Errorf("dry-run:\n%s", out)
	}
	var dry struct{ Devices, LabelChanges, GroupChanges int }
	if err := json.Unmarshal([]byte(ctl("policy", "dry-run", "-f", good, "-o", "json")), &dry); err != nil || dry.Devices != 0 {
		t.Errorf("dry-run -o json = %+v, %v", dry, err)
	}

	ctl("tenant", "put", "acme", "--attr", "tier=gold", "--services", "print,scan")
	if out := ctl("tenants"); !strings.Contains(out, "tier=gold") || !strings.Contains(out, "print,scan") {
		t.Errorf("tenants:\n%s", out)
	}
	ctl("tenant", "delete", "acme")
	if out := ctl("tenants", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("tenants after delete = %q, want []", out)
	}
	if _, _, err := berth(t, "ctl", "--controlplane", cp.addr, "tenant", "delete", "acme"); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("tenant delete of an unknown tenant = %v, want NotFound", err)
	}
	if _, _, err := berth(t, "ctl", "--controlplane", cp.addr, "explain", "nobody"); err == nil || !strings.Contains(err.Error(), "explain: NotFound") {
		t.Errorf("explain of an unknown device = %v, want not found", err)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"nope"}, "unknown command"},
		{"executor needs a group", []string{"executor", "--token-public-key", "x.pem"}, "group"},
		{"controlplane needs a key", []string{"controlplane"}, "signing-key"},
		{"bad log level", []string{"--log-level", "loud", "simulate", "--devices", "1"}, "log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := berth(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("berth %v = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "k.pem"), filepath.Join(dir, "p.pem")
	if _, _, err := berth(t, "keygen", "--private", priv, "--public", pub); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(priv)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode = %v, %v; want 0600", st.Mode(), err)
	}
	if b, err := os.ReadFile(pub); err != nil || !bytes.Contains(b, []byte("PUBLIC KEY")) {
		t.Errorf("public key file: %v", err)
	}
}
