package messaging_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/messaging"
	"github.com/berthproject/berth/registry"
)

func blockUntilDone(ctx context.Context, _ *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

func TestSendOnlineOnly(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	f := startMessaging(t, k, testMessagingConfig(), ex)
	ctx := ctxT(t)
	f.store.setPresence(ex.presence("d1"))

	resp, err := f.client.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("hello"), ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED || resp.GetMessageId() == "" {
		t.Fatalf("Send = %v; want DELIVERED with a message id", resp)
	}
	ds := ex.deliveries()
	if len(ds) != 1 {
		t.Fatalf("executor got %d deliveries; want 1", len(ds))
	}
	m := ds[0].GetMessage()
	if ds[0].GetDeviceId() != "d1" || m.GetMessageId() != resp.GetMessageId() || string(m.GetPayload()) != "hello" ||
		m.GetContentType() != "text/plain" || m.GetExpectsReply() || m.GetSentAt() == nil {
		t.Errorf("delivered %v; want d1's message %s with payload, type and time", ds[0], resp.GetMessageId())
	}
	if got := ex.subjectsSeen(); len(got) != 1 || got["cp-test"] != 1 {
		t.Errorf("token subjects seen = %v; want the replica id", got)
	}
	if n := len(f.store.queue("d1")); n != 0 {
		t.Errorf("ONLINE_ONLY queued %d messages", n)
	}
}

func TestSendOffline(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	f := startMessaging(t, k, testMessagingConfig(), ex)
	ctx := ctxT(t)

	_, err := f.client.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")})
	wantCode(t, "Send to a device without presence", err, codes.Unavailable, "device d1 is not connected")

	// A stale presence: the executor no longer holds the device.
	f.store.setPresence(ex.presence("d1"))
	ex.setDeliver(func(context.Context, *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		return nil, status.Error(codes.NotFound, "no stream for d1")
	})
	_, err = f.client.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")})
	wantCode(t, "Send on a stale presence", err, codes.Unavailable, "device d1 is not connected")

	// An executor that is gone.
	f.store.setPresence(registry.Presence{DeviceID: "d1", ExecutorID: "gone", Address: "127.0.0.1:1"})
	_, err = f.client.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")})
	wantCode(t, "Send via an unreachable executor", err, codes.Unavailable, "executor gone holding device d1 is unreachable")
}

func TestSendDeadline(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	cfg := testMessagingConfig()
	cfg.SendTimeout = 200 * time.Millisecond
	f := startMessaging(t, k, cfg, ex)
	f.store.setPresence(ex.presence("d1"))
	ex.setDeliver(blockUntilDone)

	// Without a deadline of its own, the caller gets the default one.
	start := time.Now()
	_, err := f.client.Send(noDeadline(t), &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")})
	wantCode(t, "Send to a device that never acks", err, codes.DeadlineExceeded, "device d1 did not acknowledge message")
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Send took %v; want about the 200ms default", el)
	}
	// With its own deadline, that one bounds the delivery.
	cctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = f.client.Send(cctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Send with a 300ms deadline = %v; want DEADLINE_EXCEEDED", err)
	}
	// The executor saw the deadline.
	ds := ex.deliveries()
	if len(ds) != 2 {
		t.Fatalf("deliveries = %d; want 2", len(ds))
	}
}

// noDeadline is a context without a deadline, cancelled at cleanup.
func noDeadline(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

func TestSendIdempotencyOnline(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	f := startMessaging(t, k, testMessagingConfig(), ex)
	c := ctxT(t)
	req := &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x"), IdempotencyKey: "job-1"}

	// Offline before any attempt: the key stays unused.
	_, err := f.client.Send(c, req)
	wantCode(t, "Send offline", err, codes.Unavailable, "not connected")

	f.store.setPresence(ex.presence("d1"))
	first, err := f.client.Send(c, req)
	if err != nil {
		t.Fatal(err)
	}
	if first.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED || first.GetDetail() != "" {
		t.Fatalf("first Send = %v; want DELIVERED", first)
	}
	again, err := f.client.Send(c, req)
	if err != nil {
		t.Fatal(err)
	}
	if again.GetMessageId() != first.GetMessageId() || !strings.Contains(again.GetDetail(), "duplicate") {
		t.Errorf("retry = %v; want message %s and a duplicate detail", again, first.GetMessageId())
	}
	if n := len(ex.deliveries()); n != 1 {
		t.Errorf("deliveries = %d; want 1 (the retry delivers nothing)", n)
	}
	// Another device may use the same key.
	f.store.setPresence(ex.presence("d2"))
	other, err := f.client.Send(c, &messagingv1.SendRequest{DeviceId: "d2", IdempotencyKey: "job-1"})
	if err != nil || other.GetMessageId() == first.GetMessageId() {
		t.Errorf("same key for d2 = %v, %v; want a new message", other, err)
	}
}

// A key recorded by a Send that never saw its ack (its replica died
// between recording the key and the device's ack) does not make a retry
// answer DELIVERED unseen: the retry delivers the first message again,
// under its id, and only then answers.
func TestSendIdempotencyOnlineRetryAfterUnackedAttempt(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	f := startMessaging(t, k, testMessagingConfig(), ex)
	c := ctxT(t)
	f.store.setPresence(ex.presence("d1"))
	f.store.mu.Lock()
	f.store.idem["d1/job-2"] = registry.IdempotencyRecord{MessageID: "M-FIRST", ExpiresAt: time.Now().Add(time.Hour)}
	f.store.mu.Unlock()

	req := &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x"), IdempotencyKey: "job-2"}
	resp, err := f.client.Send(c, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED || resp.GetMessageId() != "M-FIRST" {
		t.Errorf("retry = %v; want DELIVERED under the first message id M-FIRST", resp)
	}
	ds := ex.deliveries()
	if len(ds) != 1 || ds[0].GetMessage().GetMessageId() != "M-FIRST" {
		t.Fatalf("deliveries = %v; want one, of M-FIRST", ds)
	}
	// Acknowledged now: a further retry sends nothing.
	again, err := f.client.Send(c, req)
	if err != nil || !strings.Contains(again.GetDetail(), "acknowledged") {
		t.Errorf("second retry = %v, %v; want a duplicate answer", again, err)
	}
	if n := len(ex.deliveries()); n != 1 {
		t.Errorf("deliveries = %d; want still 1", n)
	}
}

func TestSendQueue(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	f := startMessaging(t, k, testMessagingConfig(), ex)
	f.setRecord(registry.Assignment{DeviceID: "d1", GroupID: "g1"})
	c := ctxT(t)

	// Offline: stored, QUEUED, with the default TTL of an hour.
	before := time.Now()
	resp, err := f.client.Send(c, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("one"), ContentType: "text/plain", Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != messagingv1.SendStatus_SEND_STATUS_QUEUED || !strings.Contains(resp.GetDetail(), "device d1 is not connected") {
		t.Fatalf("Send QUEUE offline = %v; want QUEUED saying d1 is not connected", resp)
	}
	q := f.store.queue("d1")
	if len(q) != 1 || q[0].ID != resp.GetMessageId() || string(q[0].Payload) != "one" || q[0].ContentType != "text/plain" {
		t.Fatalf("queue = %+v; want the message %s", q, resp.GetMessageId())
	}
	if ttl := q[0].ExpiresAt.Sub(before); ttl < time.Hour-time.Minute || ttl > time.Hour+time.Minute {
		t.Errorf("queued message lives %v; want the default hour", ttl)
	}
	if len(ex.deliveries()) != 0 {
		t.Error("an offline device's message was delivered")
	}

	// Online: stored, delivered with the same id, dequeued on ack.
	f.store.setPresence(ex.presence("d1"))
	resp2, err := f.client.Send(c, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("two"), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE, Ttl: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if resp2.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED {
		t.Fatalf("Send QUEUE online = %v; want DELIVERED", resp2)
	}
	if ds := ex.deliveries(); len(ds) != 1 || ds[0].GetMessage().GetMessageId() != resp2.GetMessageId() {
		t.Fatalf("deliveries = %v; want message %s", ds, resp2.GetMessageId())
	}
	if q := f.store.queue("d1"); len(q) != 1 || q[0].ID != resp.GetMessageId() {
		t.Errorf("queue after an acked delivery = %+v; want only the first message", q)
	}

	// A failed attempt leaves the message queued, with the reason.
	ex.setDeliver(func(context.Context, *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		return nil, status.Error(codes.DeadlineExceeded, "no ack")
	})
	resp3, err := f.client.Send(c, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("three"), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE})
	if err != nil {
		t.Fatal(err)
	}
	if resp3.GetStatus() != messagingv1.SendStatus_SEND_STATUS_QUEUED || !strings.Contains(resp3.GetDetail(), "did not acknowledge") {
		t.Errorf("Send QUEUE with a failing delivery = %v; want QUEUED with the reason", resp3)
	}
	if q := f.store.queue("d1"); len(q) != 2 || q[1].ID != resp3.GetMessageId() {
		t.Errorf("queue = %+v; want the failed message kept", q)
	}

	// A delivery slower than the attempt bound: QUEUED within the caller's
	// deadline.
	ex.setDeliver(blockUntilDone)
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp4, err := f.client.Send(cctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("four"), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE})
	if err != nil || resp4.GetStatus() != messagingv1.SendStatus_SEND_STATUS_QUEUED {
		t.Errorf("Send QUEUE to a device that never acks = %v, %v; want QUEUED before the deadline", resp4, err)
	}
}

func TestSendQueueIdempotency(t *testing.T) {
	k := newKeys(t)
	f := startMessaging(t, k, testMessagingConfig())
	c := ctxT(t)
	req := &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x"), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE, IdempotencyKey: "k-1", AllowUnassigned: true}
	first, err := f.client.Send(c, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.client.Send(c, req)
	if err != nil {
		t.Fatal(err)
	}
	if again.GetMessageId() != first.GetMessageId() || again.GetStatus() != messagingv1.SendStatus_SEND_STATUS_QUEUED || !strings.Contains(again.GetDetail(), "duplicate") {
		t.Errorf("retry = %v; want QUEUED duplicate of %s", again, first.GetMessageId())
	}
	if n := len(f.store.queue("d1")); n != 1 {
		t.Errorf("queue holds %d; want 1", n)
	}
}

func TestSendQueueFull(t *testing.T) {
	k := newKeys(t)
	cfg := testMessagingConfig()
	cfg.QueuePerDevice, cfg.QueueTotal = 2, 3
	f := startMessaging(t, k, cfg)
	c := ctxT(t)
	send := func(dev string) error {
		_, err := f.client.Send(c, &messagingv1.SendRequest{DeviceId: dev, Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE, AllowUnassigned: true})
		return err
	}
	for _, d := range []string{"d1", "d1"} {
		if err := send(d); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, "third Send to d1", send("d1"), codes.ResourceExhausted, "device d1 has 2 messages waiting (at most 2)")
	if err := send("d2"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "Send beyond the total", send("d3"), codes.ResourceExhausted, "3 messages waiting in all (at most 3)")
}

func TestSendInvalid(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	f := startMessaging(t, k, testMessagingConfig(), ex)
	f.store.setPresence(ex.presence("d1"))
	queue := messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE
	tests := []struct {
		name string
		req  *messagingv1.SendRequest
		want string
	}{
		{"no device", &messagingv1.SendRequest{}, "device_id is required"},
		{"slash in device", &messagingv1.SendRequest{DeviceId: "a/b"}, "device_id \"a/b\""},
		{"long device", &messagingv1.SendRequest{DeviceId: strings.Repeat("d", 129)}, "device_id is 129 bytes"},
		{"big payload", &messagingv1.SendRequest{DeviceId: "d1", Payload: make([]byte, 256<<10+1)}, "payload is 262145 bytes; at most 262144"},
		{"long content type", &messagingv1.SendRequest{DeviceId: "d1", ContentType: strings.Repeat("t", 129)}, "content_type is 129 bytes"},
		{"bad key", &messagingv1.SendRequest{DeviceId: "d1", IdempotencyKey: "a b"}, "idempotency_key"},
		{"long ttl", &messagingv1.SendRequest{DeviceId: "d1", Mode: queue, Ttl: durationpb.New(8 * 24 * time.Hour)}, "ttl 192h0m0s: at most 168h0m0s"},
		{"negative ttl", &messagingv1.SendRequest{DeviceId: "d1", Mode: queue, Ttl: durationpb.New(-time.Second)}, "want > 0"},
		{"bad mode", &messagingv1.SendRequest{DeviceId: "d1", Mode: 7}, "mode 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.client.Send(ctxT(t), tt.req)
			wantCode(t, "Send", err, codes.InvalidArgument, tt.want)
		})
	}
	if n := len(ex.deliveries()); n != 0 {
		t.Errorf("invalid Sends delivered %d messages", n)
	}
	if n := len(f.store.queue("d1")); n != 0 {
		t.Errorf("invalid Sends queued %d messages", n)
	}
	// The largest payload passes.
	if _, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: "d1", Payload: make([]byte, 256<<10)}); err != nil {
		t.Errorf("Send of 256 KiB: %v", err)
	}
}

func TestMessagingRegistryDown(t *testing.T) {
	k := newKeys(t)
	f := startMessaging(t, k, testMessagingConfig())
	f.store.setFail(errEtcd)
	c := ctxT(t)
	for _, mode := range []messagingv1.DeliveryMode{messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY, messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE} {
		_, err := f.client.Send(c, &messagingv1.SendRequest{DeviceId: "d1", Mode: mode})
		wantCode(t, "Send "+mode.String(), err, codes.Unavailable, "registry unavailable")
		if strings.Contains(err.Error(), "etcdserver") {
			t.Errorf("Send %v leaks the raw error: %v", mode, err)
		}
	}
	_, err := f.client.GetDevice(c, &messagingv1.GetDeviceRequest{DeviceId: "d1"})
	wantCode(t, "GetDevice", err, codes.Unavailable, "registry unavailable")
	_, err = f.client.Call(c, &messagingv1.CallRequest{DeviceId: "d1"})
	wantCode(t, "Call", err, codes.Unavailable, "registry unavailable")
}

func TestSendWrongKey(t *testing.T) {
	k := newKeys(t)
	other := newKeys(t)
	ex := startExec(t, "e1", other.verifier) // verifies with another key
	f := startMessaging(t, k, testMessagingConfig(), ex)
	f.store.setPresence(ex.presence("d1"))
	_, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: "d1"})
	wantCode(t, "Send to an executor with another key", err, codes.Internal, "executor e1 refused this control plane's credentials")
}

func TestCall(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	cfg := testMessagingConfig()
	cfg.CallTimeout = 200 * time.Millisecond
	f := startMessaging(t, k, cfg, ex)
	c := ctxT(t)

	_, err := f.client.Call(c, &messagingv1.CallRequest{DeviceId: "d1", Payload: []byte("ping")})
	wantCode(t, "Call offline", err, codes.Unavailable, "device d1 is not connected")

	f.store.setPresence(ex.presence("d1"))
	ex.setDeliver(func(_ context.Context, req *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		m := req.GetMessage()
		if !m.GetExpectsReply() {
			return &executorv1.DeliverResponse{}, nil // an ack, no reply
		}
		if string(m.GetPayload()) == "fail" {
			return &executorv1.DeliverResponse{Reply: &executorv1.Reply{MessageId: m.GetMessageId(), Error: "paper jam"}}, nil
		}
		return &executorv1.DeliverResponse{Reply: &executorv1.Reply{MessageId: m.GetMessageId(), Payload: append([]byte("re: "), m.GetPayload()...), ContentType: "text/plain"}}, nil
	})
	resp, err := f.client.Call(c, &messagingv1.CallRequest{DeviceId: "d1", Payload: []byte("ping"), ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetPayload()) != "re: ping" || resp.GetContentType() != "text/plain" || resp.GetMessageId() == "" {
		t.Errorf("Call = %v; want the device's reply", resp)
	}
	if ds := ex.deliveries(); len(ds) != 1 || !ds[0].GetMessage().GetExpectsReply() || ds[0].GetMessage().GetMessageId() != resp.GetMessageId() {
		t.Errorf("deliveries = %v; want one message expecting a reply", ds)
	}

	_, err = f.client.Call(c, &messagingv1.CallRequest{DeviceId: "d1", Payload: []byte("fail")})
	wantCode(t, "Call answered with an error", err, codes.Aborted, "device d1: paper jam")

	ex.setDeliver(blockUntilDone)
	_, err = f.client.Call(noDeadline(t), &messagingv1.CallRequest{DeviceId: "d1"})
	wantCode(t, "Call never answered", err, codes.DeadlineExceeded, "device d1 did not answer message")

	ex.setDeliver(func(context.Context, *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		return &executorv1.DeliverResponse{}, nil
	})
	_, err = f.client.Call(c, &messagingv1.CallRequest{DeviceId: "d1"})
	wantCode(t, "Call acked without reply", err, codes.Internal, "no reply")

	_, err = f.client.Call(c, &messagingv1.CallRequest{DeviceId: "d1", Payload: make([]byte, 256<<10+1)})
	wantCode(t, "Call with a big payload", err, codes.InvalidArgument, "payload")
}

func TestGetDevice(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	f := startMessaging(t, k, testMessagingConfig(), ex)
	c := ctxT(t)

	_, err := f.client.GetDevice(c, &messagingv1.GetDeviceRequest{DeviceId: "nobody"})
	wantCode(t, "GetDevice of an unknown device", err, codes.NotFound, "device nobody is unknown")
	_, err = f.client.GetDevice(c, &messagingv1.GetDeviceRequest{DeviceId: "a/b"})
	wantCode(t, "GetDevice of a bad id", err, codes.InvalidArgument, "device_id")

	// Only queued messages.
	if _, err := f.client.Send(c, &messagingv1.SendRequest{DeviceId: "q1", Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE, AllowUnassigned: true}); err != nil {
		t.Fatal(err)
	}
	got, err := f.client.GetDevice(c, &messagingv1.GetDeviceRequest{DeviceId: "q1"})
	if err != nil || got.GetOnline() || got.GetQueuedMessages() != 1 || got.GetAssignedGroupId() != "" {
		t.Errorf("GetDevice(q1) = %v, %v; want offline with 1 queued", got, err)
	}

	// Only a record.
	f.setRecord(registry.Assignment{DeviceID: "r1", GroupID: "g1", Label: "default"})
	got, err = f.client.GetDevice(c, &messagingv1.GetDeviceRequest{DeviceId: "r1"})
	if err != nil || got.GetOnline() || got.GetAssignedGroupId() != "g1" || got.GetAssignedLabel() != "default" || got.GetConnectedSince() != nil {
		t.Errorf("GetDevice(r1) = %v, %v; want offline, assigned to g1", got, err)
	}

	// Online.
	p := ex.presence("r1")
	f.store.setPresence(p)
	got, err = f.client.GetDevice(c, &messagingv1.GetDeviceRequest{DeviceId: "r1"})
	if err != nil || !got.GetOnline() || got.GetExecutorId() != "e1" || got.GetGroupId() != "g1" || !got.GetConnectedSince().AsTime().Equal(p.Since) {
		t.Errorf("GetDevice(r1) online = %v, %v; want e1 in g1 since %v", got, err, p.Since)
	}
}

// recvN reads n responses from a subscription.
func recvN(t *testing.T, s grpc.ServerStreamingClient[messagingv1.SubscribeResponse], n int) []*messagingv1.SubscribeResponse {
	t.Helper()
	var out []*messagingv1.SubscribeResponse
	for range n {
		r, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv after %d: %v", len(out), err)
		}
		out = append(out, r)
	}
	return out
}

// subscribe opens a subscription and waits until the control plane has it.
func subscribe(t *testing.T, c messagingv1.MessagingServiceClient, req *messagingv1.SubscribeRequest) grpc.ServerStreamingClient[messagingv1.SubscribeResponse] {
	t.Helper()
	sctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := c.Subscribe(sctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Header(); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	return s
}

func TestSubscribeFilters(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	f := startMessaging(t, k, testMessagingConfig(), ex)
	f.setRecord(registry.Assignment{DeviceID: "d1", GroupID: "g1", Inputs: &registry.DeviceInputs{Tenant: "acme"}})
	f.setRecord(registry.Assignment{DeviceID: "d2", GroupID: "g1", Inputs: &registry.DeviceInputs{Tenant: "globex"}})

	// No subscriber, no stream to executors.
	time.Sleep(testutil.DefaultShortTimeout)
	if n := ex.subscribers(); n != 0 {
		t.Fatalf("executor streams without subscribers = %d; want 0", n)
	}
	subs := map[string]grpc.ServerStreamingClient[messagingv1.SubscribeResponse]{
		"all":     subscribe(t, f.client, &messagingv1.SubscribeRequest{}),
		"d1":      subscribe(t, f.client, &messagingv1.SubscribeRequest{DeviceIds: []string{"d1"}}),
		"globex":  subscribe(t, f.client, &messagingv1.SubscribeRequest{TenantIds: []string{"globex"}}),
		"status":  subscribe(t, f.client, &messagingv1.SubscribeRequest{Topics: []string{"status"}}),
		"d1+stat": subscribe(t, f.client, &messagingv1.SubscribeRequest{DeviceIds: []string{"d1", "d3"}, Topics: []string{"status"}}),
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "one stream to the executor", func() bool { return ex.subscribers() == 1 })

	ex.publish("d1", "status", []byte("1"))
	ex.publish("d2", "telemetry", []byte("2"))
	ex.publish("d3", "status", []byte("3"))
	ex.publish("d1", "telemetry", []byte("4"))
	want := map[string]string{"all": "1234", "d1": "14", "globex": "2", "status": "13", "d1+stat": "13"}
	for name, s := range subs {
		var got strings.Builder
		for _, r := range recvN(t, s, len(want[name])) {
			got.Write(r.GetPayload())
			if r.GetDropped() != 0 {
				t.Errorf("%s: dropped %d", name, r.GetDropped())
			}
			wantTenant := map[string]string{"d1": "acme", "d2": "globex"}[r.GetDeviceId()]
			if r.GetTenantId() != wantTenant || r.GetContentType() != "text/plain" {
				t.Errorf("%s: %v; want tenant %q and the content type", name, r, wantTenant)
			}
		}
		if got.String() != want[name] {
			t.Errorf("subscriber %s got %s; want %s", name, got.String(), want[name])
		}
	}

	bad, err := f.client.Subscribe(ctxT(t), &messagingv1.SubscribeRequest{DeviceIds: []string{"a/b"}})
	if err == nil {
		_, err = bad.Recv()
	}
	wantCode(t, "Subscribe with a bad device filter", err, codes.InvalidArgument, "device_ids[0]")
}

// TestSubscribeFollowsExecutors: streams to executors follow the snapshot
// and the subscribers, and come back after a failure.
func TestSubscribeFollowsExecutors(t *testing.T) {
	k := newKeys(t)
	e1 := startExec(t, "e1", k.verifier)
	e2 := startExec(t, "e2", k.verifier)
	f := startMessaging(t, k, testMessagingConfig(), e1)

	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := f.client.Subscribe(sctx, &messagingv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "a stream to e1", func() bool { return e1.subscribers() == 1 })

	f.setExecutors(e1, e2)
	testutil.WaitFor(t, testutil.DefaultTimeout, "a stream to e2 once it joined", func() bool { return e2.subscribers() == 1 })
	e2.publish("d9", "status", []byte("from e2"))
	if r := recvN(t, s, 1)[0]; string(r.GetPayload()) != "from e2" {
		t.Errorf("got %v; want e2's publish", r)
	}

	f.setExecutors(e2)
	testutil.WaitFor(t, testutil.DefaultTimeout, "no stream to e1 once it left", func() bool { return e1.subscribers() == 0 })

	e2.kick()
	testutil.WaitFor(t, testutil.DefaultTimeout, "the stream to e2 back after a failure", func() bool { return e2.subscribers() == 1 })
	e2.publish("d9", "status", []byte("again"))
	if r := recvN(t, s, 1)[0]; string(r.GetPayload()) != "again" {
		t.Errorf("got %v; want the publish after the reconnect", r)
	}

	cancel()
	testutil.WaitFor(t, testutil.DefaultTimeout, "no stream once the last subscriber left", func() bool { return e2.subscribers() == 0 })
}

// TestSubscribeSlowSubscriber: a subscriber that does not read loses
// publishes, counted in dropped; another one loses nothing meanwhile.
func TestSubscribeSlowSubscriber(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	cfg := testMessagingConfig()
	cfg.SubscriberBuffer = 4
	f := startMessaging(t, k, cfg, ex)

	// The slow one's connection has small, fixed windows, so that the
	// control plane's sends to it block soon.
	slowCC := f.dial(t, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	slow := subscribe(t, messagingv1.NewMessagingServiceClient(slowCC), &messagingv1.SubscribeRequest{})
	fast := subscribe(t, f.client, &messagingv1.SubscribeRequest{})
	testutil.WaitFor(t, testutil.DefaultTimeout, "one stream to the executor", func() bool { return ex.subscribers() == 1 })

	const n = 60
	payload := bytes.Repeat([]byte("x"), 16<<10)
	for i := range n {
		ex.publish("d1", fmt.Sprint(i), payload)
		r := recvN(t, fast, 1)[0]
		if r.GetTopic() != fmt.Sprint(i) || r.GetDropped() != 0 {
			t.Fatalf("fast subscriber got topic %s dropped %d; want %d, 0", r.GetTopic(), r.GetDropped(), i)
		}
	}
	var got, dropped int64
	last := -1
	for got+dropped < n {
		r := recvN(t, slow, 1)[0]
		var topic int
		fmt.Sscan(r.GetTopic(), &topic)
		if topic <= last {
			t.Fatalf("slow subscriber got %d after %d", topic, last)
		}
		last = topic
		got++
		dropped += r.GetDropped()
	}
	if dropped == 0 || got+dropped != n {
		t.Errorf("slow subscriber got %d and was told of %d dropped; want some dropped and %d in all", got, dropped, n)
	}
	t.Logf("slow subscriber: %d received, %d dropped", got, dropped)
}

func TestSweeper(t *testing.T) {
	k := newKeys(t)
	cfg := testMessagingConfig()
	cfg.SweepInterval = 10 * time.Millisecond
	f := startMessaging(t, k, cfg)
	testutil.WaitFor(t, testutil.DefaultTimeout, "a sweep", func() bool {
		f.store.mu.Lock()
		defer f.store.mu.Unlock()
		return f.store.sweeps > 0
	})
}

// TestNewRefuses: New refuses a bad config and missing dependencies, and
// does no I/O (nothing here serves).
func TestNewRefuses(t *testing.T) {
	cache := &fakeCache{snap: registry.NewSnapshot(1, nil, nil), records: map[string]registry.Assignment{}}
	clients := fakeClients{}
	good := messaging.Deps{Store: newFakeMsgStore(), Cache: cache, Executors: clients}
	bad := messaging.DefaultConfig()
	bad.QueuePerDevice = 0
	smallBytes := messaging.DefaultConfig()
	smallBytes.QueueTotalBytes = 4 << 20
	noInFlight := messaging.DefaultConfig()
	noInFlight.InFlightBytesPerDevice = 0
	tests := []struct {
		name string
		cfg  messaging.Config
		deps messaging.Deps
		want string // in the error; "" wants none
	}{
		{name: "defaults", cfg: messaging.DefaultConfig(), deps: good},
		{name: "bad config", cfg: bad, deps: good, want: "queue limits 0 per device"},
		{name: "total bytes below a message per shard", cfg: smallBytes, deps: good, want: "queue bytes 16777216 per device, 4194304 total: want at least 1048576 and 8388608"},
		{name: "no in-flight bound", cfg: noInFlight, deps: good, want: "in flight per device 8 deliveries, 0 bytes: want > 0"},
		{name: "no store", cfg: messaging.DefaultConfig(), deps: messaging.Deps{Cache: cache, Executors: clients}, want: "store"},
		{name: "no cache", cfg: messaging.DefaultConfig(), deps: messaging.Deps{Store: newFakeMsgStore(), Executors: clients}, want: "cache"},
		{name: "no executor clients", cfg: messaging.DefaultConfig(), deps: messaging.Deps{Store: newFakeMsgStore(), Cache: cache}, want: "executor clients"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := messaging.New(tt.cfg, tt.deps)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("New = %v; want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("New = %v; want an error naming %q", err, tt.want)
			}
		})
	}
}

// fakeClients lends no executor.
type fakeClients struct{}

func (fakeClients) Acquire(string) (executorv1.ExecutorInternalServiceClient, func(), error) {
	return nil, nil, errors.New("no executors here")
}

// A QUEUE Send to a device that was never assigned and is not connected is
// refused, unless the caller allows it; nothing is queued for it.
func TestSendQueueUnassigned(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	f := startMessaging(t, k, testMessagingConfig(), ex)
	f.setRecord(registry.Assignment{DeviceID: "assigned", GroupID: "g1"})
	f.store.setPresence(ex.presence("connected")) // no record in the cache yet
	queue := messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE
	tests := []struct {
		name       string
		req        *messagingv1.SendRequest
		wantCode   codes.Code
		wantMsg    string
		wantQueued int
	}{
		{name: "never assigned", req: &messagingv1.SendRequest{DeviceId: "made-up", Mode: queue}, wantCode: codes.NotFound,
			wantMsg: "device made-up was never assigned (no assignment record) and is not connected; nothing was queued"},
		{name: "never assigned, allowed", req: &messagingv1.SendRequest{DeviceId: "made-up-2", Mode: queue, AllowUnassigned: true}, wantQueued: 1},
		{name: "assigned, offline", req: &messagingv1.SendRequest{DeviceId: "assigned", Mode: queue}, wantQueued: 1},
		{name: "connected before its record reached the cache", req: &messagingv1.SendRequest{DeviceId: "connected", Mode: queue}},
		{name: "online only is not concerned", req: &messagingv1.SendRequest{DeviceId: "made-up-3"}, wantCode: codes.Unavailable, wantMsg: "is not connected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.client.Send(ctxT(t), tt.req)
			if tt.wantCode != codes.OK {
				wantCode(t, "Send", err, tt.wantCode, tt.wantMsg)
			} else if err != nil {
				t.Fatalf("Send = %v; want it taken", err)
			}
			if got := len(f.store.queue(tt.req.GetDeviceId())); got != tt.wantQueued {
				t.Errorf("queue of %s holds %d; want %d", tt.req.GetDeviceId(), got, tt.wantQueued)
			}
		})
	}
}
