package messaging_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/messaging"
)

// redeliverConfig retries quickly.
func redeliverConfig() messaging.Config {
	c := testMessagingConfig()
	c.RedeliverMinDelay, c.RedeliverMaxDelay = 10*time.Millisecond, 50*time.Millisecond
	return c
}

// TestSendQueueRedelivers: the immediate delivery of a QUEUE message to a
// connected device fails; the replica delivers the device's queue again,
// in order, without another Send, and it empties.
func TestSendQueueRedelivers(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	f := startMessaging(t, k, redeliverConfig(), ex)
	ctx := ctxT(t)
	queue := messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE

	// One message waits from before the device connected.
	first, err := f.client.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("one"), Mode: queue, AllowUnassigned: true})
	if err != nil || first.GetStatus() != messagingv1.SendStatus_SEND_STATUS_QUEUED {
		t.Fatalf("Send to the offline device = %v, %v; want QUEUED", first, err)
	}
	f.store.setPresence(ex.presence("d1"))
	var fails atomic.Int32
	fails.Store(1)
	ex.setDeliver(func(context.Context, *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		if fails.Add(-1) >= 0 {
			return nil, status.Error(codes.DeadlineExceeded, "device did not acknowledge in time")
		}
		return &executorv1.DeliverResponse{SessionId: "s-d1"}, nil
	})
	second, err := f.client.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("two"), Mode: queue})
	if err != nil || second.GetStatus() != messagingv1.SendStatus_SEND_STATUS_QUEUED {
		t.Fatalf("Send with a failing attempt = %v, %v; want QUEUED", second, err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the queue redelivered and empty", func() bool { return len(f.store.queue("d1")) == 0 })
	var got []string
	for _, d := range ex.deliveries() {
		got = append(got, string(d.GetMessage().GetPayload()))
	}
	if want := []string{"two", "one", "two"}; !slices.Equal(got, want) {
		t.Errorf("delivered %q; want %q: the failed attempt, then the queue in order", got, want)
	}
}

// TestRedeliverStops: a device that never acknowledges gets as many rounds
// as RedeliverAttempts; a device that leaves gets none.
func TestRedeliverStops(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	cfg := redeliverConfig()
	cfg.RedeliverAttempts = 3
	f := startMessaging(t, k, cfg, ex)
	ctx := ctxT(t)
	queue := messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE
	f.store.setPresence(ex.presence("d1"))
	ex.setDeliver(func(context.Context, *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		return nil, status.Error(codes.DeadlineExceeded, "device did not acknowledge in time")
	})
	if _, err := f.client.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x"), Mode: queue}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "3 rounds of redelivery", func() bool { return len(ex.deliveries()) == 4 })
	time.Sleep(200 * time.Millisecond) // four times the longest delay: no fifth round
	if n := len(ex.deliveries()); n != 4 {
		t.Errorf("%d deliveries; want 4: the attempt and 3 rounds", n)
	}
	if n := len(f.store.queue("d1")); n != 1 {
		t.Errorf("%d messages queued; want the unacknowledged one kept", n)
	}

	// Gone: the round finds the device offline and leaves the queue to
	// its next connect.
	f.store.setPresence(ex.presence("d2"))
	if _, err := f.client.Send(ctx, &messagingv1.SendRequest{DeviceId: "d2", Payload: []byte("x"), Mode: queue}); err != nil {
		t.Fatal(err)
	}
	f.store.clearPresence("d2")
	reads := f.store.presenceReads()
	testutil.WaitFor(t, testutil.DefaultTimeout, "the round reading d2's presence", func() bool { return f.store.presenceReads() > reads })
	time.Sleep(200 * time.Millisecond)
	if n := len(ex.deliveries()); n != 5 {
		t.Errorf("%d deliveries; want 5: none to d2 once it left", n)
	}
}
