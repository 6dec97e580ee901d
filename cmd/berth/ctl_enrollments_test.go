package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthproject/berth/internal/testutil"
)

// TestCtlEnrollments creates, lists, disables and deletes enrollments,
// derives a device key, and revokes a device, through berth ctl.
func TestCtlEnrollments(t *testing.T) {
	if testing.Short() {
		t.Skip("embedded etcd")
	}
	cp := startControlPlane(t)
	dir := t.TempDir()
	ctl := func(wantErr bool, args ...string) string {
		t.Helper()
		out, errOut, err := berth(t, append([]string{"ctl", "--controlplane", cp.addr}, args...)...)
		if (err != nil) != wantErr {
			t.Fatalf("berth ctl %s: error %v, want error %v\n%s%s", strings.Join(args, " "), err, wantErr, out, errOut)
		}
		return out + errOut
	}
	keyFile := filepath.Join(dir, "sensors.key")
	ctl(false, "enrollment", "create", "sensors", "--kind", "symmetric", "--key-out", keyFile)
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	if out := ctl(false, "enrollment", "create", "printed", "--kind", "symmetric"); !strings.Contains(out, "shown once") {
		t.Errorf("create without --key-out printed %q; want the key, shown once", out)
	}
	ca := testutil.NewTestCA(t, "factory")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, []byte(ca.PEM), 0o600); err != nil {
		t.Fatal(err)
	}
	ctl(false, "enrollment", "create", "factory", "--kind", "x509", "--ca-file", caFile)
	ctl(true, "enrollment", "create", "factory", "--kind", "x509", "--ca-file", caFile)
	ctl(true, "enrollment", "create", "x", "--kind", "tpm")
	ctl(false, "enrollment", "disable", "factory")
	out := ctl(false, "enrollments")
	for _, want := range []string{"factory", "x509", "true", "sensors", "symmetric"} {
		if !strings.Contains(out, want) {
			t.Errorf("enrollments: %q lacks %q", out, want)
		}
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, strings.TrimSpace(string(key))) {
		t.Error("the enrollment listing shows the key")
	}
	if out := ctl(false, "enrollment", "device-key", keyFile, "dev-1"); len(strings.TrimSpace(out)) != 44 {
		t.Errorf("device-key printed %q; want a base64 32-byte key", out)
	}
	ctl(false, "enrollment", "delete", "factory")
	ctl(true, "enrollment", "delete", "factory")

	ctl(false, "device", "revoke", "dev-1", "--reason", "stolen")
	if out := ctl(false, "device", "revoked"); !strings.Contains(out, "dev-1") || !strings.Contains(out, "stolen") {
		t.Errorf("device revoked: %q; want dev-1, stolen", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	if rs, err := cp.reg.Revocations(ctx); err != nil || len(rs) != 1 {
		t.Errorf("revocations in etcd: %v, %v; want dev-1", rs, err)
	}
	ctl(false, "device", "unrevoke", "dev-1")
	ctl(true, "device", "unrevoke", "dev-1")
}
