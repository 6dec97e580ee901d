package node_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/ratelimit"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/rebalance"
)

// TestReplica runs a control plane replica and an executor through their
// composition roots on one etcd: the replica reports every service SERVING
// once its cache is loaded, Assign sends a device to the executor, a Send
// reaches the device through the replica's connection to the executor
// (with its service token), Assign is rate limited per device, AdminService answers, the rebalancer leads,
// and both stop cleanly.
func TestReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	reg := newRegistry(t)
	k := newKeys(t)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()

	elis := listen(t)
	ex, err := node.NewExecutor(executorConfig(elis.Addr().String(), true), node.ExecutorDeps{Registry: reg, Verifier: k.verifier})
	if err != nil {
		t.Fatal(err)
	}
	erun := start(ex.Run, elis)

	cfg := node.DefaultReplicaConfig()
	cfg.ControlPlane.ReplicaID = "cp-test"
	cfg.OpenEnrollment = true
	cfg.Rebalance.Interval = 50 * time.Millisecond
	cfg.RateLimits.Assign = ratelimit.Rule{Rate: 0.01, Burst: 2}
	moves := 0
	r, err := node.NewReplica(cfg, node.ReplicaDeps{Registry: reg, Signer: k.signer,
		WrapMover: func(m rebalance.Mover) rebalance.Mover { moves++; return m }})
	if err != nil {
		t.Fatal(err)
	}
	if moves != 1 || r.Rebalancer() == nil {
		t.Fatalf("WrapMover called %d times, rebalancer %v; want once, and a rebalancer", moves, r.Rebalancer())
	}
	lis := listen(t)
	run := start(r.Run, lis)
	cc := dial(t, lis.Addr().String())

	health := healthpb.NewHealthClient(cc)
	for _, svc := range []string{"", controlplanev1.ControlPlaneService_ServiceDesc.ServiceName, messagingv1.MessagingService_ServiceDesc.ServiceName, adminv1.AdminService_ServiceDesc.ServiceName} {
		testutil.WaitFor(t, testutil.DefaultTimeout, "health of "+svc+" SERVING", func() bool {
			resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
		})
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the replica seeing the executor", func() bool { return r.ControlPlane().KnownExecutors() == 1 })
	testutil.WaitFor(t, testutil.DefaultTimeout, "the rebalancer leading", r.Rebalancer().Leading)

	resp, err := controlplanev1.NewControlPlaneServiceClient(cc).Assign(ctx, &controlplanev1.AssignRequest{DeviceId: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	d := resp.GetDestination()
	if d.GetGroupId() != "g1" || len(d.GetEndpoints()) != 1 || d.GetEndpoints()[0].GetAddress() != elis.Addr().String() {
		t.Fatalf("Assign = %v; want g1 at the executor", d)
	}
	st := connect(ctx, t, dial(t, elis.Addr().String()), "dev-1", d.GetToken())

	admin := dialKey(t, lis.Addr().String(), apiKey(t, reg, "test admin", []string{"admin"}))
	msg := messagingv1.NewMessagingServiceClient(admin)
	testutil.WaitFor(t, testutil.DefaultTimeout, "dev-1 online", func() bool {
		dev, err := msg.GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: "dev-1"})
		return err == nil && dev.GetOnline()
	})
	acked := make(chan error, 1)
	go func() {
		m, err := ackNext(st)
		if err == nil && string(m.GetPayload()) != "hello" {
			err = errors.New("payload " + string(m.GetPayload()))
		}
		acked <- err
	}()
	sent, err := msg.Send(ctx, &messagingv1.SendRequest{DeviceId: "dev-1", Payload: []byte("hello")})
	if err != nil || sent.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED {
		t.Fatalf("Send = %v, %v; want DELIVERED", sent, err)
	}
	if err := <-acked; err != nil {
		t.Fatalf("device: %v", err)
	}

	// Assign is limited per device id: a burst of two, then refused with
	// a retry hint; another device is not concerned.
	cp := controlplanev1.NewControlPlaneServiceClient(cc)
	for i := range 3 {
		var tr metadata.MD
		_, err := cp.Assign(ctx, &controlplanev1.AssignRequest{DeviceId: "dev-busy"}, grpc.Trailer(&tr))
		switch {
		case i < 2 && err != nil:
			t.Fatalf("Assign %d of dev-busy: %v", i, err)
		case i == 2 && (status.Code(err) != codes.ResourceExhausted || len(tr.Get(ratelimit.PushbackTrailer)) != 1):
			t.Fatalf("third Assign of dev-busy = %v, trailer %v; want RESOURCE_EXHAUSTED with %s", err, tr, ratelimit.PushbackTrailer)
		}
	}
	if _, err := cp.Assign(ctx, &controlplanev1.AssignRequest{DeviceId: "dev-2"}); err != nil {
		t.Errorf("Assign of dev-2 after dev-busy was limited: %v", err)
	}
	if got := r.RateLimited()[controlplanev1.ControlPlaneService_Assign_FullMethodName]; got != 1 {
		t.Errorf("RateLimited()[Assign] = %d; want 1", got)
	}

	_, err = adminv1.NewAdminServiceClient(admin).GetPolicy(ctx, &adminv1.GetPolicyRequest{})
	if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), "no policy applied") {
		t.Errorf("GetPolicy = %v; want NOT_FOUND: no policy applied", err)
	}

	if err := run.stop(); err != nil {
		t.Errorf("replica Run = %v; want nil after a clean stop", err)
	}
	if err := erun.stop(); err != nil {
		t.Errorf("executor Run = %v; want nil after a clean stop", err)
	}
	again := listen(t)
	defer again.Close()
	if err := r.Run(ctx, again); !errors.Is(err, node.ErrRunTwice) {
		t.Errorf("a second Run = %v; want ErrRunTwice", err)
	}
}

func TestReplicaConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*node.ReplicaConfig)
		want   string // in the error; "" wants none
	}{
		{name: "defaults", change: func(*node.ReplicaConfig) {}},
		{name: "rebalancer off", change: func(c *node.ReplicaConfig) { c.Rebalance = nil }},
		{name: "bad replica id", change: func(c *node.ReplicaConfig) { c.ControlPlane.ReplicaID = "a/b" }, want: "replica id"},
		{name: "bad messaging", change: func(c *node.ReplicaConfig) { c.Messaging.QueueTotal = 0 }, want: "messaging: invalid config"},
		{name: "rate limits off", change: func(c *node.ReplicaConfig) { c.RateLimits = node.RateLimits{} }},
		{name: "rate without burst", change: func(c *node.ReplicaConfig) { c.RateLimits.Send.Burst = 0 }, want: "node: rate limits"},
		{name: "bad executor connections", change: func(c *node.ReplicaConfig) { c.Executors.IdleTimeout = 0 }, want: "execclient: invalid config"},
		{name: "bad rebalancer", change: func(c *node.ReplicaConfig) { c.Rebalance.Rate = 0 }, want: "rebalance: invalid config"},
		{name: "no stop timeout", change: func(c *node.ReplicaConfig) { c.StopTimeout = 0 }, want: "stop timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := node.DefaultReplicaConfig()
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate = %v; want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate = %v; want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := node.NewReplica(node.DefaultReplicaConfig(), node.ReplicaDeps{}); err == nil {
		t.Error("NewReplica without a registry and a signer succeeded")
	}
}
