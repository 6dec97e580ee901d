package registry_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/berthproject/berth/internal/embedetcd"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// TestMain fails the package if a test leaves goroutines behind: caches,
// registrations, clients and embedded servers must all be stopped by the
// end of their test. Embedded etcd stops all of its own, so nothing is
// ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env is one test's etcd: its own embedded server, a client of it, and a
// registry under testPrefix.
type env struct {
	srv *embedetcd.Server
	cli *clientv3.Client
	reg *registry.Registry
}

const testPrefix = "/berth-test"

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := testutil.StartEtcd(t)
	cli := testutil.EtcdClient(t, srv)
	return &env{srv: srv, cli: cli, reg: registry.New(cli, testPrefix)}
}

// testContext is the test's context, bounded by testutil.DefaultTimeout.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testutil.DefaultTimeout)
	t.Cleanup(cancel)
	return ctx
}

// goRun runs run in a goroutine until the returned stop is called (or the
// test ends), and returns run's result from stop. stop fails the test if run
// does not return within testutil.DefaultTimeout of its context being
// cancelled.
func goRun(t *testing.T, run func(context.Context) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var (
		stopped bool
		err     error
	)
	stop = func() error {
		t.Helper()
		if stopped {
			return err
		}
		stopped = true
		cancel()
		select {
		case err = <-done:
		case <-time.After(testutil.DefaultTimeout):
			t.Fatalf("Run did not return within %v of cancel", testutil.DefaultTimeout)
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// goneEtcdClient returns a client of an etcd that answered once and is now
// stopped: for tests of what happens while etcd is down. (Not
// testutil.StartEtcd: the server is closed here, and must not be closed
// twice.)
func goneEtcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	ctx := testContext(t)
	srv, err := embedetcd.Start(ctx, embedetcd.Config{Dir: t.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	cli := testutil.EtcdClient(t, srv)
	if _, err := cli.Get(ctx, "warm-up"); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	return cli
}
