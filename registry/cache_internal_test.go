package registry

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/internal/testutil"
)

// newInternalRegistry is a registry under its own prefix of a fresh etcd.
func newInternalRegistry(t *testing.T) (*Registry, *clientv3.Client, context.Context) {
	t.Helper()
	srv := testutil.StartEtcd(t)
	cli := testutil.EtcdClient(t, srv)
	ctx, cancel := context.WithTimeout(t.Context(), testutil.DefaultTimeout)
	t.Cleanup(cancel)
	return New(cli, "/internal"), cli, ctx
}

// TestWatchFromCompactedRevision is the step Run takes after a load whose
// revision was compacted before the watch caught up: watch must fail with
// ErrCompacted, which sends Run back to listing.
func TestWatchFromCompactedRevision(t *testing.T) {
	t.Parallel()
	r, cli, ctx := newInternalRegistry(t)
	if err := r.PutGroup(ctx, Group{ID: "g0", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	c := r.NewCache(nil)
	rev, err := c.load(ctx)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	var last int64
	for i := 1; i <= 3; i++ {
		resp, err := cli.Put(ctx, r.groupKey(fmt.Sprintf("g%d", i)), `{"id":"x","capacity":1,"state":"active"}`)
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	if _, err := cli.Compact(ctx, last); err != nil {
		t.Fatalf("Compact(%d): %v", last, err)
	}

	err = c.watch(ctx, rev)
	if !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("watch from revision %d after compaction at %d = %v, want ErrCompacted", rev+1, last, err)
	}
	if got := c.Snapshot().Revision; got != rev {
		t.Errorf("snapshot revision = %d after a failed watch, want %d (the load's)", got, rev)
	}
}

// TestWatchReturnsOnCancel: watch applies changes from rev+1 until its
// context is cancelled, and then says so.
func TestWatchReturnsOnCancel(t *testing.T) {
	t.Parallel()
	r, _, ctx := newInternalRegistry(t)
	c := r.NewCache(nil)
	rev, err := c.load(ctx)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.watch(wctx, rev) }()

	if err := r.PutGroup(ctx, Group{ID: "g1", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "g1 applied by the watch", func() bool {
		_, ok := c.Snapshot().Groups["g1"]
		return ok
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("watch after cancel = %v, want context.Canceled", err)
	}
}
