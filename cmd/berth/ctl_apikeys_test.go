package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/testutil"
)

// TestCtlAPIKeys: ctl without a key is refused and says how to pass one;
// an admin creates a viewer key, which reads but may not apply a policy;
// the audit trail names the real caller; a revoked key is refused.
func TestCtlAPIKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("embedded etcd")
	}
	cp := startControlPlane(t) // sets BERTH_API_KEY to an admin key
	ctlAs := func(key string, args ...string) (string, error) {
		t.Helper()
		out, _, err := berth(t, append([]string{"ctl", "--controlplane", cp.addr, "--api-key", key}, args...)...)
		return out, err
	}
	if _, err := ctlAs("", "groups"); err == nil || !strings.Contains(err.Error(), "Unauthenticated") || !strings.Contains(err.Error(), "--api-key") {
		t.Errorf("ctl without a key: %v; want Unauthenticated naming --api-key", err)
	}
	if _, err := ctlAs("0123456789abcdef.bm9wZQ", "groups"); err == nil || !strings.Contains(err.Error(), "unknown or revoked") {
		t.Errorf("ctl with an unknown key: %v; want unknown or revoked", err)
	}
	out, err := ctlAs(adminKeyOf(t), "apikey", "create", "--name", "watcher", "--role", "viewer", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		Key    struct{ ID string }
		Secret string
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Secret == "" {
		t.Fatalf("apikey create printed %q: %v", out, err)
	}
	viewer := created.Secret
	if _, err := ctlAs(viewer, "groups"); err != nil {
		t.Errorf("viewer reading groups: %v", err)
	}
	if _, err := ctlAs(viewer, "group", "put", "g9", "--capacity", "10", "--labels", "default"); err == nil || !strings.Contains(err.Error(), "needs role operator") {
		t.Errorf("viewer putting a group: %v; want PermissionDenied naming operator", err)
	}
	if _, err := ctlAs(adminKeyOf(t), "group", "put", "g9", "--capacity", "10", "--labels", "default"); err != nil {
		t.Fatal(err)
	}
	list, err := ctlAs(adminKeyOf(t), "apikey", "list")
	if err != nil || !strings.Contains(list, "watcher") || strings.Contains(list, viewer[strings.Index(viewer, ".")+1:]) {
		t.Errorf("apikey list:\n%s\n%v; want watcher, and no secret", list, err)
	}
	audit, err := ctlAs(adminKeyOf(t), "audit")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(audit), "\n")
	if len(lines) < 4 || !strings.Contains(lines[1], "(test admin)") || !strings.Contains(lines[1], "PutGroup") || !strings.Contains(lines[1], "g9") ||
		!strings.Contains(lines[2], "(watcher)") || !strings.Contains(lines[2], "PermissionDenied") || !strings.Contains(lines[3], "CreateAPIKey") {
		t.Errorf("audit, newest first:\n%s\nwant the admin's PutGroup, the viewer's refused PutGroup, the key's creation", audit)
	}
	id, _, _ := strings.Cut(viewer, ".")
	if _, err := ctlAs(adminKeyOf(t), "apikey", "revoke", id); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Second, "the revoked key refused", func() bool {
		_, err := ctlAs(viewer, "groups")
		return err != nil && strings.Contains(err.Error(), "Unauthenticated")
	})
}

// adminKeyOf is the admin key startControlPlane made.
func adminKeyOf(t *testing.T) string {
	t.Helper()
	return os.Getenv(apiKeyEnv)
}
