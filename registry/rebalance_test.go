package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

func TestSetGroupState(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	if err := e.reg.PutGroup(ctx, registry.Group{ID: "g1", Labels: []string{"default"}, Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	g, err := e.reg.SetGroupState(ctx, "g1", registry.GroupDraining)
	if err != nil || g.State != registry.GroupDraining || g.Capacity != 10 {
		t.Fatalf("SetGroupState(g1, draining) = %+v, %v; want the group, draining", g, err)
	}
	if got, _ := e.reg.Group(ctx, "g1"); got.State != registry.GroupDraining || len(got.Labels) != 1 {
		t.Errorf("stored group = %+v, want draining with its labels", got)
	}
	if _, err := e.reg.SetGroupState(ctx, "nope", registry.GroupActive); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("SetGroupState(nope) err = %v, want ErrNotFound", err)
	}
	if _, err := e.reg.SetGroupState(ctx, "g1", "sleeping"); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("SetGroupState(g1, sleeping) err = %v, want ErrInvalid", err)
	}
}

// TestDrainMarkReachesTheRecord checks that an operator's drain mark makes
// the executor's own record say draining, across the mark's coming and
// going, and that a mark set before registration applies from the first
// write.
func TestDrainMarkReachesTheRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	if err := e.reg.PutExecutorDrain(ctx, registry.ExecutorDrain{ExecutorID: "ex-1", By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	g, err := e.reg.NewRegistration(testExecutor(), fastRegistration(), nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := goRun(t, g.Run)
	testutil.WaitFor(t, testutil.DefaultTimeout, "record written", func() bool {
		_, _, ok := getExecutor(t, e.cli, "ex-1")
		return ok
	})
	rec, _, _ := getExecutor(t, e.cli, "ex-1")
	if !rec.Draining || !rec.DrainMarked {
		t.Errorf("first record of a marked executor = %+v, want Draining and DrainMarked", rec)
	}
	marks, err := e.reg.ExecutorDrains(ctx)
	if err != nil || len(marks) != 1 || marks[0].ExecutorID != "ex-1" || marks[0].By != "test" {
		t.Errorf("ExecutorDrains() = %+v, %v; want the mark of ex-1 by test", marks, err)
	}

	if was, err := e.reg.DeleteExecutorDrain(ctx, "ex-1"); !was || err != nil {
		t.Fatalf("DeleteExecutorDrain(ex-1) = %v, %v; want true, nil", was, err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "record without the mark", func() bool {
		rec, _, _ := getExecutor(t, e.cli, "ex-1")
		return !rec.Draining && !rec.DrainMarked
	})
	if g.DrainMarked() {
		t.Error("DrainMarked() = true after the mark was deleted")
	}
	if err := e.reg.PutExecutorDrain(ctx, registry.ExecutorDrain{ExecutorID: "ex-1", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "record with the mark again", func() bool {
		rec, _, _ := getExecutor(t, e.cli, "ex-1")
		return rec.Draining && rec.DrainMarked
	})
	if err := stop(); err != nil {
		t.Errorf("Run() = %v", err)
	}
	if was, err := e.reg.DeleteExecutorDrain(ctx, "never-marked"); was || err != nil {
		t.Errorf("DeleteExecutorDrain(never-marked) = %v, %v; want false, nil", was, err)
	}
	if err := e.reg.PutExecutorDrain(ctx, registry.ExecutorDrain{ExecutorID: "a/b"}); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("PutExecutorDrain(a/b) err = %v, want ErrInvalid", err)
	}
}

// TestLeadershipFencesWrites checks that a leader's writes commit while it
// leads and are refused once its leadership is over, even if it has not
// noticed, and that the next candidate then leads.
func TestLeadershipFencesWrites(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	if _, err := e.reg.Leader(ctx, "el"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Leader() with no candidate err = %v, want ErrNotFound", err)
	}
	a, err := e.reg.Campaign(ctx, "el", "cp-a", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if id, err := e.reg.Leader(ctx, "el"); id != "cp-a" || err != nil {
		t.Errorf("Leader() = %q, %v; want cp-a", id, err)
	}
	st := registry.RebalanceState{Leader: "cp-a", Term: a.Rev(), Plan: registry.RebalancePlan{Total: 3}}
	if err := a.PutRebalanceState(ctx, st); err != nil {
		t.Fatalf("PutRebalanceState by the leader: %v", err)
	}
	rec := registry.Assignment{DeviceID: "d1", GroupID: "g2", Label: "default", MovedAt: time.Now().UTC().Truncate(time.Millisecond)}
	if err := a.PutAssignments(ctx, []registry.Assignment{rec}); err != nil {
		t.Fatalf("PutAssignments by the leader: %v", err)
	}
	if got, err := e.reg.Assignment(ctx, "d1"); err != nil || got.GroupID != "g2" || !got.MovedAt.Equal(rec.MovedAt) {
		t.Errorf("Assignment(d1) = %+v, %v; want group g2 moved at %v", got, err, rec.MovedAt)
	}

	// B campaigns and waits behind A.
	type won struct {
		l   *registry.Leadership
		err error
	}
	bch := make(chan won, 1)
	bctx, bcancel := context.WithCancel(ctx)
	defer bcancel()
	go func() {
		l, err := e.reg.Campaign(bctx, "el", "cp-b", 2*time.Second)
		bch <- won{l, err}
	}()
	select {
	case w := <-bch:
		t.Fatalf("B won while A leads: %v", w.err)
	case <-time.After(200 * time.Millisecond):
	}

	// A's lease goes behind its back (as when it stalls past its TTL): its
	// writes are refused, and B leads.
	if _, err := e.cli.Revoke(ctx, leaseOf(t, e, "el")); err != nil {
		t.Fatal(err)
	}
	var b *registry.Leadership
	select {
	case w := <-bch:
		if w.err != nil {
			t.Fatal(w.err)
		}
		b = w.l
	case <-time.After(testutil.DefaultTimeout):
		t.Fatal("B did not lead after A's lease went")
	}
	defer b.Close()
	if b.Rev() <= a.Rev() {
		t.Errorf("B's term %d not after A's %d", b.Rev(), a.Rev())
	}
	if err := a.PutRebalanceState(ctx, registry.RebalanceState{Leader: "cp-a", Plan: registry.RebalancePlan{Total: 99}}); !errors.Is(err, registry.ErrNotLeader) {
		t.Errorf("PutRebalanceState by the old leader err = %v, want ErrNotLeader", err)
	}
	if err := a.PutAssignments(ctx, []registry.Assignment{{DeviceID: "d1", GroupID: "g9"}}); !errors.Is(err, registry.ErrNotLeader) {
		t.Errorf("PutAssignments by the old leader err = %v, want ErrNotLeader", err)
	}
	got, err := e.reg.RebalanceState(ctx)
	if err != nil || got.Plan.Total != 3 {
		t.Errorf("RebalanceState() = %+v, %v; want the old leader's last fenced write (total 3)", got, err)
	}
	if err := b.PutRebalanceState(ctx, registry.RebalanceState{Leader: "cp-b", Term: b.Rev()}); err != nil {
		t.Errorf("PutRebalanceState by the new leader: %v", err)
	}
	if id, _ := e.reg.Leader(ctx, "el"); id != "cp-b" {
		t.Errorf("Leader() = %q, want cp-b", id)
	}
	select {
	case <-a.Done():
	case <-time.After(testutil.DefaultTimeout):
		t.Error("A's Done not closed after its lease was revoked")
	}
}

// leaseOf returns the lease of the current leader of election name.
func leaseOf(t *testing.T, e *env, name string) clientv3.LeaseID {
	t.Helper()
	resp, err := e.cli.Get(testContext(t), testPrefix+"/leaders/"+name+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("leader key of %s: %v", name, err)
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

func TestPolicyMigrateMark(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	c, err := e.reg.RebalanceControl(ctx)
	if err != nil || c.Pause != nil || c.MigrateVersion != 0 {
		t.Fatalf("RebalanceControl() on an empty registry = %+v, %v", c, err)
	}
	doc := json.RawMessage(`{"defaultLabel":"std"}`)
	v1, err := e.reg.PutPolicyMigrating(ctx, registry.StoredPolicy{Document: doc, AppliedBy: "op"}, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := e.reg.RebalanceControl(ctx); c.MigrateVersion != v1 {
		t.Errorf("MigrateVersion = %d, want the policy's version %d", c.MigrateVersion, v1)
	}
	if sp, _ := e.reg.Policy(ctx); sp.Version != v1 {
		t.Errorf("policy version %d, want %d", sp.Version, v1)
	}
	if _, err := e.reg.PutPolicyMigrating(ctx, registry.StoredPolicy{Document: doc}, 0, true); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("apply based on a stale version err = %v, want ErrConflict", err)
	}
	// A policy applied without migrate clears the mark; one applied by
	// plain PutPolicy leaves it at an older version.
	v2, err := e.reg.PutPolicyMigrating(ctx, registry.StoredPolicy{Document: doc}, v1, false)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := e.reg.RebalanceControl(ctx); c.MigrateVersion != 0 {
		t.Errorf("MigrateVersion after an apply without migrate = %d, want 0", c.MigrateVersion)
	}
	v3, err := e.reg.PutPolicyMigrating(ctx, registry.StoredPolicy{Document: doc}, v2, true)
	if err != nil {
		t.Fatal(err)
	}
	v4, err := e.reg.PutPolicy(ctx, registry.StoredPolicy{Document: doc}, v3)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := e.reg.RebalanceControl(ctx); c.MigrateVersion != v3 || c.MigrateVersion == v4 {
		t.Errorf("MigrateVersion = %d, want %d (not the plain apply's %d)", c.MigrateVersion, v3, v4)
	}

	if err := e.reg.SetRebalancePause(ctx, &registry.RebalancePause{By: "op", Reason: "maintenance", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if c, _ := e.reg.RebalanceControl(ctx); c.Pause == nil || c.Pause.By != "op" || c.Pause.Reason != "maintenance" {
		t.Errorf("Pause = %+v, want by op for maintenance", c.Pause)
	}
	if err := e.reg.SetRebalancePause(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if c, _ := e.reg.RebalanceControl(ctx); c.Pause != nil {
		t.Errorf("Pause after resume = %+v, want none", c.Pause)
	}
}

func TestPresenceView(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	put := func(id, exec string) {
		b, _ := json.Marshal(registry.Presence{DeviceID: id, ExecutorID: exec, GroupID: "g1"})
		if _, err := e.cli.Put(ctx, testPrefix+"/presence/"+id, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	put("d1", "ex-1")
	v := e.reg.NewPresenceView(nil)
	changes := make(chan string, 10)
	v.OnChange(func(id string, p *registry.Presence) {
		if p == nil {
			changes <- id + ":gone"
			return
		}
		changes <- id + ":" + p.ExecutorID
	})
	goRun(t, v.Run)
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if p, ok := v.Get("d1"); !ok || p.ExecutorID != "ex-1" || v.Len() != 1 || !v.Ready() {
		t.Fatalf("after the listing: Get(d1) = %+v, %v; Len %d", p, ok, v.Len())
	}
	put("d2", "ex-2")
	put("d1", "ex-3")
	if _, err := e.cli.Delete(ctx, testPrefix+"/presence/d2"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 3 {
		select {
		case c := <-changes:
			got = append(got, c)
		case <-time.After(testutil.DefaultTimeout):
			t.Fatalf("changes so far %v, want 3", got)
		}
	}
	want := []string{"d2:ex-2", "d1:ex-3", "d2:gone"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("changes = %v, want %v", got, want)
		}
	}
	if p, _ := v.Get("d1"); p.ExecutorID != "ex-3" || v.Len() != 1 {
		t.Errorf("Get(d1) = %+v, Len %d; want ex-3 and 1 device", p, v.Len())
	}
	n := 0
	v.Range(func(registry.Presence) bool { n++; return true })
	if n != 1 {
		t.Errorf("Range visited %d devices, want 1", n)
	}
}
