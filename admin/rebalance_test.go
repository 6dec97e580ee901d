package admin_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// TestAdminRebalance drives the drain, pause and migrate RPCs of the Admin
// service against a real registry and checks what they store.
func TestAdminRebalance(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: embedded etcd")
	}
	cli := testutil.EtcdClient(t, testutil.StartEtcd(t))
	reg := registry.New(cli, "/it")
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	if err := reg.PutGroup(ctx, registry.Group{ID: "g1", Labels: []string{"default"}, Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	key, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	r := startReplica(t, reg, "replica-a", key)
	code := func(err error) codes.Code { return status.Code(err) }

	if resp, err := r.admin.DrainGroup(ctx, &adminv1.DrainGroupRequest{GroupId: "g1"}); err != nil || resp.GetState() != "draining" {
		t.Fatalf("DrainGroup(g1) = %v, %v; want draining", resp, err)
	}
	if g, _ := reg.Group(ctx, "g1"); g.State != registry.GroupDraining {
		t.Errorf("stored g1 state %q, want draining", g.State)
	}
	if resp, err := r.admin.UndrainGroup(ctx, &adminv1.UndrainGroupRequest{GroupId: "g1"}); err != nil || resp.GetState() != "active" {
		t.Errorf("UndrainGroup(g1) = %v, %v; want active", resp, err)
	}
	if _, err := r.admin.DrainGroup(ctx, &adminv1.DrainGroupRequest{GroupId: "nope"}); code(err) != codes.NotFound {
		t.Errorf("DrainGroup(nope) = %v, want NOT_FOUND", err)
	}
	if _, err := r.admin.DrainGroup(ctx, &adminv1.DrainGroupRequest{GroupId: "a/b"}); code(err) != codes.InvalidArgument {
		t.Errorf("DrainGroup(a/b) = %v, want INVALID_ARGUMENT", err)
	}

	if _, err := r.admin.DrainExecutor(ctx, &adminv1.DrainExecutorRequest{ExecutorId: "ex-1", DrainedBy: "op"}); code(err) != codes.NotFound {
		t.Errorf("DrainExecutor(ex-1), not registered = %v, want NOT_FOUND", err)
	}
	if marks, _ := reg.ExecutorDrains(ctx); len(marks) != 0 {
		t.Errorf("drain marks %+v after a refused drain, want none", marks)
	}
	if resp, err := r.admin.DrainExecutor(ctx, &adminv1.DrainExecutorRequest{ExecutorId: "ex-1", DrainedBy: "op", AllowUnregistered: true}); err != nil || resp.GetRegistered() {
		t.Errorf("DrainExecutor(ex-1, allow_unregistered) = %v, %v; want a mark on an unregistered executor", resp, err)
	}
	if marks, _ := reg.ExecutorDrains(ctx); len(marks) != 1 || marks[0].By != "op" {
		t.Errorf("drain marks %+v, want ex-1 by op", marks)
	}
	if resp, err := r.admin.UndrainExecutor(ctx, &adminv1.UndrainExecutorRequest{ExecutorId: "ex-1"}); err != nil || !resp.GetWasDrained() {
		t.Errorf("UndrainExecutor(ex-1) = %v, %v; want was drained", resp, err)
	}
	if _, err := r.admin.UndrainExecutor(ctx, &adminv1.UndrainExecutorRequest{}); code(err) != codes.InvalidArgument {
		t.Errorf("UndrainExecutor() = %v, want INVALID_ARGUMENT", err)
	}

	st, err := r.admin.GetRebalanceStatus(ctx, &adminv1.GetRebalanceStatusRequest{})
	if err != nil || st.GetLeader() != "" || st.GetPaused() {
		t.Errorf("GetRebalanceStatus() with no rebalancer = %v, %v; want no leader, not paused", st, err)
	}
	if _, err := r.admin.PauseRebalance(ctx, &adminv1.PauseRebalanceRequest{PausedBy: "op", Reason: "window"}); err != nil {
		t.Fatal(err)
	}
	st, err = r.admin.GetRebalanceStatus(ctx, &adminv1.GetRebalanceStatusRequest{})
	if err != nil || !st.GetPaused() || st.GetPausedBy() != "op" || st.GetPausedReason() != "window" {
		t.Errorf("status after pause = %v, %v; want paused by op for window", st, err)
	}
	if _, err := r.admin.ResumeRebalance(ctx, &adminv1.ResumeRebalanceRequest{}); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.admin.GetRebalanceStatus(ctx, &adminv1.GetRebalanceStatusRequest{}); st.GetPaused() {
		t.Error("still paused after resume")
	}

	// A policy applied with migrate says so, until one is applied without.
	ap, err := r.admin.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Document: "default_label: default", Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the policy in the cache", func() bool {
		p, err := r.admin.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
		return err == nil && p.GetVersion() == ap.GetVersion()
	})
	if p, _ := r.admin.GetPolicy(ctx, &adminv1.GetPolicyRequest{}); !p.GetMigrate() {
		t.Error("GetPolicy().migrate = false after an apply with migrate")
	}
	ap2, err := r.admin.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Document: "default_label: default", BasedOnVersion: ap.GetVersion()})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the second policy in the cache", func() bool {
		p, err := r.admin.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
		return err == nil && p.GetVersion() == ap2.GetVersion() && !p.GetMigrate()
	})
	// A state stored by a leader reads back through the service.
	l, err := reg.Campaign(ctx, registry.RebalanceElection, "replica-a", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.PutRebalanceState(ctx, registry.RebalanceState{Leader: "replica-a", Plan: registry.RebalancePlan{Total: 7, Drain: 7},
		Progress: registry.RebalanceProgress{Moved: 3, ETASeconds: 1.5, StartedAt: time.Now()}, Settings: registry.RebalanceSettings{RateLimit: 5},
		Groups: []registry.GroupBalance{{ID: "g1", State: registry.GroupActive, Connected: 4, Fair: 4, Capacity: 10}}}); err != nil {
		t.Fatal(err)
	}
	st, err = r.admin.GetRebalanceStatus(ctx, &adminv1.GetRebalanceStatusRequest{})
	if err != nil || st.GetLeader() != "replica-a" || st.GetPlan().GetDrain() != 7 || st.GetProgress().GetMoved() != 3 ||
		st.GetProgress().GetEta().AsDuration() != 1500*time.Millisecond || st.GetSettings().GetRateLimit() != 5 || len(st.GetGroups()) != 1 {
		t.Errorf("GetRebalanceStatus() = %v, %v; want the stored state", st, err)
	}
}
