package registry_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// fastRegistration is a registration config for tests: the shortest TTL
// etcd sessions allow, and a refresh long enough not to interfere unless a
// test shortens it.
func fastRegistration() registry.RegistrationConfig {
	return registry.RegistrationConfig{
		TTL:         2 * time.Second,
		Refresh:     1500 * time.Millisecond,
		MinInterval: 100 * time.Millisecond,
		RetryDelay:  20 * time.Millisecond,
	}
}

func testExecutor() registry.Executor {
	return registry.Executor{ID: "ex-1", GroupID: "g1", Address: "127.0.0.1:7001", Capacity: 50}
}

// getExecutor reads the executor's raw record: the value and the lease it is
// stored under. ok is false if there is no record.
func getExecutor(t *testing.T, cli *clientv3.Client, id string) (e registry.Executor, lease clientv3.LeaseID, ok bool) {
	t.Helper()
	resp, err := cli.Get(testContext(t), testPrefix+"/executors/"+id)
	if err != nil {
		t.Fatalf("Get executor %s: %v", id, err)
	}
	if len(resp.Kvs) == 0 {
		return registry.Executor{}, 0, false
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &e); err != nil {
		t.Fatalf("executor %s: %v: %q", id, err, resp.Kvs[0].Value)
	}
	return e, clientv3.LeaseID(resp.Kvs[0].Lease), true
}

func TestNewRegistrationValidates(t *testing.T) {
	reg := registry.New(nil, testPrefix)
	tests := []struct {
		name string
		exec registry.Executor
		cfg  registry.RegistrationConfig
	}{
		{name: "invalid executor", exec: registry.Executor{ID: "ex-1"}, cfg: fastRegistration()},
		{name: "invalid config", exec: testExecutor(), cfg: registry.RegistrationConfig{TTL: time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := reg.NewRegistration(tt.exec, tt.cfg, nil); !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("NewRegistration(%+v, %+v): err = %v, want ErrInvalid", tt.exec, tt.cfg, err)
			}
		})
	}
}

func TestRegistrationRecordUnderLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	cfg := fastRegistration()
	// Short, to see UpdatedAt refresh; not shorter, since it is also the
	// timeout of each write.
	cfg.Refresh = 300 * time.Millisecond
	g, err := e.reg.NewRegistration(testExecutor(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := goRun(t, g.Run)

	testutil.WaitFor(t, testutil.DefaultTimeout, "registration", g.Registered)
	registeredAt := time.Now()
	g.Update(func(x *registry.Executor) { x.Connections = 7; x.Load = 1.5 })
	if got := g.Current().Connections; got != 7 {
		t.Errorf("Current().Connections = %d, want 7", got)
	}
	var rec registry.Executor
	var lease clientv3.LeaseID
	testutil.WaitFor(t, testutil.DefaultTimeout, "record with 7 connections", func() bool {
		var ok bool
		rec, lease, ok = getExecutor(t, e.cli, "ex-1")
		return ok && rec.Connections == 7
	})
	if rec.ID != "ex-1" || rec.GroupID != "g1" || rec.Address != "127.0.0.1:7001" || rec.Capacity != 50 || rec.Load != 1.5 {
		t.Errorf("record = %+v, want the registered executor with load 1.5", rec)
	}
	if lease == clientv3.NoLease {
		t.Fatal("record is not under a lease")
	}
	ttl, err := e.cli.TimeToLive(ctx, lease, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatalf("TimeToLive: %v", err)
	}
	if ttl.GrantedTTL != 2 || ttl.TTL <= 0 {
		t.Errorf("lease granted TTL %ds, remaining %ds; want 2s and alive", ttl.GrantedTTL, ttl.TTL)
	}
	if len(ttl.Keys) != 1 || string(ttl.Keys[0]) != testPrefix+"/executors/ex-1" {
		t.Errorf("lease keys = %q, want only the executor record", ttl.Keys)
	}

	// The record is rewritten every Refresh even when nothing changed.
	first := rec.UpdatedAt
	testutil.WaitFor(t, testutil.DefaultTimeout, "a refreshed UpdatedAt", func() bool {
		r, _, ok := getExecutor(t, e.cli, "ex-1")
		return ok && r.UpdatedAt.After(first)
	})

	// The lease is kept alive in the background: the record outlives the
	// lease's TTL, under the same lease.
	deadline := registeredAt.Add(cfg.TTL + 500*time.Millisecond)
	testutil.WaitFor(t, testutil.DefaultTimeout, "the record to outlive the lease TTL", func() bool {
		_, l, ok := getExecutor(t, e.cli, "ex-1")
		if !ok || l != lease {
			t.Fatalf("record under lease %x, present %v; want it kept under lease %x", l, ok, lease)
		}
		return time.Now().After(deadline)
	})
	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil after cancel", err)
	}
}

// TestRegistrationMinInterval bursts 100 updates right after registering and
// counts the writes through a watch: a few writes, spaced by MinInterval,
// the last one carrying the last value.
func TestRegistrationMinInterval(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	cfg := fastRegistration()
	cfg.MinInterval = 200 * time.Millisecond
	// Refresh writes do not wait for MinInterval; keep them out of the way.
	cfg.TTL, cfg.Refresh = 10*time.Second, 9*time.Second
	g, err := e.reg.NewRegistration(testExecutor(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.cli.Get(ctx, "nothing")
	if err != nil {
		t.Fatal(err)
	}
	wch := e.cli.Watch(ctx, testPrefix+"/executors/ex-1", clientv3.WithRev(resp.Header.Revision+1))

	goRun(t, g.Run)
	testutil.WaitFor(t, testutil.DefaultTimeout, "registration", g.Registered)
	const burst = 100
	for i := 1; i <= burst; i++ {
		g.Update(func(x *registry.Executor) { x.Connections = i })
	}

	var writes []registry.Executor
	var settle <-chan time.Time // armed once the last value is seen
collect:
	for {
		select {
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				t.Fatalf("watch ended: %v", wr.Err())
			}
			for _, ev := range wr.Events {
				if ev.Type != mvccpb.PUT {
					t.Fatalf("unexpected %v of the record", ev.Type)
				}
				var x registry.Executor
				if err := json.Unmarshal(ev.Kv.Value, &x); err != nil {
					t.Fatal(err)
				}
				writes = append(writes, x)
				if x.Connections == burst && settle == nil {
					// Writes still due would come within MinInterval.
					settle = time.After(2 * cfg.MinInterval)
				}
			}
		case <-settle:
			break collect
		case <-ctx.Done():
			t.Fatalf("no write of connections=%d; writes: %+v", burst, writes)
		}
	}

	// writes[0] is the registration itself, with no connections.
	if got := writes[0].Connections; got != 0 {
		t.Errorf("first write has %d connections, want 0 (the registration)", got)
	}
	if got := writes[len(writes)-1].Connections; got != burst {
		t.Errorf("last write has %d connections, want %d (the last update)", got, burst)
	}
	if n := len(writes) - 1; n < 1 || n > 3 {
		t.Errorf("%d updates in a burst made %d writes, want 1 to 3", burst, n)
	}
	for i := 1; i < len(writes); i++ {
		if gap := writes[i].UpdatedAt.Sub(writes[i-1].UpdatedAt); gap < cfg.MinInterval {
			t.Errorf("write %d came %v after the previous one, want at least MinInterval %v", i, gap, cfg.MinInterval)
		}
	}
}

// TestRegistrationReregistersAfterRevoke revokes the record's lease from
// outside, as etcd does when the lease expires: the registration notices,
// counts a lost lease and writes the record again under a new lease.
func TestRegistrationReregistersAfterRevoke(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	g, err := e.reg.NewRegistration(testExecutor(), fastRegistration(), nil)
	if err != nil {
		t.Fatal(err)
	}
	goRun(t, g.Run)
	g.Update(func(x *registry.Executor) { x.Connections = 3 })

	var old clientv3.LeaseID
	testutil.WaitFor(t, testutil.DefaultTimeout, "record with 3 connections", func() bool {
		x, l, ok := getExecutor(t, e.cli, "ex-1")
		old = l
		return ok && x.Connections == 3
	})
	if _, err := e.cli.Revoke(ctx, old); err != nil {
		t.Fatalf("Revoke(%x): %v", old, err)
	}

	testutil.WaitFor(t, testutil.DefaultTimeout, "a lost lease", func() bool { return g.LeasesLost() == 1 })
	var rec registry.Executor
	var lease clientv3.LeaseID
	testutil.WaitFor(t, testutil.DefaultTimeout, "the record back under a new lease", func() bool {
		var ok bool
		rec, lease, ok = getExecutor(t, e.cli, "ex-1")
		return ok && lease != old
	})
	if rec.Connections != 3 {
		t.Errorf("re-registered record has %d connections, want 3: the executor keeps its devices", rec.Connections)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "Registered() after re-registration", g.Registered)
	if got := g.LeasesLost(); got != 1 {
		t.Errorf("LeasesLost() = %d, want 1", got)
	}
}

// TestRegistrationRunDeletesRecordOnReturn: when Run returns, the lease is
// revoked, so the record is gone at once rather than after the TTL.
func TestRegistrationRunDeletesRecordOnReturn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	g, err := e.reg.NewRegistration(testExecutor(), fastRegistration(), nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := goRun(t, g.Run)
	var lease clientv3.LeaseID
	testutil.WaitFor(t, testutil.DefaultTimeout, "the record", func() bool {
		var ok bool
		_, lease, ok = getExecutor(t, e.cli, "ex-1")
		return ok
	})

	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil after cancel", err)
	}
	if _, _, ok := getExecutor(t, e.cli, "ex-1"); ok {
		t.Error("record still present after Run returned")
	}
	ttl, err := e.cli.TimeToLive(ctx, lease)
	if err != nil {
		t.Fatalf("TimeToLive: %v", err)
	}
	if ttl.TTL != -1 {
		t.Errorf("lease TTL after Run returned = %d, want -1 (revoked)", ttl.TTL)
	}
	if g.Registered() {
		t.Error("Registered() = true after Run returned")
	}
}

// TestRegistrationStopsWhileEtcdIsDown cancels Run while etcd is
// unreachable: it must return rather than wait for etcd to come back.
func TestRegistrationStopsWhileEtcdIsDown(t *testing.T) {
	t.Parallel()
	cli := goneEtcdClient(t)
	g, err := registry.New(cli, testPrefix).NewRegistration(testExecutor(), fastRegistration(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Whether the cancel lands before or during the lease grant, which
	// cannot succeed now, Run must return.
	stop := goRun(t, g.Run)
	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil after cancel", err)
	}
	if g.Registered() {
		t.Error("Registered() = true with etcd down")
	}
}
