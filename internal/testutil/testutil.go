// Package testutil holds helpers shared by berth's tests: an embedded etcd
// per test, a client of it, and bounded waits. Nothing outside _test.go files
// imports it.
package testutil

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/internal/embedetcd"
)

// Bounded waits of tests, after grpc-go's test/timeouts.go.
const (
	// DefaultTimeout bounds a wait for something that is expected to
	// happen; reaching it fails the test.
	DefaultTimeout = 10 * time.Second
	// DefaultShortTimeout bounds a wait for something that is expected not
	// to happen; reaching it is the success case, so keep it short.
	DefaultShortTimeout = 50 * time.Millisecond
)

// tick is how often WaitFor checks its condition.
const tick = 5 * time.Millisecond

// StartEtcd starts a single-member etcd in t.TempDir on free loopback ports,
// without fsync (embedetcd.Config.UnsafeNoFsync),
// and stops it when the test ends. It fails the test if etcd does not serve
// within DefaultTimeout. Do not Close the server yourself: Close may be
// called only once, and the cleanup calls it. A test that stops etcd on
// purpose starts it with embedetcd.Start.
func StartEtcd(t testing.TB) *embedetcd.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{Dir: t.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// EtcdClient returns a client of srv that is closed when the test ends.
// Cleanups run last-in first-out, so a client made after StartEtcd is closed
// before the server stops.
func EtcdClient(t testing.TB, srv *embedetcd.Server) *clientv3.Client {
	t.Helper()
	cli, err := srv.Client()
	if err != nil {
		t.Fatalf("etcd client of %s: %v", srv.Endpoint(), err)
	}
	t.Cleanup(func() {
		if err := cli.Close(); err != nil {
			t.Errorf("close etcd client: %v", err)
		}
	})
	return cli
}

// WaitFor polls cond every few milliseconds until it returns true, and fails
// the test with what was awaited if that takes longer than timeout. It is the
// polling helper of berth's tests: prefer a channel or a blocking call when
// the code under test offers one.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitForEvery(t, timeout, tick, what, cond)
}

// WaitForEvery is WaitFor checking cond every interval instead of every few
// milliseconds: for conditions that cost something to check, such as RPCs
// or a process (the e2e tests poll every 50ms).
func WaitForEvery(t testing.TB, timeout, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := Poll(ctx, interval, cond); err != nil {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Poll calls cond, then again interval after each call returned false,
// until cond returns true (Poll returns nil) or ctx ends (Poll returns
// ctx's error, wrapped, without calling cond again). It serves the waits
// that report a failure of their own and the retries of a test: with a
// bounded ctx, a retry loop with pauses is
//
//	err := testutil.Poll(ctx, 100*time.Millisecond, func() bool {
//		resp, err = client.Call(ctx, req)
//		return err == nil
//	})
func Poll(ctx context.Context, interval time.Duration, cond func() bool) error {
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for !cond() {
		timer.Reset(interval)
		select {
		case <-timer.C:
		case <-ctx.Done():
			return fmt.Errorf("poll: %w", ctx.Err())
		}
	}
	return nil
}
