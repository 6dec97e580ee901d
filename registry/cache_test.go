package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// putExecutor writes an executor record straight to etcd, as a registration
// would (without the lease).
func putExecutor(t *testing.T, cli *clientv3.Client, x registry.Executor) {
	t.Helper()
	b, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(testContext(t), testPrefix+"/executors/"+x.ID, string(b)); err != nil {
		t.Fatalf("put executor %s: %v", x.ID, err)
	}
}

// startCache runs a cache of reg until the test ends and waits until it is
// ready.
func startCache(t *testing.T, reg *registry.Registry) (*registry.Cache, func() error) {
	t.Helper()
	c := reg.NewCache(nil)
	stop := goRun(t, c.Run)
	if err := c.WaitReady(testContext(t)); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	return c, stop
}

func executorIDs(xs []registry.Executor) []string {
	var ids []string
	for _, x := range xs {
		ids = append(ids, x.ID)
	}
	return ids
}

func TestCacheBeforeRun(t *testing.T) {
	c := registry.New(nil, testPrefix).NewCache(nil)
	s := c.Snapshot()
	if s == nil || s.Revision != 0 || len(s.Groups) != 0 || len(s.Executors) != 0 {
		t.Errorf("Snapshot() before Run = %+v, want an empty snapshot at revision 0", s)
	}
	if got := s.GroupExecutors("g1"); len(got) != 0 {
		t.Errorf("GroupExecutors(g1) before Run = %v, want none", got)
	}
	if c.Ready() {
		t.Error("Ready() = true before Run")
	}
	if _, ok := c.Assignment("dev-1"); ok {
		t.Error("Assignment(dev-1) found before Run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultShortTimeout)
	defer cancel()
	if err := c.WaitReady(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitReady before Run = %v, want DeadlineExceeded", err)
	}
}

func TestCacheInitialLoad(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	for _, g := range []registry.Group{
		{ID: "g2", Labels: []string{"us"}, Capacity: 20},
		{ID: "g1", Labels: []string{"eu"}, Capacity: 10},
	} {
		if err := e.reg.PutGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"ex-c", "ex-a", "ex-b"} {
		putExecutor(t, e.cli, registry.Executor{ID: id, GroupID: "g1", Address: id + ":1", Capacity: 5})
	}
	putExecutor(t, e.cli, registry.Executor{ID: "ex-z", GroupID: "g2", Address: "z:1", Capacity: 5})
	want := registry.Assignment{DeviceID: "dev-1", GroupID: "g1", Label: "eu", AssignedAt: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}
	if err := e.reg.PutAssignment(ctx, want); err != nil {
		t.Fatal(err)
	}
	// Neither a bad value nor a key outside the three directories stops the
	// load.
	if _, err := e.cli.Put(ctx, testPrefix+"/groups/bad", "{not json"); err != nil {
		t.Fatal(err)
	}
	last, err := e.cli.Put(ctx, testPrefix+"/other/key", "x")
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	c, stop := startCache(t, e.reg)
	if !c.Ready() {
		t.Error("Ready() = false after WaitReady")
	}
	s := c.Snapshot()
	if s.Revision < last.Header.Revision {
		t.Errorf("Revision = %d, want at least %d, the last write before Run", s.Revision, last.Header.Revision)
	}
	if got := slices.Sorted(maps.Keys(s.Groups)); !slices.Equal(got, []string{"g1", "g2"}) {
		t.Errorf("groups = %v, want [g1 g2] (the bad value skipped)", got)
	}
	var sorted []string
	for _, g := range s.SortedGroups() {
		sorted = append(sorted, g.ID)
	}
	if !slices.Equal(sorted, []string{"g1", "g2"}) {
		t.Errorf("SortedGroups() = %v, want [g1 g2]", sorted)
	}
	if got := executorIDs(s.GroupExecutors("g1")); !slices.Equal(got, []string{"ex-a", "ex-b", "ex-c"}) {
		t.Errorf("GroupExecutors(g1) = %v, want [ex-a ex-b ex-c] (sorted by id)", got)
	}
	if got := executorIDs(s.GroupExecutors("g2")); !slices.Equal(got, []string{"ex-z"}) {
		t.Errorf("GroupExecutors(g2) = %v, want [ex-z]", got)
	}
	if got := s.GroupExecutors("none"); len(got) != 0 {
		t.Errorf("GroupExecutors(none) = %v, want none", got)
	}
	if x := s.Executors["ex-a"]; x.ObservedAt.Before(start) {
		t.Errorf("ObservedAt of ex-a = %v, want the time the cache read it (after %v)", x.ObservedAt, start)
	}
	got, ok := c.Assignment("dev-1")
	if !ok || got.GroupID != want.GroupID || got.Label != want.Label || !got.AssignedAt.Equal(want.AssignedAt) {
		t.Errorf("Assignment(dev-1) = %+v, %v; want %+v", got, ok, want)
	}
	if n := c.AssignmentCount(); n != 1 {
		t.Errorf("AssignmentCount() = %d, want 1", n)
	}
	if n := c.Relists(); n != 0 {
		t.Errorf("Relists() = %d, want 0 after the first load", n)
	}

	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil after cancel", err)
	}
	if c.Ready() {
		t.Error("Ready() = true after Run returned")
	}
}

// snapshotCopy is a deep copy of what a snapshot shows, to check later that
// it did not change.
type snapshotCopy struct {
	Revision  int64
	Groups    map[string]registry.Group
	Executors map[string]registry.Executor
	ByGroup   map[string][]registry.Executor
	Tenants   map[string]registry.Tenant
	Policy    *registry.StoredPolicy
}

func copySnapshot(s *registry.Snapshot) snapshotCopy {
	c := snapshotCopy{Revision: s.Revision, Groups: map[string]registry.Group{}, Executors: maps.Clone(s.Executors), ByGroup: map[string][]registry.Executor{}, Tenants: map[string]registry.Tenant{}}
	for id, tn := range s.Tenants {
		tn.Attributes = maps.Clone(tn.Attributes)
		tn.Services = slices.Clone(tn.Services)
		c.Tenants[id] = tn
	}
	if s.Policy != nil {
		p := *s.Policy
		p.Document = slices.Clone(p.Document)
		c.Policy = &p
	}
	for id, g := range s.Groups {
		g.Labels = slices.Clone(g.Labels)
		c.Groups[id] = g
		c.ByGroup[id] = slices.Clone(s.GroupExecutors(id))
	}
	for _, x := range s.Executors {
		c.ByGroup[x.GroupID] = slices.Clone(s.GroupExecutors(x.GroupID))
	}
	return c
}

func TestCacheFollowsChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	c, _ := startCache(t, e.reg)

	var held []*registry.Snapshot
	var copies []snapshotCopy
	keep := func() {
		s := c.Snapshot()
		held = append(held, s)
		copies = append(copies, copySnapshot(s))
	}
	keep()

	g1 := registry.Group{ID: "g1", Labels: []string{"eu"}, Capacity: 10}
	if err := e.reg.PutGroup(ctx, g1); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "group g1 in the snapshot", func() bool {
		_, ok := c.Snapshot().Groups["g1"]
		return ok
	})
	keep()

	// An executor registered the real way, under its lease.
	x := registry.Executor{ID: "ex-1", GroupID: "g1", Address: "127.0.0.1:7001", Capacity: 5}
	reg, err := e.reg.NewRegistration(x, fastRegistration(), nil)
	if err != nil {
		t.Fatal(err)
	}
	stopReg := goRun(t, reg.Run)
	reg.Update(func(x *registry.Executor) { x.Connections = 4 })
	testutil.WaitFor(t, testutil.DefaultTimeout, "ex-1 with 4 connections in the snapshot", func() bool {
		return c.Snapshot().Executors["ex-1"].Connections == 4
	})
	if got := executorIDs(c.Snapshot().GroupExecutors("g1")); !slices.Equal(got, []string{"ex-1"}) {
		t.Errorf("GroupExecutors(g1) = %v, want [ex-1]", got)
	}
	keep()

	g1.Capacity = 99
	if err := e.reg.PutGroup(ctx, g1); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "g1 with capacity 99", func() bool {
		return c.Snapshot().Groups["g1"].Capacity == 99
	})
	keep()

	if err := e.reg.PutTenant(ctx, registry.Tenant{ID: "t1", Attributes: map[string]string{"tier": "gold"}, Services: []string{"video"}}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "tenant t1 in the snapshot", func() bool {
		return c.Snapshot().Tenants["t1"].Attributes["tier"] == "gold"
	})
	keep()
	version, err := e.reg.PutPolicy(ctx, registry.StoredPolicy{Document: []byte(`{"rules":[]}`), AppliedBy: "test"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the policy in the snapshot", func() bool {
		p := c.Snapshot().Policy
		return p != nil && p.Version == version && p.AppliedBy == "test"
	})
	keep()
	if err := e.reg.DeleteTenant(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "tenant t1 gone from the snapshot", func() bool {
		return len(c.Snapshot().Tenants) == 0
	})
	keep()

	a := registry.Assignment{DeviceID: "dev-1", GroupID: "g1", Label: "eu"}
	if err := e.reg.PutAssignment(ctx, a); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "assignment of dev-1", func() bool {
		got, ok := c.Assignment("dev-1")
		return ok && got.GroupID == "g1"
	})
	if _, err := e.cli.Delete(ctx, testPrefix+"/assignments/dev-1"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "assignment of dev-1 deleted", func() bool {
		_, ok := c.Assignment("dev-1")
		return !ok && c.AssignmentCount() == 0
	})

	// The executor's record goes with its registration.
	if err := stopReg(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "ex-1 gone from the snapshot", func() bool {
		_, ok := c.Snapshot().Executors["ex-1"]
		return !ok && len(c.Snapshot().GroupExecutors("g1")) == 0
	})
	keep()

	if err := e.reg.DeleteGroup(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "g1 gone from the snapshot", func() bool {
		return len(c.Snapshot().Groups) == 0
	})
	keep()

	// Every snapshot handed out still shows what it showed then, and each
	// later one is at a later revision.
	for i, s := range held {
		if got := copySnapshot(s); !reflect.DeepEqual(got, copies[i]) {
			t.Errorf("snapshot %d changed after it was handed out:\n got %+v\nwant %+v", i, got, copies[i])
		}
		if i > 0 && s.Revision <= held[i-1].Revision {
			t.Errorf("snapshot %d at revision %d, not after snapshot %d at %d", i, s.Revision, i-1, held[i-1].Revision)
		}
	}
	if n := c.Relists(); n != 0 {
		t.Errorf("Relists() = %d, want 0: nothing broke the watch", n)
	}
}

// TestCacheUndecodableValueReplacesGood overwrites a good group with a value
// that does not decode: the cache must drop the group, as a fresh load would,
// rather than keep serving the old value.
func TestCacheUndecodableValueReplacesGood(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	c, _ := startCache(t, e.reg)

	if err := e.reg.PutGroup(ctx, registry.Group{ID: "g1", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "g1 in the snapshot", func() bool {
		_, ok := c.Snapshot().Groups["g1"]
		return ok
	})
	if _, err := e.cli.Put(ctx, testPrefix+"/groups/g1", "{not json"); err != nil {
		t.Fatal(err)
	}
	// g2 comes later in the same watch, so once it shows the bad value of
	// g1 has been applied too.
	if err := e.reg.PutGroup(ctx, registry.Group{ID: "g2", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "g2 in the snapshot", func() bool {
		_, ok := c.Snapshot().Groups["g2"]
		return ok
	})
	if g, ok := c.Snapshot().Groups["g1"]; ok {
		t.Errorf("g1 = %+v still in the snapshot after its value became undecodable; want it dropped", g)
	}

	// Assignments likewise.
	if err := e.reg.PutAssignment(ctx, registry.Assignment{DeviceID: "dev-1", GroupID: "g1"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "assignment of dev-1", func() bool {
		_, ok := c.Assignment("dev-1")
		return ok
	})
	if _, err := e.cli.Put(ctx, testPrefix+"/assignments/dev-1", "{not json"); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.PutAssignment(ctx, registry.Assignment{DeviceID: "dev-2", GroupID: "g1"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "assignment of dev-2", func() bool {
		_, ok := c.Assignment("dev-2")
		return ok
	})
	if a, ok := c.Assignment("dev-1"); ok {
		t.Errorf("Assignment(dev-1) = %+v after its value became undecodable; want none", a)
	}
}

// rangeHook returns dial options that call after once, following the first
// Range the client makes: for a cache's client, right after its first load
// and before it starts watching. If fail is set, that first Range fails
// instead, after calling after.
func rangeHook(fail bool, after func()) []grpc.DialOption {
	return rangeHookAt(1, fail, after)
}

// rangeHookAt is rangeHook firing at the nth Range instead of the first.
func rangeHookAt(n int64, fail bool, after func()) []grpc.DialOption {
	var calls atomic.Int64
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if method != "/etcdserverpb.KV/Range" || calls.Add(1) != n {
				return invoker(ctx, method, req, reply, cc, opts...)
			}
			if fail {
				after()
				// Not Unavailable, which the client retries by itself.
				return status.Error(codes.Internal, "injected by the test")
			}
			err := invoker(ctx, method, req, reply, cc, opts...)
			after()
			return err
		})}
}

// hookedRegistry is a registry over a client of e's server with a rangeHook.
func hookedRegistry(t *testing.T, e *env, opts []grpc.DialOption) *registry.Registry {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{e.srv.Endpoint()},
		DialTimeout: testutil.DefaultTimeout,
		DialOptions: opts,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return registry.New(cli, testPrefix)
}

// TestCacheRelistsAfterCompaction compacts etcd between the cache's first
// load and its watch, so the watch starts at a compacted revision: Run must
// list again, counting a relist, and the new listing must show the changes
// the watch could not deliver.
func TestCacheRelistsAfterCompaction(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	if err := e.reg.PutGroup(ctx, registry.Group{ID: "gone", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	// The first load reads each cached directory (six) and then the policy key:
	// compact right after its last read, so the watch starts compacted.
	hook := rangeHookAt(7, false, func() {
		if err := e.reg.DeleteGroup(ctx, "gone"); err != nil {
			t.Error(err)
		}
		if err := e.reg.PutGroup(ctx, registry.Group{ID: "late", Capacity: 1}); err != nil {
			t.Error(err)
		}
		resp, err := e.cli.Put(ctx, testPrefix+"/other/bump", "x")
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := e.cli.Compact(ctx, resp.Header.Revision); err != nil {
			t.Error(err)
		}
	})
	c, _ := startCache(t, hookedRegistry(t, e, hook))

	testutil.WaitFor(t, testutil.DefaultTimeout, "a relist", func() bool { return c.Relists() == 1 })
	testutil.WaitFor(t, testutil.DefaultTimeout, "ready after the relist", c.Ready)
	s := c.Snapshot()
	if _, ok := s.Groups["late"]; !ok {
		t.Errorf("groups after relist = %v, want late", slices.Sorted(maps.Keys(s.Groups)))
	}
	if _, ok := s.Groups["gone"]; ok {
		t.Errorf("groups after relist = %v, want gone deleted", slices.Sorted(maps.Keys(s.Groups)))
	}

	// And it follows changes again.
	if err := e.reg.PutGroup(ctx, registry.Group{ID: "after", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "group after in the snapshot", func() bool {
		_, ok := c.Snapshot().Groups["after"]
		return ok
	})
	if n := c.Relists(); n != 1 {
		t.Errorf("Relists() = %d, want 1", n)
	}
}

// TestCacheFirstLoadRetried fails the cache's first list: it is retried, and
// the first load that succeeds is not a relist.
func TestCacheFirstLoadRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	if err := e.reg.PutGroup(ctx, registry.Group{ID: "g1", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	var failed atomic.Bool
	c, _ := startCache(t, hookedRegistry(t, e, rangeHook(true, func() { failed.Store(true) })))
	if !failed.Load() {
		t.Fatal("the first list did not fail; the test hook is broken")
	}
	if _, ok := c.Snapshot().Groups["g1"]; !ok {
		t.Error("g1 missing after the retried first load")
	}
	if n := c.Relists(); n != 0 {
		t.Errorf("Relists() = %d, want 0: the first successful load is not a relist", n)
	}
}

// TestCacheMovedAway: a replacement notice naming an executor, newer than
// its record, takes one device off the executor's count in the snapshot (a
// newer session of that device is elsewhere); a newer record of the
// executor already leaves it out, and so does the notice's deletion.
func TestCacheMovedAway(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	c, _ := startCache(t, e.reg)
	putExec := func(conns int) {
		t.Helper()
		v := fmt.Sprintf(`{"id":"dead","group":"g1","address":"10.0.0.1:1","capacity":100,"connections":%d,"load":%d,"draining":false,"admitted":{}}`, conns, conns)
		if _, err := e.cli.Put(ctx, testPrefix+"/executors/dead", v); err != nil {
			t.Fatal(err)
		}
	}
	note := func(dev string) {
		t.Helper()
		if _, err := e.cli.Put(ctx, testPrefix+"/replaced/dead/"+dev, `{"device":"`+dev+`","session":"s","executor":"dead"}`); err != nil {
			t.Fatal(err)
		}
	}
	counts := func(conns, moved int) func() bool {
		return func() bool {
			x, ok := c.Snapshot().Executors["dead"]
			return ok && x.Connections == conns && x.MovedAway == moved && x.Load == float64(conns)
		}
	}
	putExec(3)
	testutil.WaitFor(t, testutil.DefaultTimeout, "3 connections", counts(3, 0))
	note("d1")
	note("d2")
	testutil.WaitFor(t, testutil.DefaultTimeout, "1 connection, 2 moved away", counts(1, 2))
	putExec(1) // the executor's own record catches up
	testutil.WaitFor(t, testutil.DefaultTimeout, "its record's 1, nothing moved since", counts(1, 0))
	note("d3")
	testutil.WaitFor(t, testutil.DefaultTimeout, "0 connections, 1 moved away", counts(0, 1))
	if _, err := e.cli.Delete(ctx, testPrefix+"/replaced/dead/d3"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "back to the record's 1", counts(1, 0))
	// A fresh load sees the same.
	note("d4")
	c2, _ := startCache(t, e.reg)
	testutil.WaitFor(t, testutil.DefaultTimeout, "a new cache: 0 connections, 1 moved away", func() bool {
		x, ok := c2.Snapshot().Executors["dead"]
		return ok && x.Connections == 0 && x.MovedAway == 1
	})
}
