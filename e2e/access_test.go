package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ctlAs runs `berth ctl` with key (overriding BERTH_API_KEY) and returns
// its combined output and error.
func ctlAs(t *testing.T, cp, key string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"ctl", "--controlplane", cp, "--api-key", key}, args...)
	out, err := exec.CommandContext(ctx, binary, full...).CombinedOutput()
	return string(out), err
}

// TestAccessRolesAndAudit: with real processes, a viewer key made by the
// admin is refused a policy apply (PERMISSION_DENIED naming operator), a
// missing key is refused (UNAUTHENTICATED), and the audit trail names the
// real callers whatever applied_by the client sent.
func TestAccessRolesAndAudit(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	etcd := startEtcd(t) // BERTH_API_KEY: an admin key
	priv, _ := keygen(t)
	cp := start(t, "controlplane", "controlplane", "--etcd", etcd, "--signing-key", priv, "--listen", "127.0.0.1:0", "--rebalance=false").addr()
	ctl(t, cp, "group", "put", "g1", "--labels", "default", "--capacity", "100")

	if out, err := ctlAs(t, cp, "", "groups"); err == nil || !strings.Contains(out, "Unauthenticated") {
		t.Errorf("ctl without a key: %v\n%s; want Unauthenticated", err, out)
	}
	var created struct{ Secret string }
	if err := json.Unmarshal([]byte(ctl(t, cp, "apikey", "create", "--name", "watcher", "--role", "viewer", "-o", "json")), &created); err != nil {
		t.Fatal(err)
	}
	polFile := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, polFile, "default_label: default\n")
	if out, err := ctlAs(t, cp, created.Secret, "policy", "apply", "-f", polFile); err == nil || !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, "needs role operator") {
		t.Errorf("viewer policy apply: %v\n%s; want PermissionDenied naming operator", err, out)
	}
	if out, err := ctlAs(t, cp, created.Secret, "groups"); err != nil || !strings.Contains(out, "g1") {
		t.Errorf("viewer groups: %v\n%s", err, out)
	}
	ctl(t, cp, "policy", "apply", "-f", polFile)

	var entries []struct {
		Who, Method, Target, Peer, Outcome string
	}
	if err := json.Unmarshal([]byte(ctl(t, cp, "audit", "-o", "json")), &entries); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Who[strings.Index(e.Who, "("):]+" "+e.Method[strings.LastIndex(e.Method, "/")+1:]+" "+e.Target+" "+e.Outcome)
		if e.Peer == "" {
			t.Errorf("audit entry %+v names no peer", e)
		}
	}
	want := []string{
		"(e2e admin) ApplyPolicy  OK",
		"(watcher) ApplyPolicy  PermissionDenied",
		"(e2e admin) CreateAPIKey watcher OK",
		"(e2e admin) PutGroup g1 OK",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit, newest first:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if out := ctl(t, cp, "policy", "get", "-o", "json"); !strings.Contains(out, "(e2e admin)") {
		t.Errorf("policy get: %s; want applied by the admin key", out)
	}
}
