package rebalance_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/rebalance"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const prefix = "/rb-test"

// fixture is an embedded etcd with groups, executor records kept in step
// with the devices' presence, and a control plane cache.
type fixture struct {
	t     *testing.T
	cli   *clientv3.Client
	reg   *registry.Registry
	cache *registry.Cache
	ctx   context.Context

	mu    sync.Mutex
	moves []moveCall
	execs map[string]registry.Executor
}

// moveCall is one Move a fake mover received.
type moveCall struct {
	by, device, from, to string
	token                string
	// addr is where the Move was sent; endpoint is the destination
	// address the device is given.
	addr, endpoint string
	at             time.Time
}

func newFixture(t *testing.T, groups []registry.Group, execs []registry.Executor) *fixture {
	t.Helper()
	srv := testutil.StartEtcd(t)
	cli := testutil.EtcdClient(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{t: t, cli: cli, reg: registry.New(cli, prefix), ctx: ctx, execs: map[string]registry.Executor{}}
	for _, g := range groups {
		if err := f.reg.PutGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range execs {
		f.execs[e.ID] = e
	}
	f.syncCounts()
	f.cache = f.reg.NewCache(nil)
	var wg sync.WaitGroup
	wg.Go(func() { _ = f.cache.Run(ctx) })
	// Executor records follow presence, as executors' heartbeats do.
	wg.Go(func() {
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				f.syncCounts()
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return f
}

// syncCounts writes every executor's record with its presence count.
func (f *fixture) syncCounts() {
	resp, err := f.cli.Get(f.ctx, prefix+"/presence/", clientv3.WithPrefix())
	if err != nil {
		return
	}
	n := map[string]int{}
	for _, kv := range resp.Kvs {
		var p registry.Presence
		if json.Unmarshal(kv.Value, &p) == nil {
			n[p.ExecutorID]++
		}
	}
	for id, e := range f.execs {
		e.Connections = n[id]
		b, _ := json.Marshal(e)
		_, _ = f.cli.Put(f.ctx, prefix+"/executors/"+id, string(b))
	}
}

// connect makes devices present on exec with an assignment record of label.
func (f *fixture) connect(exec, label string, ids ...string) {
	f.t.Helper()
	e := f.execs[exec]
	for _, id := range ids {
		f.putPresence(registry.Presence{DeviceID: id, ExecutorID: exec, GroupID: e.GroupID, Address: e.Address})
		a := registry.Assignment{DeviceID: id, GroupID: e.GroupID, Label: label, AssignedAt: time.Now(), Inputs: &registry.DeviceInputs{Model: "m"},
			Thumbprint: "x5t-" + id, Enrollment: "factory"}
		if err := f.reg.PutAssignment(f.ctx, a); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) putPresence(p registry.Presence) {
	b, _ := json.Marshal(p)
	if _, err := f.cli.Put(f.ctx, prefix+"/presence/"+p.DeviceID, string(b)); err != nil {
		f.t.Error(err)
	}
}

// byGroup counts present devices per group.
func (f *fixture) byGroup() map[string]int {
	resp, err := f.cli.Get(f.ctx, prefix+"/presence/", clientv3.WithPrefix())
	if err != nil {
		f.t.Fatal(err)
	}
	n := map[string]int{}
	for _, kv := range resp.Kvs {
		var p registry.Presence
		if json.Unmarshal(kv.Value, &p) == nil {
			n[p.GroupID]++
		}
	}
	return n
}

func (f *fixture) calls() []moveCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]moveCall(nil), f.moves...)
}

func (f *fixture) state() registry.RebalanceState {
	st, _ := f.reg.RebalanceState(f.ctx)
	return st
}

// fakeMover moves a device the way the SDK does: it appears on the first
// endpoint of its destination.
type fakeMover struct {
	f    *fixture
	name string
}

func (m fakeMover) Move(_ context.Context, addr string, req *executorv1.MoveRequest) error {
	dest := req.GetDestination()
	ep := dest.GetEndpoints()[0]
	old, _ := m.f.reg.Presence(m.f.ctx, req.GetDeviceId())
	m.f.mu.Lock()
	m.f.moves = append(m.f.moves, moveCall{by: m.name, device: req.GetDeviceId(), from: old.GroupID, to: dest.GetGroupId(), token: dest.GetToken(), at: time.Now(),
		addr: addr, endpoint: ep.GetAddress()})
	m.f.mu.Unlock()
	m.f.putPresence(registry.Presence{DeviceID: req.GetDeviceId(), ExecutorID: ep.GetExecutorId(), GroupID: dest.GetGroupId(), Address: ep.GetAddress()})
	return nil
}

type fakeSigner struct{}

// SignBound makes a token that shows what it binds.
func (fakeSigner) SignBound(device, group, _ string, _ float64, ttl time.Duration, b token.Binding) (string, time.Time, error) {
	return "tok-" + device + "-" + group + "|" + b.Thumbprint + "|" + b.Enrollment, time.Now().Add(ttl), nil
}

func testConfig(id string) rebalance.Config {
	cfg := rebalance.DefaultConfig()
	cfg.ReplicaID = id
	cfg.Interval = 100 * time.Millisecond
	cfg.LeaseTTL = time.Second
	cfg.Thresholds = rebalance.Thresholds{Rel: 0.1, Abs: 2}
	cfg.MoveTimeout = 5 * time.Second
	cfg.HoldFor = 300 * time.Millisecond
	return cfg
}

// run starts a rebalancer named id; stop cancels it and waits.
func (f *fixture) run(cfg rebalance.Config) (*rebalance.Rebalancer, func()) {
	f.t.Helper()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("replica", cfg.ReplicaID)
	}
	rb, err := rebalance.New(cfg, f.reg, f.cache, fakeSigner{}, fakeMover{f: f, name: cfg.ReplicaID}, log)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rb.Run(ctx)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(testutil.DefaultTimeout):
				f.t.Errorf("rebalancer %s did not stop", cfg.ReplicaID)
			}
		})
	}
	f.t.Cleanup(stop)
	return rb, stop
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

func groupsAndExecs(n int) ([]registry.Group, []registry.Executor) {
	var gs []registry.Group
	var es []registry.Executor
	for i := 1; i <= n; i++ {
		g := fmt.Sprintf("g%d", i)
		gs = append(gs, registry.Group{ID: g, Labels: []string{"default"}, Capacity: 1000, State: registry.GroupActive})
		// Every other executor serves control planes on an internal
		// listener.
		e := registry.Executor{ID: g + "-x", GroupID: g, Address: g + ":1", Capacity: 1000}
		if i%2 == 1 {
			e.InternalAddress = g + "-internal:2"
		}
		es = append(es, e)
	}
	return gs, es
}

// maxPerSecond is the most moves in any one-second window.
func maxPerSecond(calls []moveCall) int {
	sort.Slice(calls, func(i, j int) bool { return calls[i].at.Before(calls[j].at) })
	best := 0
	for i := range calls {
		j := i
		for j < len(calls) && calls[j].at.Sub(calls[i].at) < time.Second {
			j++
		}
		best = max(best, j-i)
	}
	return best
}

// TestDrainGroupAtRate drains one of three groups of 20 devices: its
// devices move to the two others, evenly, never faster than the rate.
func TestDrainGroupAtRate(t *testing.T) {
	gs, es := groupsAndExecs(3)
	f := newFixture(t, gs, es)
	f.connect("g1-x", "default", ids("d", 20)...)
	f.connect("g2-x", "default", ids("e", 20)...)
	f.connect("g3-x", "default", ids("f", 20)...)
	if err := f.cache.WaitReady(f.ctx); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("cp-a")
	cfg.Rate = 10
	rb, _ := f.run(cfg)
	testutil.WaitFor(t, testutil.DefaultTimeout, "cp-a leading", rb.Leading)
	// Nothing to do yet.
	testutil.WaitFor(t, testutil.DefaultTimeout, "a first state", func() bool { return f.state().Leader == "cp-a" })
	if st := f.state(); st.Plan.Total != 0 {
		t.Errorf("plan before the drain = %+v, want nothing to do", st.Plan)
	}
	if _, err := f.reg.SetGroupState(f.ctx, "g1", registry.GroupDraining); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*testutil.DefaultTimeout, "g1 empty", func() bool { return f.byGroup()["g1"] == 0 })
	n := f.byGroup()
	if n["g2"]+n["g3"] != 60 || n["g2"]-n["g3"] > 2 || n["g3"]-n["g2"] > 2 {
		t.Errorf("devices by group after the drain = %v, want 60 spread evenly over g2 and g3", n)
	}
	calls := f.calls()
	if len(calls) != 20 {
		t.Errorf("%d moves, want 20 (one per device of g1)", len(calls))
	}
	if m := maxPerSecond(calls); m > int(cfg.Rate)+1 {
		t.Errorf("%d moves within one second; the rate is %v", m, cfg.Rate)
	}
	for _, c := range calls {
		// The Move goes to g1's executor's internal address; the device
		// is sent to the device address of its destination.
		if c.addr != "g1-internal:2" || c.endpoint != c.to+":1" {
			t.Errorf("move of %s sent to %q with endpoint %q; want g1-internal:2 and %s:1", c.device, c.addr, c.endpoint, c.to)
		}
		// A move's token keeps the identity the device proved at Assign.
		if want := "|x5t-" + c.device + "|factory"; !strings.HasSuffix(c.token, want) {
			t.Errorf("move token of %s = %q, want it bound (%s)", c.device, c.token, want)
		}
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the state to show the drain done", func() bool {
		st := f.state()
		return st.Plan.Total == 0 && st.Progress.Moved == 20 && st.Progress.InFlight == 0
	})
	rec, err := f.reg.Assignment(f.ctx, "d-000")
	if err != nil || rec.Writer != "rebalancer@cp-a" || rec.MovedAt.IsZero() || rec.GroupID == "g1" || rec.Thumbprint != "x5t-d-000" {
		t.Errorf("record of a moved device = %+v, %v; want written by rebalancer@cp-a with MovedAt, off g1", rec, err)
	}
}

// TestLeaderHandover stalls the leader mid-migration (its lease goes): its
// writes are refused, the other replica leads, carries the progress on and
// finishes, and no device moves twice.
func TestLeaderHandover(t *testing.T) {
	gs, es := groupsAndExecs(2)
	f := newFixture(t, gs, es)
	f.connect("g1-x", "default", ids("d", 200)...)
	if err := f.cache.WaitReady(f.ctx); err != nil {
		t.Fatal(err)
	}
	ca, cb := testConfig("cp-a"), testConfig("cp-b")
	ca.Rate, cb.Rate = 30, 30
	a, _ := f.run(ca)
	testutil.WaitFor(t, testutil.DefaultTimeout, "cp-a leading", a.Leading)
	b, stopB := f.run(cb)
	defer stopB()
	testutil.WaitFor(t, testutil.DefaultTimeout, "cp-a moving", func() bool { return len(f.calls()) >= 20 })
	started := f.state().Progress.StartedAt
	if started.IsZero() {
		t.Fatal("no migration start in the state")
	}

	// The leader stalls past its lease: the lease goes behind its back.
	resp, err := f.cli.Get(f.ctx, prefix+"/leaders/"+registry.RebalanceElection+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 || string(resp.Kvs[0].Value) != "cp-a" {
		t.Fatalf("leader key: %v %v", resp, err)
	}
	revoked := time.Now()
	if _, err := f.cli.Revoke(f.ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "cp-b leading", b.Leading)
	// 200 devices over two groups: fair 100, threshold 10; g1 ends at 110.
	testutil.WaitFor(t, 2*testutil.DefaultTimeout, "balance within the threshold", func() bool {
		n := f.byGroup()
		return n["g1"] <= 110 && n["g2"] >= 90
	})
	testutil.WaitFor(t, testutil.DefaultTimeout, "cp-b's state: done", func() bool {
		st := f.state()
		return st.Leader == "cp-b" && st.Plan.Total == 0 && st.Progress.InFlight == 0
	})
	st := f.state()
	calls := f.calls()
	seen := map[string]bool{}
	late := 0
	for _, c := range calls {
		if seen[c.device] {
			t.Errorf("device %s moved twice", c.device)
		}
		seen[c.device] = true
		if c.by == "cp-a" && c.at.After(revoked) {
			late++
		}
	}
	// A move whose fenced record write came just before the revoke may
	// reach the executor just after it; nothing later.
	if late > 1 {
		t.Errorf("cp-a made %d moves after its lease went", late)
	}
	if len(calls) != 90 {
		t.Errorf("%d moves, want the minimum 90", len(calls))
	}
	// Moves confirmed between the old leader's last state and the new
	// leader's first look may go uncounted; the rest carry on.
	if st.Progress.Moved > int64(len(calls)) || st.Progress.Moved < int64(len(calls))-5 || !st.Progress.StartedAt.Equal(started) {
		t.Errorf("progress moved %d since %v, want about %d since %v: the new leader carries the migration on", st.Progress.Moved, st.Progress.StartedAt, len(calls), started)
	}
	var byB int
	for _, c := range calls {
		if c.by == "cp-b" {
			byB++
		}
	}
	if byB == 0 {
		t.Error("cp-b made no move: it did not finish the migration")
	}
}

// TestPauseAndHold checks that an operator's pause stops moves and a
// resume lets them go on, and that a reconnect storm holds them.
func TestPauseAndHold(t *testing.T) {
	gs, es := groupsAndExecs(2)
	f := newFixture(t, gs, es)
	f.connect("g1-x", "default", ids("d", 40)...)
	if err := f.reg.SetRebalancePause(f.ctx, &registry.RebalancePause{By: "op", Reason: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := f.cache.WaitReady(f.ctx); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("cp-a")
	cfg.Rate = 200
	cfg.MaxReconnectRate = 20
	f.run(cfg)
	testutil.WaitFor(t, testutil.DefaultTimeout, "a paused plan", func() bool {
		st := f.state()
		return st.Paused && st.Plan.Balance == 18
	})
	if n := len(f.calls()); n != 0 {
		t.Fatalf("%d moves while paused", n)
	}

	// A storm: 400 devices connect at once, none moved by the rebalancer.
	storm := ids("s", 400)
	for _, id := range storm {
		f.putPresence(registry.Presence{DeviceID: id, ExecutorID: "g2-x", GroupID: "g2", Address: "g2:1"})
	}
	if err := f.reg.SetRebalancePause(f.ctx, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "a hold", func() bool {
		st := f.state()
		return !st.Paused && st.Held != ""
	})
	if n := len(f.calls()); n != 0 {
		t.Errorf("%d moves during the storm", n)
	}
	// The storm devices go; once quiet, the 18 moves happen.
	if _, err := f.cli.Delete(f.ctx, prefix+"/presence/s-", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*testutil.DefaultTimeout, "moves after the storm", func() bool { return len(f.calls()) == 18 })
	testutil.WaitFor(t, testutil.DefaultTimeout, "no hold", func() bool { return f.state().Held == "" })
}
