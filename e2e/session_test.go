package e2e

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/testutil"
)

// TestDuplicateStreamLeavesDeviceReachable is the case of issue 10: the
// real device is connected on one executor; a second stream of the same
// device id opens on the other executor of its group and then ends. The
// newer stream ends the older one cluster-wide (Goodbye REPLACED), the end
// of the duplicate deletes only its own presence, and the real device,
// which reconnects after REPLACED, is reachable again: an ONLINE_ONLY Send
// is delivered to it.
func TestDuplicateStreamLeavesDeviceReachable(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	c := startCluster(t, 1, 2, 100)
	mc := messagingClient(t, c.cpAddr)
	const dev = "dup-dev"
	fl := startFleetIDs(t, c.cpAddr, []string{dev})
	fl.waitConnected(t, 30*time.Second)
	fl.waitPresence(t, mc, 30*time.Second)
	fl.mu.Lock()
	realExec, connects := fl.executor[dev], fl.connects
	fl.mu.Unlock()

	// The duplicate: a token from Assign, a stream on the other executor.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cc, err := grpc.NewClient(c.cpAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	asg, err := controlplanev1.NewControlPlaneServiceClient(cc).Assign(ctx, &controlplanev1.AssignRequest{DeviceId: dev})
	if err != nil {
		t.Fatalf("Assign for the duplicate: %v", err)
	}
	var other string
	for _, e := range asg.GetDestination().GetEndpoints() {
		if e.GetExecutorId() != realExec {
			other = e.GetAddress()
		}
	}
	if other == "" {
		t.Fatalf("Assign named no executor but %s: %v", realExec, asg.GetDestination().GetEndpoints())
	}
	ec, err := grpc.NewClient(other, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	sctx, endDup := context.WithCancel(ctx)
	defer endDup()
	dup, err := executorv1.NewExecutorServiceClient(ec).Connect(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := dup.Send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Hello{Hello: &executorv1.Hello{DeviceId: dev, Token: asg.GetDestination().GetToken()}}}); err != nil {
		t.Fatal(err)
	}
	if f, err := dup.Recv(); err != nil || f.GetWelcome() == nil {
		t.Fatalf("duplicate stream: first frame %v, %v; want Welcome", f, err)
	}
	// The real device's stream was replaced on its own executor: it left
	// Connected (and reconnects).
	fl.waitCond(t, 30*time.Second, "the real device's stream replaced", func() bool {
		return fl.executor[dev] == "" || fl.connects > connects
	})
	// The duplicate ends.
	endDup()

	// The device is reachable: an ONLINE_ONLY Send is delivered.
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "an ONLINE_ONLY Send delivered", func() bool {
		sendCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := mc.Send(sendCtx, &messagingv1.SendRequest{DeviceId: dev, Payload: []byte("after-duplicate"), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY})
		return err == nil && resp.GetStatus() == messagingv1.SendStatus_SEND_STATUS_DELIVERED
	})
	fl.waitSeen(t, 10*time.Second, "the message after the duplicate", []string{"after-duplicate"})
	d, err := getDevice(mc, dev)
	if err != nil || !d.GetOnline() {
		t.Errorf("GetDevice after the duplicate ended: %v, %v; want online", d, err)
	}
}
