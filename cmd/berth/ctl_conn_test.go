package main

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

var listeningRE = regexp.MustCompile(`listening on (\S+)`)

// testCluster is an etcd and a `berth controlplane` (without the
// rebalancer) running in this process.
type testCluster struct {
	etcd, addr string
	reg        *registry.Registry // over the same etcd
}

// startControlPlane starts an embedded etcd and `berth controlplane` on
// it, waits until the control plane serves, and stops both when the test
// ends.
func startControlPlane(t *testing.T) testCluster {
	t.Helper()
	return startControlPlaneWith(t, nil, nil)
}

// startControlPlaneWith is startControlPlane with extra flags for the
// control plane and for ctl.
func startControlPlaneWith(t *testing.T, cpArgs, ctlArgs []string) testCluster {
	t.Helper()
	srv := testutil.StartEtcd(t)
	etcd := srv.Endpoint()
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "k.pem"), filepath.Join(dir, "p.pem")
	if _, _, err := berth(t, "keygen", "--private", priv, "--public", pub); err != nil {
		t.Fatal(err)
	}
	// The first admin key, made the break-glass way, for every ctl call
	// of the test, made before the control plane starts so that its first
	// listing of the keys holds it.
	key, errOut, err := berth(t, "ctl", "registry", "apikey", "create", "--etcd", etcd, "--name", "test admin", "--role", "admin", "-o", "json")
	if err != nil {
		t.Fatalf("ctl registry apikey create: %v\n%s", err, errOut)
	}
	var created struct{ ID, Secret string }
	if err := json.Unmarshal([]byte(key), &created); err != nil || created.Secret == "" {
		t.Fatalf("ctl registry apikey create printed %q: %v", key, err)
	}
	t.Setenv(apiKeyEnv, created.Secret)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb testutil.SyncBuffer
	done := make(chan error, 1)
	go func() {
		args := []string{"controlplane", "--etcd", etcd, "--signing-key", priv, "--listen", "127.0.0.1:0", "--rebalance=false", "--log-level", "warn"}
		done <- run(ctx, append(args, cpArgs...), &out, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("berth controlplane: %v\n%s", err, errb.String())
		}
	})
	var addr string
	testutil.WaitFor(t, testutil.DefaultTimeout, "the control plane's listening line", func() bool {
		select {
		case err := <-done:
			t.Fatalf("berth controlplane exited: %v\n%s", err, errb.String())
		default:
		}
		m := listeningRE.FindStringSubmatch(out.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	// ctl waits for SERVING itself; this makes failures clearer.
	if _, _, err := berth(t, append([]string{"ctl", "groups", "--controlplane", addr}, ctlArgs...)...); err != nil {
		t.Fatalf("ctl groups on a fresh control plane: %v", err)
	}
	return testCluster{etcd: etcd, addr: addr, reg: registry.New(testutil.EtcdClient(t, srv), "")}
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// TestCtlWithoutControlPlane: with no control plane up, every command
// fails at once, naming the address it tried and what to do.
func TestCtlWithoutControlPlane(t *testing.T) {
	addr := freeAddr(t)
	envAddr := freeAddr(t)
	tests := []struct {
		name string
		env  string
		args []string
		want []string
	}{
		{"groups", "", []string{"groups", "--controlplane", addr}, []string{"no control plane at " + addr, "connection refused", "--controlplane", "BERTH_CONTROLPLANE"}},
		{"group put", "", []string{"group", "put", "g1", "--controlplane", addr}, []string{"no control plane at " + addr}},
		{"policy get", "", []string{"policy", "get", "--controlplane", addr}, []string{"no control plane at " + addr}},
		{"rebalance status", "", []string{"rebalance", "status", "--controlplane", addr}, []string{"no control plane at " + addr}},
		{"send", "", []string{"send", "d1", "--data", "x", "--controlplane", addr}, []string{"no control plane at " + addr}},
		{"subscribe", "", []string{"subscribe", "--controlplane", addr}, []string{"no control plane at " + addr}},
		{"address from the environment", envAddr, []string{"devices"}, []string{"no control plane at " + envAddr}},
		{"flag over the environment", envAddr, []string{"tenants", "--controlplane", addr}, []string{"no control plane at " + addr}},
		{"every replica", "", []string{"groups", "--controlplane", addr + "," + envAddr}, []string{"no control plane at " + addr, "no control plane at " + envAddr}},
		{"legacy --etcd", "", []string{"--etcd", "http://127.0.0.1:2379", "groups"}, []string{"not to etcd", "--controlplane", "ctl registry"}},
		{"bad output", "", []string{"groups", "-o", "yaml", "--controlplane", addr}, []string{"--output"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv(controlPlaneEnv, tt.env)
			}
			start := time.Now()
			_, _, err := berth(t, append([]string{"ctl"}, tt.args...)...)
			took := time.Since(start)
			if err == nil {
				t.Fatalf("berth ctl %v succeeded with no control plane", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("berth ctl %v = %q; want it to contain %q", tt.args, err, w)
				}
			}
			if took > connectTimeout+time.Second {
				t.Errorf("berth ctl %v took %v; want a failure within %v", tt.args, took, connectTimeout)
			}
		})
	}
}

// fakeAdmin answers ListGroups with one group.
type fakeAdmin struct {
	adminv1.UnimplementedAdminServiceServer
}

func (fakeAdmin) ListGroups(context.Context, *adminv1.ListGroupsRequest) (*adminv1.ListGroupsResponse, error) {
	return &adminv1.ListGroupsResponse{Groups: []*adminv1.Group{{GroupId: "g-fake", Capacity: 1, State: "active"}}}, nil
}

// TestCtlWaitsForServing: a control plane that answers NOT_SERVING (its
// view of the registry still loading) is waited for, within --timeout.
func TestCtlWaitsForServing(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	adminv1.RegisterAdminServiceServer(gs, fakeAdmin{})
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	defer func() { gs.Stop(); <-done }()
	addr := lis.Addr().String()

	_, _, err = berth(t, "ctl", "groups", "--controlplane", addr, "--timeout", "300ms")
	if err == nil || !strings.Contains(err.Error(), "control plane at "+addr+" is not serving") {
		t.Errorf("groups on a control plane not serving = %v; want it named not serving", err)
	}

	type result struct {
		out string
		err error
	}
	res := make(chan result, 1)
	go func() {
		out, _, err := berth(t, "ctl", "groups", "--controlplane", addr)
		res <- result{out, err}
	}()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	select {
	case r := <-res:
		if r.err != nil || !strings.Contains(r.out, "g-fake") {
			t.Errorf("groups once serving = %q, %v; want g-fake", r.out, r.err)
		}
	case <-time.After(testutil.DefaultTimeout):
		t.Fatal("ctl groups did not finish once the control plane served")
	}
}

// The API key of the environment authenticates ctl but never shows in its
// help (a flag's default is printed there).
func TestAPIKeyNotInHelp(t *testing.T) {
	const secret = "0123456789abcdef.c2VjcmV0LXRoYXQtbXVzdC1ub3Qtc2hvdw"
	t.Setenv(apiKeyEnv, secret)
	out, errOut, err := berth(t, "ctl", "--help")
	if err != nil {
		t.Fatalf("ctl --help: %v\n%s", err, errOut)
	}
	if strings.Contains(out+errOut, secret) {
		t.Errorf("ctl --help shows the API key of $%s:\n%s", apiKeyEnv, out)
	}
	if !strings.Contains(out, "--api-key") {
		t.Errorf("ctl --help does not list --api-key:\n%s", out)
	}
}
