package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestContextFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cfg", "berth", "context.json")
	dc := devContext{ControlPlane: "127.0.0.1:7070", CA: "/d/tls/ca.pem", APIKeyFile: "/d/admin.key", Etcd: "http://127.0.0.1:1234"}
	if err := writeContext(path, dc); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("context file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	got, ok, err := readContext(path)
	if err != nil || !ok || got != dc {
		t.Errorf("readContext = %+v, %v, %v; want %+v", got, ok, err, dc)
	}
	other := dc
	other.ControlPlane = "127.0.0.1:7071"
	removeContext(path, other)
	if _, err := os.Stat(path); err != nil {
		t.Error("removeContext removed a context another berth dev wrote")
	}
	removeContext(path, dc)
	if _, ok, _ := readContext(path); ok {
		t.Error("removeContext left its own context")
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readContext(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("readContext of a broken file = %v, want an error naming it", err)
	}
}

func TestExportLines(t *testing.T) {
	dc := devContext{ControlPlane: "127.0.0.1:7070", CA: "/tmp/a b/ca.pem", APIKeyFile: "/d/admin.key"}
	got := strings.Join(dc.exportLines(), "\n")
	want := "export BERTH_CONTROLPLANE=127.0.0.1:7070\nexport BERTH_CA='/tmp/a b/ca.pem'\nexport BERTH_API_KEY_FILE=/d/admin.key"
	if got != want {
		t.Errorf("exportLines =\n%s\nwant\n%s", got, want)
	}
}

// TestCtlContext runs ctl with no flags against a control plane named by
// a context file, and checks the order: flags, environment, context; and
// that the context's key goes only to the control plane it names.
func TestCtlContext(t *testing.T) {
	if testing.Short() {
		t.Skip("embedded etcd")
	}
	cp := startControlPlane(t)
	key := os.Getenv(apiKeyEnv) // the admin key startControlPlane made
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctxFile := filepath.Join(dir, "context.json")
	if err := writeContext(ctxFile, devContext{ControlPlane: cp.addr, APIKeyFile: keyFile, Etcd: cp.etcd}); err != nil {
		t.Fatal(err)
	}
	t.Setenv(contextEnv, ctxFile)
	t.Setenv(apiKeyEnv, "")

	// No flag, no environment: the context names the control plane and
	// the key.
	if out, errOut, err := berth(t, "ctl", "groups", "-o", "json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("ctl groups from the context = %q, %v\n%s", out, err, errOut)
	}
	// The break-glass commands find etcd there too.
	if out, _, err := berth(t, "ctl", "registry", "groups", "-o", "json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("ctl registry groups from the context = %q, %v", out, err)
	}
	// A flag wins over the context: a dead address fails as unavailable.
	dead := freeAddr(t)
	if _, _, err := berth(t, "ctl", "groups", "--controlplane", dead); exitCode(err) != exitUnavailable || !strings.Contains(err.Error(), dead) {
		t.Errorf("ctl groups --controlplane %s = %v, want unavailable there", dead, err)
	}
	// The environment wins over the context.
	t.Setenv(controlPlaneEnv, dead)
	if _, _, err := berth(t, "ctl", "groups"); err == nil || !strings.Contains(err.Error(), dead) {
		t.Errorf("ctl groups with %s=%s = %v, want it tried", controlPlaneEnv, dead, err)
	}
	// And an explicit flag wins over the environment.
	if _, _, err := berth(t, "ctl", "groups", "--controlplane", cp.addr); err != nil {
		t.Errorf("ctl groups --controlplane over %s: %v", controlPlaneEnv, err)
	}
	t.Setenv(controlPlaneEnv, "")

	// An explicit empty --api-key wins over the context's key file.
	if _, _, err := berth(t, "ctl", "groups", "--api-key", ""); exitCode(err) != exitRefused {
		t.Errorf("ctl groups --api-key '' = %v (exit %d), want refused (exit %d)", err, exitCode(err), exitRefused)
	}
	// $BERTH_API_KEY_FILE wins over the context's key file.
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("0123456789abcdef.bm90LWEta2V5"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(apiKeyFileEnv, bad)
	if _, _, err := berth(t, "ctl", "groups"); exitCode(err) != exitRefused {
		t.Errorf("ctl groups with %s of a wrong key = %v, want refused", apiKeyFileEnv, err)
	}
	t.Setenv(apiKeyFileEnv, "")

	// A context naming another control plane lends it no credentials.
	if err := writeContext(ctxFile, devContext{ControlPlane: dead, APIKeyFile: keyFile}); err != nil {
		t.Fatal(err)
	}
	c := &ctlFlags{globals: &globals{}, flags: pflag.NewFlagSet("t", pflag.ContinueOnError)}
	c.flags.StringVar(&c.controlplane, "controlplane", "", "")
	if err := c.flags.Parse([]string{"--controlplane", cp.addr}); err != nil {
		t.Fatal(err)
	}
	if err := c.resolve(); err != nil {
		t.Fatal(err)
	}
	if c.key() != "" {
		t.Error("ctl presents the context's API key to a control plane the context does not name")
	}
}

// TestCtlContextNotInHelp checks that ctl's help shows neither the
// environment's nor the context's values.
func TestCtlContextNotInHelp(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin.key")
	const secret = "0123456789abcdef.c2VjcmV0LWluLWEtZmlsZQ"
	if err := os.WriteFile(keyFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	ctxFile := filepath.Join(dir, "context.json")
	b, _ := json.Marshal(devContext{ControlPlane: "127.0.0.1:7999", APIKeyFile: keyFile})
	if err := os.WriteFile(ctxFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(contextEnv, ctxFile)
	t.Setenv(apiKeyFileEnv, keyFile)
	out, _, err := berth(t, "ctl", "groups", "--help")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, secret) {
		t.Errorf("ctl groups --help shows the key:\n%s", out)
	}
}
