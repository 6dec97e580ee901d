package registry_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// replacements collects what a Registration's OnReplaced is told.
type replacements struct {
	mu  sync.Mutex
	got []registry.Replacement
}

func (r *replacements) add(x registry.Replacement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, x)
}

func (r *replacements) has(session string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.got {
		if x.SessionID == session {
			return true
		}
	}
	return false
}

func (r *replacements) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// presenceExec starts a registration for executor id and returns it with
// what its OnReplaced is told.
func presenceExec(t *testing.T, e *env, id string) (*registry.Registration, *replacements) {
	t.Helper()
	ex := testExecutor()
	ex.ID = id
	g, err := e.reg.NewRegistration(ex, fastRegistration(), nil)
	if err != nil {
		t.Fatal(err)
	}
	reps := &replacements{}
	g.OnReplaced(reps.add)
	goRun(t, g.Run)
	testutil.WaitFor(t, testutil.DefaultTimeout, id+" registered", g.Registered)
	return g, reps
}

func presenceOf(exec, session string) registry.Presence {
	return registry.Presence{DeviceID: "d1", ExecutorID: exec, GroupID: "g1", Address: "127.0.0.1:7001", SessionID: session, Since: time.Unix(1, 0).UTC()}
}

// presenceNames waits until d1's record names session ("" for none) and
// every change of both registrations is written.
func presenceNames(t *testing.T, e *env, session string, gs ...*registry.Registration) {
	t.Helper()
	testutil.WaitFor(t, testutil.DefaultTimeout, "d1's presence naming "+session, func() bool {
		for _, g := range gs {
			if g.PresencePending() > 0 {
				return false
			}
		}
		p, err := e.reg.Presence(testContext(t), "d1")
		if session == "" {
			return errors.Is(err, registry.ErrNotFound)
		}
		return err == nil && p.SessionID == session
	})
}

// TestPresenceNewerSessionReplacesOlder: the later put wins, the executor
// of the session it overwrote is told (and only it, only for that
// session), and the older session's end deletes nothing of the newer one.
func TestPresenceNewerSessionReplacesOlder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, repA := presenceExec(t, e, "ex-a")
	b, repB := presenceExec(t, e, "ex-b")

	a.SetPresence(presenceOf("ex-a", "s1"))
	presenceNames(t, e, "s1", a, b)
	b.SetPresence(presenceOf("ex-b", "s2"))
	presenceNames(t, e, "s2", a, b)
	testutil.WaitFor(t, testutil.DefaultTimeout, "ex-a told that s1 was replaced", func() bool { return repA.has("s1") })
	// The notice is deleted once handled.
	testutil.WaitFor(t, testutil.DefaultTimeout, "the notice deleted", func() bool {
		resp, err := e.cli.Get(testContext(t), testPrefix+"/replaced/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 0
	})

	// The replaced session ends: the newer record stays.
	a.ClearPresence("d1", "s1")
	presenceNames(t, e, "s2", a, b)
	// The newer one ends: nothing is left.
	b.ClearPresence("d1", "s2")
	presenceNames(t, e, "", a, b)
	if n := repB.len(); n != 0 {
		t.Errorf("ex-b told of %d replacements; want none", n)
	}
}

// TestPresenceUnsentSessionLeavesNothing: a session that ends before its
// put was sent writes nothing, so it cannot touch another's record.
func TestPresenceUnsentSessionLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b, _ := presenceExec(t, e, "ex-b")
	b.SetPresence(presenceOf("ex-b", "s2"))
	presenceNames(t, e, "s2", b)

	ex := testExecutor()
	ex.ID = "ex-a"
	a, err := e.reg.NewRegistration(ex, fastRegistration(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Not running: nothing is sent.
	a.SetPresence(presenceOf("ex-a", "s1"))
	a.ClearPresence("d1", "s1")
	if n := a.PresencePending(); n != 0 {
		t.Errorf("PresencePending = %d after a session that was never written ended; want 0", n)
	}
	goRun(t, a.Run)
	testutil.WaitFor(t, testutil.DefaultTimeout, "ex-a registered", a.Registered)
	presenceNames(t, e, "s2", a, b)
}

// TestPresenceRewriteNeverOverwritesNewer: after its lease is lost, an
// executor writes its sessions' records again, but only where the record
// is still its own or absent; a newer session's record stays, and the
// executor learns that its session was replaced.
func TestPresenceRewriteNeverOverwritesNewer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	a, repA := presenceExec(t, e, "ex-a")
	a.SetPresence(presenceOf("ex-a", "s1"))
	presenceNames(t, e, "s1", a)
	a.SetPresence(registry.Presence{DeviceID: "d2", ExecutorID: "ex-a", GroupID: "g1", Address: "127.0.0.1:7001", SessionID: "s3"})
	testutil.WaitFor(t, testutil.DefaultTimeout, "d2's presence", func() bool {
		p, err := e.reg.Presence(ctx, "d2")
		return err == nil && p.SessionID == "s3" && a.PresencePending() == 0
	})

	// A newer session's record, written with no notice (as if its notice
	// was lost), then ex-a's lease is revoked: d1 keeps the newer record,
	// d2 (absent now) is written again.
	newer, err := json.Marshal(presenceOf("ex-b", "s2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Put(ctx, testPrefix+"/presence/d1", string(newer)); err != nil {
		t.Fatal(err)
	}
	resp, err := e.cli.Get(ctx, testPrefix+"/presence/d2")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("Get d2: %v, %v", resp, err)
	}
	lost := a.LeasesLost()
	if _, err := e.cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "ex-a told that s1 was replaced", func() bool { return repA.has("s1") })
	testutil.WaitFor(t, testutil.DefaultTimeout, "d2 written again under a new lease", func() bool {
		p, err := e.reg.Presence(ctx, "d2")
		return a.LeasesLost() > lost && err == nil && p.SessionID == "s3"
	})
	if p, err := e.reg.Presence(ctx, "d1"); err != nil || p.SessionID != "s2" {
		t.Errorf("d1's presence = %+v, %v; want the newer session s2", p, err)
	}
	if repA.has("s3") {
		t.Error("ex-a told that s3 was replaced; nothing replaced it")
	}
}

// TestPresenceWritten: the channel closes once the put is applied, and
// the record is then visible to readers; another session or an ended one
// is not present.
func TestPresenceWritten(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ex := testExecutor()
	ex.ID = "ex-a"
	a, err := e.reg.NewRegistration(ex, fastRegistration(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.PresenceWritten("d1", "s1"); ok {
		t.Fatal("PresenceWritten before SetPresence: ok; want not present")
	}
	a.SetPresence(presenceOf("ex-a", "s1"))
	if _, ok := a.PresenceWritten("d1", "s0"); ok {
		t.Error("PresenceWritten for another session: ok; want not present")
	}
	written, ok := a.PresenceWritten("d1", "s1")
	if !ok {
		t.Fatal("PresenceWritten after SetPresence: not present")
	}
	// Not running: nothing is written.
	select {
	case <-written:
		t.Fatal("presence reported written before the registration ran")
	default:
	}
	goRun(t, a.Run)
	select {
	case <-written:
	case <-time.After(testutil.DefaultTimeout):
		t.Fatalf("presence not reported written within %v", testutil.DefaultTimeout)
	}
	if p, err := e.reg.Presence(testContext(t), "d1"); err != nil || p.SessionID != "s1" {
		t.Errorf("Presence(d1) once reported written = %+v, %v; want session s1", p, err)
	}
	again, ok := a.PresenceWritten("d1", "s1")
	if !ok {
		t.Fatal("PresenceWritten after the write: not present")
	}
	select {
	case <-again:
	default:
		t.Error("PresenceWritten after the write: channel open; want closed")
	}
	a.ClearPresence("d1", "s1")
	if _, ok := a.PresenceWritten("d1", "s1"); ok {
		t.Error("PresenceWritten after ClearPresence: ok; want not present")
	}
}

// TestPresenceInternalAddress: a presence record keeps the executor's
// internal address, which control planes dial; a record without one (as
// executors serving control planes on their device port, and older ones,
// write) is dialed at its device address.
func TestPresenceInternalAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := presenceExec(t, e, "ex-a")
	p := presenceOf("ex-a", "s1")
	p.InternalAddress = "127.0.0.1:7101"
	a.SetPresence(p)
	presenceNames(t, e, "s1", a)
	got, err := e.reg.Presence(testContext(t), "d1")
	if err != nil {
		t.Fatal(err)
	}
	if got.InternalAddress != p.InternalAddress || got.ControlAddress() != p.InternalAddress {
		t.Errorf("presence read back with internal address %q, control address %q; want %q for both", got.InternalAddress, got.ControlAddress(), p.InternalAddress)
	}

	var old registry.Presence
	if err := json.Unmarshal([]byte(`{"device":"d1","executor":"ex-a","group":"g1","address":"127.0.0.1:7001","session":"s0"}`), &old); err != nil {
		t.Fatal(err)
	}
	if got := old.ControlAddress(); got != "127.0.0.1:7001" {
		t.Errorf("an old record's control address = %q, want its device address 127.0.0.1:7001", got)
	}
}

// TestQueuedAtPresence: the device's queue is counted in the transaction
// that first writes a session's presence, and told once that put applied:
// two messages of d1 (not those of d10, whose keys share the prefix
// "d1"), none for d2.
func TestQueuedAtPresence(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	exp := time.Now().Add(time.Hour)
	for _, dev := range []string{"d1", "d1", "d10"} {
		m := registry.QueuedMessage{DeviceID: dev, Payload: []byte("x"), EnqueuedAt: time.Now(), ExpiresAt: exp}
		if _, _, err := e.reg.Enqueue(ctx, m, registry.QueueLimits{}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := e.reg.NewRegistration(testExecutor(), fastRegistration(), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.SetPresence(presenceOf("ex-1", "s1"))
	p2 := presenceOf("ex-1", "s2")
	p2.DeviceID = "d2"
	a.SetPresence(p2)
	if _, ok := a.QueuedAtPresence("d1", "s1"); ok {
		t.Fatal("QueuedAtPresence before the presence was written: ok; want not known")
	}
	goRun(t, a.Run)
	for _, tt := range []struct {
		dev, session string
		want         int64
	}{{"d1", "s1", 2}, {"d2", "s2", 0}} {
		written, ok := a.PresenceWritten(tt.dev, tt.session)
		if !ok {
			t.Fatalf("PresenceWritten(%s, %s): not present", tt.dev, tt.session)
		}
		select {
		case <-written:
		case <-time.After(testutil.DefaultTimeout):
			t.Fatalf("%s's presence not written within %v", tt.dev, testutil.DefaultTimeout)
		}
		if n, ok := a.QueuedAtPresence(tt.dev, tt.session); !ok || n != tt.want {
			t.Errorf("QueuedAtPresence(%s, %s) = %d, %v; want %d, true", tt.dev, tt.session, n, ok, tt.want)
		}
	}
	if _, ok := a.QueuedAtPresence("d1", "s0"); ok {
		t.Error("QueuedAtPresence for another session: ok; want not known")
	}
}

// TestPresenceBatchWithinEtcdLimits: a burst of connects and disconnects
// together (first puts with their queue counts, and conditional deletes,
// which nest a transaction) is written in batches etcd accepts: every
// change lands.
func TestPresenceBatchWithinEtcdLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A batch etcd refuses is retried, differently composed, and may pass:
	// the log must show no refusal at all.
	var logged testutil.SyncBuffer
	a, err := e.reg.NewRegistration(testExecutor(), fastRegistration(), slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	dev := func(i int) registry.Presence {
		p := presenceOf("ex-1", fmt.Sprintf("s%d", i))
		p.DeviceID = fmt.Sprintf("dev-%03d", i)
		return p
	}
	for i := range 150 {
		a.SetPresence(dev(i))
	}
	goRun(t, a.Run)
	ctx := testContext(t)
	// present reports whether every sampled device's record is there or
	// gone as want says (PresencePending does not count a batch in flight).
	present := func(want func(i int) bool, sample ...int) bool {
		for _, i := range sample {
			_, err := e.reg.Presence(ctx, dev(i).DeviceID)
			if (err == nil) != want(i) || (err != nil && !errors.Is(err, registry.ErrNotFound)) {
				return false
			}
		}
		return true
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "150 presences written", func() bool {
		return present(func(int) bool { return true }, 0, 75, 149)
	})
	// 100 leave and 100 others come at once: batches mix deletes and puts.
	for i := range 100 {
		a.ClearPresence(dev(i).DeviceID, dev(i).SessionID)
		a.SetPresence(dev(150 + i))
	}
	sample := make([]int, 250)
	for i := range sample {
		sample[i] = i
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "every change written", func() bool {
		return present(func(i int) bool { return i >= 100 }, sample...)
	})
	if out := logged.String(); strings.Contains(out, "presence write failed") {
		t.Errorf("a presence batch was refused:\n%s", out)
	}
}
