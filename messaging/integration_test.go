package messaging_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// TestMessagingOnRegistry sends through messaging on a real registry:
// a queued message is in etcd before Send answers, and leaves it only once
// the device acknowledged it; idempotency keys hold across Sends.
func TestMessagingOnRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: embedded etcd")
	}
	cli := testutil.EtcdClient(t, testutil.StartEtcd(t))
	reg := registry.New(cli, "/msg")
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)

	// The executor's registration carries its devices' presence.
	rr, err := reg.NewRegistration(registry.Executor{ID: "e1", GroupID: "g1", Address: ex.addr, Capacity: 10}, registry.DefaultRegistrationConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan error, 1)
	go func() { rdone <- rr.Run(rctx) }()
	t.Cleanup(func() { rcancel(); <-rdone })

	cache := reg.NewCache(nil)
	addr := serveMessaging(t, k, testMessagingConfig(), cache, reg, cache.Run, nil)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c := messagingv1.NewMessagingServiceClient(cc)
	queue := messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE

	// Offline: persisted, QUEUED.
	first, err := c.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("one"), Mode: queue, AllowUnassigned: true})
	if err != nil {
		t.Fatal(err)
	}
	if first.GetStatus() != messagingv1.SendStatus_SEND_STATUS_QUEUED {
		t.Fatalf("Send to an offline device = %v; want QUEUED", first)
	}
	q, err := reg.Queue(ctx, "d1", 0)
	if err != nil || len(q) != 1 || q[0].ID != first.GetMessageId() || string(q[0].Payload) != "one" {
		t.Fatalf("queue in etcd = %+v, %v; want message %s", q, err, first.GetMessageId())
	}
	_, err = c.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("now")})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("ONLINE_ONLY to an offline device = %v; want UNAVAILABLE", err)
	}
	dev, err := c.GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: "d1"})
	if err != nil || dev.GetOnline() || dev.GetQueuedMessages() != 1 {
		t.Errorf("GetDevice = %v, %v; want offline with 1 queued", dev, err)
	}

	// The device connects to e1.
	rr.SetPresence(ex.presence("d1"))
	testutil.WaitFor(t, testutil.DefaultTimeout, "d1's presence in etcd", func() bool {
		_, err := reg.Presence(ctx, "d1")
		return err == nil
	})

	// Online: persisted, delivered, dequeued on the ack.
	var mu sync.Mutex
	var queuedDuringDelivery []registry.QueuedMessage
	ex.setDeliver(func(ctx context.Context, req *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		q, err := reg.Queue(ctx, "d1", 0)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		queuedDuringDelivery = q
		mu.Unlock()
		return &executorv1.DeliverResponse{SessionId: "s"}, nil
	})
	second, err := c.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("two"), Mode: queue})
	if err != nil {
		t.Fatal(err)
	}
	if second.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED {
		t.Fatalf("Send to an online device = %v; want DELIVERED", second)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(queuedDuringDelivery) != 2 || queuedDuringDelivery[1].ID != second.GetMessageId() {
		t.Errorf("queue while the device had the message = %+v; want it stored before delivery", queuedDuringDelivery)
	}
	if ds := ex.deliveries(); len(ds) != 1 || ds[0].GetMessage().GetMessageId() != second.GetMessageId() {
		t.Errorf("deliveries = %v; want message %s", ds, second.GetMessageId())
	}
	q, err = reg.Queue(ctx, "d1", 0)
	if err != nil || len(q) != 1 || q[0].ID != first.GetMessageId() {
		t.Errorf("queue after the ack = %+v, %v; want only the first message", q, err)
	}

	// No ack: it stays.
	ex.setDeliver(func(context.Context, *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		return nil, status.Error(codes.DeadlineExceeded, "no ack")
	})
	third, err := c.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("three"), Mode: queue, IdempotencyKey: "job-3"})
	if err != nil {
		t.Fatal(err)
	}
	if third.GetStatus() != messagingv1.SendStatus_SEND_STATUS_QUEUED {
		t.Errorf("Send without an ack = %v; want QUEUED", third)
	}
	again, err := c.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("three"), Mode: queue, IdempotencyKey: "job-3"})
	if err != nil || again.GetMessageId() != third.GetMessageId() {
		t.Errorf("retry with the key = %v, %v; want message %s", again, err, third.GetMessageId())
	}
	if n, err := reg.QueueLen(ctx, "d1"); err != nil || n != 2 {
		t.Errorf("queue length = %d, %v; want 2 (one, three)", n, err)
	}

	// ONLINE_ONLY with a key: delivered once.
	ex.setDeliver(nil)
	before := len(ex.deliveries())
	a, err := c.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", IdempotencyKey: "ping-1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", IdempotencyKey: "ping-1"})
	if err != nil || b.GetMessageId() != a.GetMessageId() {
		t.Errorf("retry = %v, %v; want message %s", b, err, a.GetMessageId())
	}
	if n := len(ex.deliveries()) - before; n != 1 {
		t.Errorf("deliveries of the keyed Send = %d; want 1", n)
	}

	dev, err = c.GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: "d1"})
	if err != nil || !dev.GetOnline() || dev.GetExecutorId() != "e1" || dev.GetQueuedMessages() != 2 {
		t.Errorf("GetDevice = %v, %v; want online at e1 with 2 queued", dev, err)
	}
	if _, err := c.GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: "nobody"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetDevice(nobody) = %v; want NOT_FOUND", err)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("test ran out of time")
	}
}
