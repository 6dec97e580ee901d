package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/pki"
)

// makeCerts runs `berth cert` in dir: a CA, a server certificate for
// 127.0.0.1 and a client certificate for "ops".
func makeCerts(t *testing.T, dir string) {
	t.Helper()
	for _, args := range [][]string{
		{"cert", "ca", "--dir", dir},
		{"cert", "server", "--dir", dir, "--host", "127.0.0.1,localhost"},
		{"cert", "client", "ops", "--dir", dir},
		{"cert", "device", "printer-1", "--dir", dir},
	} {
		out, errOut, err := berth(t, args...)
		if err != nil {
			t.Fatalf("berth %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		if !strings.Contains(out, "wrote ") || !strings.Contains(out, "valid until") {
			t.Errorf("berth %s printed %q, want the files written and the validity", strings.Join(args, " "), out)
		}
	}
}

func TestCert(t *testing.T) {
	dir := t.TempDir()
	makeCerts(t, dir)
	tests := []struct {
		file, wantCN, wantURI string
	}{
		{"server.pem", "127.0.0.1", ""},
		{"client-ops.pem", "ops", "berth://service/ops"},
		{"device-printer-1.pem", "printer-1", "berth://device/printer-1"},
	}
	for _, tc := range tests {
		c, err := pki.ReadCert(filepath.Join(dir, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		var uri string
		if len(c.URIs) > 0 {
			uri = c.URIs[0].String()
		}
		if c.Subject.CommonName != tc.wantCN || uri != tc.wantURI {
			t.Errorf("%s: CN %q URI %q, want %q %q", tc.file, c.Subject.CommonName, uri, tc.wantCN, tc.wantURI)
		}
		st, err := os.Stat(filepath.Join(dir, strings.TrimSuffix(tc.file, ".pem")+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s's key: mode %v, want 0600", tc.file, st.Mode().Perm())
		}
	}
	// Existing files are kept unless --force.
	if _, _, err := berth(t, "cert", "ca", "--dir", dir); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("cert ca over an existing CA: err = %v, want a refusal naming --force", err)
	}
	if _, _, err := berth(t, "cert", "device", "..", "--dir", dir); err == nil {
		t.Error("cert device ..: no error")
	}
	if _, _, err := berth(t, "cert", "server", "--host", "x", "--dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "--ca") {
		t.Errorf("cert server without a CA: err = %v, want one naming --ca", err)
	}
}

// TestControlPlaneTLS: a control plane serving TLS from `berth cert`
// files answers ctl with --ca (and BERTH_CA), and not in plaintext.
func TestControlPlaneTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("embedded etcd")
	}
	dir := t.TempDir()
	makeCerts(t, dir)
	p := func(name string) string { return filepath.Join(dir, name) }
	cp := startControlPlaneWith(t,
		[]string{"--tls-cert", p("server.pem"), "--tls-key", p("server-key.pem"), "--executor-ca", p("ca.pem")},
		[]string{"--ca", p("ca.pem")})
	if out, errOut, err := berth(t, "ctl", "groups", "--controlplane", cp.addr, "--ca", p("ca.pem"), "--cert", p("client-ops.pem"), "--key", p("client-ops-key.pem")); err != nil || !strings.Contains(out, "GROUP") {
		t.Errorf("ctl groups over mTLS = %q, %v\n%s", out, err, errOut)
	}
	t.Setenv(caEnv, p("ca.pem"))
	if out, _, err := berth(t, "ctl", "groups", "--controlplane", cp.addr); err != nil || !strings.Contains(out, "GROUP") {
		t.Errorf("ctl groups with %s = %q, %v", caEnv, out, err)
	}
	if _, _, err := berth(t, "ctl", "groups", "--controlplane", cp.addr, "--ca", ""); err == nil {
		t.Error("ctl groups in plaintext against a TLS control plane: no error")
	}
	if _, _, err := berth(t, "ctl", "groups", "--controlplane", cp.addr, "--cert", p("client-ops.pem")); err == nil || !strings.Contains(err.Error(), "--key") {
		t.Errorf("ctl with --cert and no --key: err = %v, want one naming --key", err)
	}
}

// TestServersRefusePlaintext: off loopback, plaintext needs --insecure;
// TLS without a way to reach executors over TLS is refused too.
func TestServersRefusePlaintext(t *testing.T) {
	dir := t.TempDir()
	makeCerts(t, dir)
	priv, pub := filepath.Join(dir, "k.pem"), filepath.Join(dir, "p.pem")
	if _, _, err := berth(t, "keygen", "--private", priv, "--public", pub); err != nil {
		t.Fatal(err)
	}
	// No etcd is needed: each refusal comes before it is reached.
	noEtcd := "http://" + freeAddr(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"control plane on 0.0.0.0", []string{"controlplane", "--etcd", noEtcd, "--signing-key", priv, "--listen", "0.0.0.0:0"}, "--insecure"},
		{"executor on 0.0.0.0", []string{"executor", "--etcd", noEtcd, "--group", "g", "--token-public-key", pub, "--listen", "0.0.0.0:0"}, "--insecure"},
		{"control plane TLS without --executor-ca", []string{"controlplane", "--etcd", noEtcd, "--signing-key", priv, "--tls-cert", filepath.Join(dir, "server.pem"), "--tls-key", filepath.Join(dir, "server-key.pem")}, "--executor-ca"},
		{"executor --advertise-name without TLS", []string{"executor", "--etcd", noEtcd, "--group", "g", "--token-public-key", pub, "--advertise-name", "exec.example"}, "--tls-cert"},
		{"executor cert without key", []string{"executor", "--etcd", noEtcd, "--group", "g", "--token-public-key", pub, "--tls-cert", filepath.Join(dir, "server.pem")}, "--tls-key"},
		{"executor internal listener on 0.0.0.0", []string{"executor", "--etcd", noEtcd, "--group", "g", "--token-public-key", pub, "--internal-listen", "0.0.0.0:0"}, "(--internal-listen), which is not a loopback address: give --tls-cert and --tls-key, or --insecure"},
		{"executor --internal-advertise without --internal-listen", []string{"executor", "--etcd", noEtcd, "--group", "g", "--token-public-key", pub, "--internal-advertise", "10.1.0.1:7001"}, "--internal-advertise needs --internal-listen"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
			defer cancel()
			var out, errb testutil.SyncBuffer
			err := run(ctx, tc.args, &out, &errb)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
}
