package node_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/testutil"
)

// TestReplicaSplitExecutor runs an executor with an internal listener and
// a replica on one etcd: Assign gives devices the device address, the
// executor's record (as AdminService lists it) names both, a Send reaches
// the device through the internal listener, and the device port refuses
// control planes.
func TestReplicaSplitExecutor(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	reg := newRegistry(t)
	k := newKeys(t)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()

	elis, ilis := listen(t), listen(t)
	ecfg := executorConfig(elis.Addr().String(), false)
	ecfg.Executor.InternalAddress = ilis.Addr().String()
	ex, err := node.NewExecutor(ecfg, node.ExecutorDeps{Registry: reg, Verifier: k.verifier})
	if err != nil {
		t.Fatal(err)
	}
	erun := start(func(ctx context.Context, lis net.Listener) error { return ex.RunSplit(ctx, lis, ilis) }, elis)
	testutil.WaitFor(t, testutil.DefaultTimeout, "the executor registered", ex.Registration().Registered)

	addr, r := runReplica(ctx, t, reg, "cp-test", k.signer, true)
	testutil.WaitFor(t, testutil.DefaultTimeout, "the replica seeing the executor", func() bool { return r.ControlPlane().KnownExecutors() == 1 })

	resp, err := controlplanev1.NewControlPlaneServiceClient(dial(t, addr)).Assign(ctx, &controlplanev1.AssignRequest{DeviceId: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	d := resp.GetDestination()
	if eps := d.GetEndpoints(); len(eps) != 1 || eps[0].GetAddress() != elis.Addr().String() {
		t.Fatalf("Assign endpoints = %v; want the device address %s only", eps, elis.Addr())
	}
	st := connect(ctx, t, dial(t, elis.Addr().String()), "dev-1", d.GetToken())

	admin := dialKey(t, addr, apiKey(t, reg, "test admin", []string{"admin"}))
	list, err := adminv1.NewAdminServiceClient(admin).ListExecutors(ctx, &adminv1.ListExecutorsRequest{})
	if err != nil || len(list.GetExecutors()) != 1 {
		t.Fatalf("ListExecutors = %v, %v; want the executor", list, err)
	}
	if e := list.GetExecutors()[0]; e.GetAddress() != elis.Addr().String() || e.GetInternalAddress() != ilis.Addr().String() {
		t.Errorf("ListExecutors: address %q, internal %q; want %s, %s", e.GetAddress(), e.GetInternalAddress(), elis.Addr(), ilis.Addr())
	}

	msg := messagingv1.NewMessagingServiceClient(admin)
	testutil.WaitFor(t, testutil.DefaultTimeout, "dev-1 online", func() bool {
		dev, err := msg.GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: "dev-1"})
		return err == nil && dev.GetOnline()
	})
	acked := make(chan error, 1)
	go func() {
		_, err := ackNext(st)
		acked <- err
	}()
	sent, err := msg.Send(ctx, &messagingv1.SendRequest{DeviceId: "dev-1", Payload: []byte("hello")})
	if err != nil || sent.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED {
		t.Fatalf("Send = %v, %v; want DELIVERED through the internal listener", sent, err)
	}
	if err := <-acked; err != nil {
		t.Fatalf("device: %v", err)
	}

	// The device port refuses control planes, whatever their token.
	_, err = executorv1.NewExecutorInternalServiceClient(dial(t, elis.Addr().String())).Deliver(ctx, &executorv1.DeliverRequest{DeviceId: "dev-1"})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("Deliver on the device port = %v; want UNIMPLEMENTED", err)
	}

	// The replica stops (cleanly) at cleanup, after the executor here.
	if err := erun.stop(); err != nil {
		t.Errorf("executor Run = %v; want nil after a clean stop", err)
	}
	again, againInternal := listen(t), listen(t)
	defer again.Close()
	defer againInternal.Close()
	if err := ex.RunSplit(ctx, again, againInternal); !errors.Is(err, node.ErrRunTwice) {
		t.Errorf("a second RunSplit = %v; want ErrRunTwice", err)
	}
}
