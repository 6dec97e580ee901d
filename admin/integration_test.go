package admin_test

import (
	"context"
	"crypto/ed25519"
	"net"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/admin"
	"github.com/berthproject/berth/controlplane"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// replica is a control plane on a real registry, serving Assign and
// AdminService on loopback, wired by hand as a replica's composition root
// wires them.
type replica struct {
	assign controlplanev1.ControlPlaneServiceClient
	admin  adminv1.AdminServiceClient
	srv    *controlplane.Server
}

func startReplica(t *testing.T, reg *registry.Registry, id string, key ed25519.PrivateKey) *replica {
	t.Helper()
	signer, err := token.NewSigner(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := controlplane.DefaultConfig()
	cfg.ReplicaID = id
	cache := reg.NewCache(nil)
	srv, err := controlplane.New(cfg, cache, reg, signer, nil)
	if err != nil {
		t.Fatal(err)
	}
	adm, err := admin.New(admin.Deps{Cache: cache, Policies: srv, Store: reg, Rebalance: reg, Fleet: reg, Access: reg, Identity: reg})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	controlplanev1.RegisterControlPlaneServiceServer(gs, srv)
	adm.Register(gs)
	ctx, cancel := context.WithCancel(context.Background())
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- cache.Run(ctx) }()
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		cancel()
		if err := <-cacheDone; err != nil {
			t.Errorf("cache Run: %v", err)
		}
	})
	return &replica{assign: controlplanev1.NewControlPlaneServiceClient(cc), admin: adminv1.NewAdminServiceClient(cc), srv: srv}
}

// TestReplicasFollowPolicy applies policies through one replica's Admin
// service and through the registry, and checks that every replica assigns by
// the new version, that a stale apply is refused without change, and that a
// bad document leaves the policy in force.
func TestReplicasFollowPolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: embedded etcd")
	}
	cli := testutil.EtcdClient(t, testutil.StartEtcd(t))
	reg := registry.New(cli, "/it")
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	for _, g := range []registry.Group{
		{ID: "std", Labels: []string{"default", "std"}, Capacity: 100, State: registry.GroupActive},
		{ID: "gold", Labels: []string{"gold"}, Capacity: 100, State: registry.GroupActive},
	} {
		if err := reg.PutGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []registry.Executor{
		{ID: "std-x", GroupID: "std", Address: "127.0.0.1:1", Capacity: 100},
		{ID: "gold-x", GroupID: "gold", Address: "127.0.0.1:2", Capacity: 100},
	} {
		r, err := reg.NewRegistration(e, registry.DefaultRegistrationConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithCancel(context.Background())
		rdone := make(chan error, 1)
		go func() { rdone <- r.Run(rctx) }()
		t.Cleanup(func() { rcancel(); <-rdone })
	}
	key, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a := startReplica(t, reg, "replica-a", key)
	b := startReplica(t, reg, "replica-b", key)

	groupOf := func(r *replica) string {
		resp, err := r.assign.Assign(ctx, &controlplanev1.AssignRequest{DeviceId: "dev-1", Spec: &controlplanev1.DeviceSpec{Model: "GOLD-1"}})
		if err != nil {
			return "error: " + status.Convert(err).Message()
		}
		return resp.GetDestination().GetGroupId()
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "both replicas assigning to std", func() bool {
		return groupOf(a) == "std" && groupOf(b) == "std"
	})
	if _, err := a.admin.GetPolicy(ctx, &adminv1.GetPolicyRequest{}); status.Code(err) != codes.NotFound {
		t.Errorf("GetPolicy before any apply = %v, want NOT_FOUND", err)
	}

	doc := `{"default_label": "std", "rules": [{"name": "gold-models", "when": "device.model.startsWith(\"GOLD\")", "label": "gold"}]}`
	applied, err := a.admin.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Document: doc, AppliedBy: "test"})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "both replicas assigning by the new policy", func() bool {
		return groupOf(a) == "gold" && groupOf(b) == "gold"
	})
	got, err := b.admin.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
	if err != nil || got.GetVersion() != applied.GetVersion() {
		t.Fatalf("replica b GetPolicy = %v, %v; want version %d", got, err, applied.GetVersion())
	}

	// A stale apply loses, and changes nothing.
	_, err = b.admin.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Document: `default_label: std`, BasedOnVersion: applied.GetVersion() - 1})
	if status.Code(err) != codes.Aborted {
		t.Errorf("stale apply = %v, want ABORTED", err)
	}
	// A bad document is refused with the rule and the reason, and changes
	// nothing.
	_, err = b.admin.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{
		Document:       `{"default_label": "std", "rules": [{"name": "typo", "when": "device.modle == \"x\"", "label": "gold"}]}`,
		BasedOnVersion: applied.GetVersion(),
	})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "rules[0] (typo).when") {
		t.Fatalf("bad apply = %v %q, want INVALID_ARGUMENT naming rules[0] (typo).when", st.Code(), st.Message())
	}
	var br *errdetails.BadRequest
	for _, d := range st.Details() {
		if x, ok := d.(*errdetails.BadRequest); ok {
			br = x
		}
	}
	if br == nil || len(br.GetFieldViolations()) != 1 {
		t.Errorf("bad apply details = %v, want one field violation", st.Details())
	}
	sp, err := reg.Policy(ctx)
	if err != nil || sp.Version != applied.GetVersion() {
		t.Errorf("stored policy version after refused applies = %d (%v), want %d", sp.Version, err, applied.GetVersion())
	}

	// Dry run and explain see the device, once replica a's cache holds
	// the record the last Assign wrote (it may have been b's).
	var dr *adminv1.DryRunPolicyResponse
	testutil.WaitFor(t, testutil.DefaultTimeout, "a dry run on replica a seeing the device in gold", func() bool {
		dr, err = a.admin.DryRunPolicy(ctx, &adminv1.DryRunPolicyRequest{Document: `default_label: std`})
		if err != nil {
			t.Fatal(err)
		}
		return dr.GetGroupChanges() == 1
	})
	if dr.GetDevices() != 1 || dr.GetLabelChanges() != 1 || dr.GetGroupChanges() != 1 {
		t.Errorf("dry run = %v, want 1 device relabelled and moved", dr)
	}
	ex, err := b.admin.Explain(ctx, &adminv1.ExplainRequest{DeviceId: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	if ex.GetRule() != "gold-models" || ex.GetGroupId() != "gold" || len(ex.GetCandidates()) != 1 {
		t.Errorf("explain = rule %q group %q candidates %d, want gold-models, gold, 1", ex.GetRule(), ex.GetGroupId(), len(ex.GetCandidates()))
	}
	if _, err := b.admin.Explain(ctx, &adminv1.ExplainRequest{DeviceId: "nobody"}); status.Code(err) != codes.NotFound {
		t.Errorf("explain of an unknown device = %v, want NOT_FOUND", err)
	}
}
