package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/embedetcd"
	"github.com/berthproject/berth/internal/testutil"
)

// TestQueueFullLeavesRoom fills the queues to their total byte bound with
// messages for made-up devices (allow_unassigned), on an etcd whose quota
// is 64 MiB: past the bound Sends are refused with RESOURCE_EXHAUSTED, a
// QUEUE Send to a made-up device without allow_unassigned is NOT_FOUND,
// and a fleet still assigns, connects and shows up in presence, and an
// ONLINE_ONLY Send still reaches a device; etcd raises no alarm.
func TestQueueFullLeavesRoom(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{Dir: t.TempDir(), UnsafeNoFsync: true, QuotaBackendBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	etcd := srv.Endpoint()
	bootstrapAdminKey(t, etcd)
	priv, pub := keygen(t)
	cp := start(t, "controlplane", "controlplane", "--etcd", etcd, "--signing-key", priv, "--listen", "127.0.0.1:0",
		"--queue-total-bytes", fmt.Sprint(8<<20), "--open-enrollment").addr()
	ctl(t, cp, "group", "put", "group-1", "--capacity", "100")
	start(t, "exec-1", "executor", "--etcd", etcd, "--group", "group-1", "--id", "exec-1", "--capacity", "100",
		"--token-public-key", pub, "--lease-ttl", "3s", "--refresh", "1s").addr()
	waitRegistered(t, cp, "exec-1")
	mc := messagingClient(t, cp)

	send := func(req *messagingv1.SendRequest) error {
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		_, err := mc.Send(sctx, req)
		return err
	}
	payload := make([]byte, 200<<10)
	queued, refused := 0, 0
	for i := 0; refused < 5; i++ {
		if i > 200 {
			t.Fatalf("the total byte bound never refused (%d queued)", queued)
		}
		err := send(&messagingv1.SendRequest{DeviceId: fmt.Sprintf("made-up-%d", i%20), Payload: payload,
			Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE, AllowUnassigned: true})
		switch st := status.Convert(err); {
		case err == nil:
			queued++
		case st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "waiting in all"):
			refused++
		default:
			t.Fatalf("Send %d: %v; want QUEUED or RESOURCE_EXHAUSTED for the total", i, err)
		}
	}
	if queued < 20 || queued > 40 {
		t.Errorf("%d messages of 200 KiB queued within 8 MiB; want 20-40", queued)
	}
	err = send(&messagingv1.SendRequest{DeviceId: "never-seen", Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE})
	if status.Code(err) != codes.NotFound {
		t.Errorf("QUEUE Send to a device never assigned: %v; want NOT_FOUND", err)
	}

	ids := make([]string, 20)
	for i := range ids {
		ids[i] = fmt.Sprintf("real-%d", i)
	}
	fl := startFleetIDs(t, cp, ids)
	fl.waitConnected(t, 30*time.Second)
	fl.waitPresence(t, mc, 30*time.Second)
	if err := send(&messagingv1.SendRequest{DeviceId: "real-0", Payload: []byte("hello")}); err != nil {
		t.Errorf("ONLINE_ONLY Send with the queues full: %v; want it delivered", err)
	}
	testutil.WaitForEvery(t, 10*time.Second, pollEvery, "real-0 got hello", func() bool { return fl.seen("hello") })
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if alarms, err := cli.AlarmList(ctx); err != nil || len(alarms.Alarms) != 0 {
		t.Errorf("etcd alarms %v, %v; want none", alarms, err)
	}
}
