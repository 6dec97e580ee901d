package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// startReplica runs a replica without a rebalancer on reg and returns its
// address once it serves.
func startReplica(ctx context.Context, t *testing.T, reg *registry.Registry, id string) string {
	t.Helper()
	addr, _ := runReplica(ctx, t, reg, id, newKeys(t).signer, false)
	return addr
}

// runReplica runs a replica without a rebalancer on reg, signing tokens
// with signer, enrollment open when open; it returns its address once it
// serves, and the replica. It is stopped (and must stop cleanly) at
// cleanup.
func runReplica(ctx context.Context, t *testing.T, reg *registry.Registry, id string, signer *token.Signer, open bool) (string, *node.Replica) {
	t.Helper()
	cfg := node.DefaultReplicaConfig()
	cfg.ControlPlane.ReplicaID = id
	cfg.OpenEnrollment = open
	cfg.Rebalance = nil
	r, err := node.NewReplica(cfg, node.ReplicaDeps{Registry: reg, Signer: signer})
	if err != nil {
		t.Fatal(err)
	}
	lis := listen(t)
	run := start(r.Run, lis)
	t.Cleanup(func() {
		if err := run.stop(); err != nil {
			t.Errorf("replica %s Run = %v", id, err)
		}
	})
	health := healthpb.NewHealthClient(dial(t, lis.Addr().String()))
	testutil.WaitFor(t, testutil.DefaultTimeout, id+" SERVING", func() bool {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
	return lis.Addr().String(), r
}

// TestReplicaAccess: AdminService and MessagingService need a known key
// with the right role; a tenant-limited service reaches only its tenant's
// devices; the audit trail and the policy name the real caller; a key
// revoked on one replica is refused by another within 2 s.
func TestReplicaAccess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	reg := newRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	for _, a := range []registry.Assignment{
		{DeviceID: "dev-t1", GroupID: "g1", Label: "default", Inputs: &registry.DeviceInputs{Tenant: "t1"}},
		{DeviceID: "dev-t2", GroupID: "g1", Label: "default", Inputs: &registry.DeviceInputs{Tenant: "t2"}},
	} {
		if err := reg.PutAssignment(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	adminKey := apiKey(t, reg, "root", []string{"admin"})
	viewerKey := apiKey(t, reg, "watcher", []string{"viewer"})
	operatorKey := apiKey(t, reg, "alice", []string{"operator"})
	serviceKey := apiKey(t, reg, "billing", []string{"service"}, "t1")
	addr := startReplica(ctx, t, reg, "cp-a")
	addr2 := startReplica(ctx, t, reg, "cp-b")

	adminOf := func(key string) adminv1.AdminServiceClient {
		if key == "" {
			return adminv1.NewAdminServiceClient(dial(t, addr))
		}
		return adminv1.NewAdminServiceClient(dialKey(t, addr, key))
	}
	msgOf := func(key string) messagingv1.MessagingServiceClient {
		if key == "" {
			return messagingv1.NewMessagingServiceClient(dial(t, addr))
		}
		return messagingv1.NewMessagingServiceClient(dialKey(t, addr, key))
	}
	policy := "default_label: default\n"
	tests := []struct {
		name     string
		call     func() error
		want     codes.Code
		wantText string
	}{
		{name: "no key, admin", call: func() error { _, err := adminOf("").ListGroups(ctx, &adminv1.ListGroupsRequest{}); return err }, want: codes.Unauthenticated},
		{name: "no key, messaging", call: func() error {
			_, err := msgOf("").GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: "dev-t1"})
			return err
		}, want: codes.Unauthenticated},
		{name: "unknown key", call: func() error {
			_, err := adminOf("0123456789abcdef.bm90LWEta2V5").ListGroups(ctx, &adminv1.ListGroupsRequest{})
			return err
		}, want: codes.Unauthenticated, wantText: "unknown or revoked"},
		{name: "wrong secret of a known key", call: func() error {
			id, _, _ := strings.Cut(viewerKey, ".")
			_, err := adminOf(id+".d3Jvbmc").ListGroups(ctx, &adminv1.ListGroupsRequest{})
			return err
		}, want: codes.Unauthenticated},
		{name: "viewer reads", call: func() error { _, err := adminOf(viewerKey).ListGroups(ctx, &adminv1.ListGroupsRequest{}); return err }},
		{name: "viewer applies a policy", call: func() error {
			_, err := adminOf(viewerKey).ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Document: policy})
			return err
		}, want: codes.PermissionDenied, wantText: "needs role operator"},
		{name: "operator creates a key", call: func() error {
			_, err := adminOf(operatorKey).CreateAPIKey(ctx, &adminv1.CreateAPIKeyRequest{Name: "x", Roles: []string{"admin"}})
			return err
		}, want: codes.PermissionDenied, wantText: "needs role admin"},
		{name: "viewer sends", call: func() error {
			_, err := msgOf(viewerKey).Send(ctx, &messagingv1.SendRequest{DeviceId: "dev-t1", Payload: []byte("x")})
			return err
		}, want: codes.PermissionDenied, wantText: "needs role service"},
		{name: "operator changes groups", call: func() error {
			_, err := adminOf(operatorKey).DrainGroup(ctx, &adminv1.DrainGroupRequest{GroupId: "g1"})
			return err
		}},
		{name: "service of t1 reaches t1", call: func() error {
			_, err := msgOf(serviceKey).GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: "dev-t1"})
			return err
		}},
		{name: "service of t1 refused t2", call: func() error {
			_, err := msgOf(serviceKey).Send(ctx, &messagingv1.SendRequest{DeviceId: "dev-t2", Payload: []byte("x")})
			return err
		}, want: codes.PermissionDenied, wantText: "dev-t2"},
		{name: "service of t1 subscribing to t2", call: func() error {
			st, err := msgOf(serviceKey).Subscribe(ctx, &messagingv1.SubscribeRequest{TenantIds: []string{"t2"}})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, want: codes.PermissionDenied, wantText: "t2"},
		{name: "service reads admin", call: func() error { _, err := adminOf(serviceKey).ListGroups(ctx, &adminv1.ListGroupsRequest{}); return err }, want: codes.PermissionDenied},
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the cache holding the assignments", func() bool {
		_, err := msgOf(serviceKey).GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: "dev-t1"})
		return err == nil
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if got := status.Code(err); got != tt.want || !strings.Contains(status.Convert(err).Message(), tt.wantText) {
				t.Errorf("got %v; want %v containing %q", err, tt.want, tt.wantText)
			}
		})
	}

	// "Who" comes from the key, whatever applied_by says.
	if _, err := adminOf(operatorKey).ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Document: policy, AppliedBy: "mallory"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the policy applied", func() bool {
		p, err := adminOf(viewerKey).GetPolicy(ctx, &adminv1.GetPolicyRequest{})
		return err == nil && strings.Contains(p.GetAppliedBy(), "(alice)")
	})
	audit, err := adminOf(operatorKey).ListAudit(ctx, &adminv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var methods []string
	for _, e := range audit.GetEntries() {
		methods = append(methods, e.GetMethod()+" "+e.GetOutcome())
		if !strings.Contains(e.GetWho(), "(alice)") && !strings.Contains(e.GetWho(), "(watcher)") {
			t.Errorf("audit entry %v: want alice or watcher", e)
		}
		if e.GetPeer() == "" {
			t.Errorf("audit entry %v: no peer", e)
		}
	}
	want := []string{
		adminv1.AdminService_ApplyPolicy_FullMethodName + " OK",
		adminv1.AdminService_DrainGroup_FullMethodName + " OK",
		adminv1.AdminService_CreateAPIKey_FullMethodName + " PermissionDenied",
		adminv1.AdminService_ApplyPolicy_FullMethodName + " PermissionDenied",
	}
	if strings.Join(methods, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit, newest first:\n%s\nwant\n%s", strings.Join(methods, "\n"), strings.Join(want, "\n"))
	}
	if _, err := adminOf(viewerKey).ListAudit(ctx, &adminv1.ListAuditRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("viewer ListAudit = %v; want PERMISSION_DENIED", err)
	}

	// Revoked on cp-a, refused by cp-b within 2 s.
	other := adminv1.NewAdminServiceClient(dialKey(t, addr2, operatorKey))
	if _, err := other.ListGroups(ctx, &adminv1.ListGroupsRequest{}); err != nil {
		t.Fatalf("cp-b before revocation: %v", err)
	}
	id, _, _ := strings.Cut(operatorKey, ".")
	revoked, err := adminOf(adminKey).RevokeAPIKey(ctx, &adminv1.RevokeAPIKeyRequest{Id: id})
	if err != nil || !revoked.GetKey().GetDisabled() {
		t.Fatalf("RevokeAPIKey = %v, %v", revoked, err)
	}
	// The replica that revoked it refuses it as soon as the call returned.
	if _, err := adminOf(operatorKey).ListGroups(ctx, &adminv1.ListGroupsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("cp-a right after the revocation: %v; want UNAUTHENTICATED", err)
	}
	testutil.WaitFor(t, 2*time.Second, "cp-b refusing the revoked key", func() bool {
		_, err := other.ListGroups(ctx, &adminv1.ListGroupsRequest{})
		return status.Code(err) == codes.Unauthenticated
	})
}
