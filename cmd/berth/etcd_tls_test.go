package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/berthproject/berth/internal/embedetcd"
	"github.com/berthproject/berth/internal/testutil"
)

// TestEtcdTLS: commands reach an etcd that serves TLS and requires client
// certificates with --etcd-ca, --etcd-cert and --etcd-key, and not
// without them.
func TestEtcdTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("embedded etcd")
	}
	dir := t.TempDir()
	makeCerts(t, dir)
	p := func(name string) string { return filepath.Join(dir, name) }
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{Dir: t.TempDir(), UnsafeNoFsync: true, ClientTLS: &embedetcd.ClientTLS{
		CertFile: p("server.pem"), KeyFile: p("server-key.pem"), ClientCAFile: p("ca.pem"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.Endpoint(), "https://") {
		t.Fatalf("endpoint %s, want https", srv.Endpoint())
	}
	tests := []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{"mTLS", []string{"--etcd-ca", p("ca.pem"), "--etcd-cert", p("client-ops.pem"), "--etcd-key", p("client-ops-key.pem")}, false},
		{"no client certificate", []string{"--etcd-ca", p("ca.pem")}, true},
		{"plaintext", nil, true},
		{"certificate without key", []string{"--etcd-ca", p("ca.pem"), "--etcd-cert", p("client-ops.pem")}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"ctl", "registry", "groups", "--etcd", srv.Endpoint(), "--timeout", "3s"}, tc.args...)
			out, _, err := berth(t, args...)
			if gotErr := err != nil; gotErr != tc.wantErr {
				t.Fatalf("berth %s = %q, %v; want error %v", strings.Join(args, " "), out, err, tc.wantErr)
			}
			if err == nil && !strings.Contains(out, "GROUP") {
				t.Errorf("groups over TLS printed %q", out)
			}
		})
	}
}

// TestEtcdPassword: with etcd's authentication on, commands get in with
// --etcd-user and the password from $BERTH_ETCD_PASSWORD, and not without.
func TestEtcdPassword(t *testing.T) {
	if testing.Short() {
		t.Skip("embedded etcd")
	}
	srv := testutil.StartEtcd(t)
	cli := testutil.EtcdClient(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	if _, err := cli.UserAdd(ctx, "root", "s3cret"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Leave etcd as found, so the shared client's cleanup closes cleanly.
		root, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, Username: "root", Password: "s3cret", DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Errorf("root client: %v", err)
			return
		}
		defer root.Close()
		if _, err := root.AuthDisable(context.Background()); err != nil {
			t.Errorf("auth disable: %v", err)
		}
	})
	base := []string{"ctl", "registry", "groups", "--etcd", srv.Endpoint(), "--timeout", "3s"}
	if _, _, err := berth(t, base...); err == nil {
		t.Error("groups without credentials: no error")
	}
	if _, _, err := berth(t, append(base, "--etcd-user", "root", "--etcd-password", "wrong")...); err == nil {
		t.Error("groups with a wrong password: no error")
	}
	if _, _, err := berth(t, append(base, "--etcd-user", "root")...); err == nil || !strings.Contains(err.Error(), etcdPasswordEnv) {
		t.Errorf("groups with a user and no password: err = %v, want one naming %s", err, etcdPasswordEnv)
	}
	t.Setenv(etcdPasswordEnv, "s3cret")
	if out, _, err := berth(t, append(base, "--etcd-user", "root")...); err != nil || !strings.Contains(out, "GROUP") {
		t.Errorf("groups with user and $%s = %q, %v", etcdPasswordEnv, out, err)
	}
}
