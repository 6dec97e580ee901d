package executor_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/token"
)

// deliverResult is the outcome of one ExecutorInternalService.Deliver.
type deliverResult struct {
	resp *executorv1.DeliverResponse
	err  error
}

// deliverAsync calls Deliver in the background.
func (h *harness) deliverAsync(ctx context.Context, req *executorv1.DeliverRequest) <-chan deliverResult {
	out := make(chan deliverResult, 1)
	go func() {
		resp, err := h.internal.Deliver(ctx, req)
		out <- deliverResult{resp, err}
	}()
	return out
}

// result waits for a deliverAsync outcome.
func result(t *testing.T, ch <-chan deliverResult) deliverResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitTimeout):
		t.Fatal("Deliver did not return")
		return deliverResult{}
	}
}

func TestInternalServiceAuth(t *testing.T) {
	h := start(t, nil)
	otherKey, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	forger, err := token.NewSigner(otherKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	forged, _, err := forger.SignService("cp-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	past, err := token.NewSigner(h.key, func() time.Time { return time.Now().Add(-time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	expired, _, err := past.SignService("cp-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		md       []string // outgoing metadata pairs
		wantCode codes.Code
		wantMsg  string
	}{
		{"no metadata", nil, codes.Unauthenticated, "service token missing"},
		{"empty bearer", []string{"authorization", "Bearer "}, codes.Unauthenticated, "service token missing"},
		{"other scheme", []string{"authorization", "Basic abc"}, codes.Unauthenticated, "service token missing"},
		{"garbage", []string{"authorization", "Bearer not-a-jwt"}, codes.Unauthenticated, "service token invalid"},
		{"forged", []string{"authorization", "Bearer " + forged}, codes.Unauthenticated, "service token invalid"},
		{"expired", []string{"authorization", "Bearer " + expired}, codes.Unauthenticated, "service token expired"},
		{"device token", []string{"authorization", "Bearer " + h.token(t, "d1")}, codes.PermissionDenied, "not a control plane's service token"},
		// A valid token reaches the handler: the device is not here.
		{"service token", []string{"authorization", "Bearer " + h.serviceToken(t)}, codes.NotFound, "device d1 is not connected to executor exec-1"},
		{"service token, lower-case scheme", []string{"authorization", "bearer " + h.serviceToken(t)}, codes.NotFound, "not connected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if tt.md != nil {
				ctx = metadata.AppendToOutgoingContext(ctx, tt.md...)
			}
			_, err := h.internal.Deliver(ctx, &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "m1"}})
			wantStatus(t, err, tt.wantCode, tt.wantMsg)

			// Subscribe is guarded the same way.
			sub, err := h.internal.Subscribe(ctx, &executorv1.SubscribeRequest{})
			if err != nil {
				t.Fatalf("Subscribe: %v", err)
			}
			if tt.wantCode == codes.NotFound {
				// Admitted: the stream stays open until cancelled.
				testutil.WaitFor(t, waitTimeout, "the subscriber registered", func() bool { return h.srv.Stats().Subscribers == 1 })
				cancel()
				_, err = sub.Recv()
				wantStatus(t, err, codes.Canceled, "")
				testutil.WaitFor(t, waitTimeout, "the subscriber gone", func() bool { return h.srv.Stats().Subscribers == 0 })
				return
			}
			_, err = sub.Recv()
			wantStatus(t, err, tt.wantCode, tt.wantMsg)
		})
	}

	// Each refusal (of Deliver and of Subscribe) is counted by reason.
	wantAuth := map[string]uint64{"service token missing": 6, "service token invalid": 4, "service token expired": 2, "not a control plane's service token": 2}
	if got := h.srv.Stats().AuthRefused; !maps.Equal(got, wantAuth) {
		t.Errorf("Stats().AuthRefused = %v; want %v", got, wantAuth)
	}

	// The device-facing service needs no metadata: its Hello carries the
	// token.
	d, _ := h.connect(t, "d1")
	d.leave(t)
	if err := d.closed(t); err != nil {
		t.Fatalf("device stream ended with %v; want OK", err)
	}
}

func TestInternalDeliverAck(t *testing.T) {
	h := start(t, nil)
	d, w := h.connect(t, "d1")
	want := &executorv1.Message{MessageId: "m1", Payload: []byte(`{"job":1}`), ContentType: "application/json"}
	res := h.deliverAsync(h.serviceCtx(t), &executorv1.DeliverRequest{DeviceId: "d1", Message: want})

	got := d.message(t)
	if !proto.Equal(got, want) {
		t.Errorf("device got %v; want %v", got, want)
	}
	// Another message's Ack does not resolve it; its own does.
	d.ack(t, "other")
	d.ack(t, "m1")
	r := result(t, res)
	if r.err != nil {
		t.Fatalf("Deliver = %v; want OK", r.err)
	}
	if r.resp.GetSessionId() != w.GetSessionId() || r.resp.GetReply() != nil {
		t.Errorf("Deliver = %v; want session %s and no reply", r.resp, w.GetSessionId())
	}
	if n := h.srv.Stats().Delivering; n != 0 {
		t.Errorf("Stats().Delivering = %d after the ack; want 0", n)
	}
}

func TestInternalDeliverReply(t *testing.T) {
	h := start(t, nil)
	d, w := h.connect(t, "d1")
	res := h.deliverAsync(h.serviceCtx(t), &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{
		MessageId: "call-1", Payload: []byte("ping"), ContentType: "text/plain", ExpectsReply: true,
	}})
	m := d.message(t)
	if !m.GetExpectsReply() {
		t.Errorf("device got %v; want expects_reply", m)
	}
	// An Ack does not answer a call: the Reply that follows does.
	d.ack(t, "call-1")
	want := &executorv1.Reply{MessageId: "call-1", Payload: []byte("pong"), ContentType: "text/plain"}
	d.reply(t, want)
	r := result(t, res)
	if r.err != nil {
		t.Fatalf("Deliver = %v; want OK", r.err)
	}
	if !proto.Equal(r.resp.GetReply(), want) || r.resp.GetSessionId() != w.GetSessionId() {
		t.Errorf("Deliver = %v; want reply %v in session %s", r.resp, want, w.GetSessionId())
	}

	// A Reply resolves a plain delivery too (it is an Ack), and an error
	// reply is passed on as it is.
	res = h.deliverAsync(h.serviceCtx(t), &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "m2"}})
	d.message(t)
	failed := &executorv1.Reply{MessageId: "m2", Error: "printer out of paper"}
	d.reply(t, failed)
	if r := result(t, res); r.err != nil || !proto.Equal(r.resp.GetReply(), failed) {
		t.Errorf("Deliver = %v, %v; want reply %v", r.resp, r.err, failed)
	}
}

func TestInternalDeliverErrors(t *testing.T) {
	h := start(t, nil)
	ctx := h.serviceCtx(t)
	_, err := h.internal.Deliver(ctx, &executorv1.DeliverRequest{DeviceId: "nobody", Message: &executorv1.Message{MessageId: "m1"}})
	wantStatus(t, err, codes.NotFound, "device nobody is not connected to executor exec-1")

	h.connect(t, "d1")
	for _, tt := range []struct {
		req  *executorv1.DeliverRequest
		want string
	}{
		{&executorv1.DeliverRequest{Message: &executorv1.Message{MessageId: "m1"}}, "device_id is required"},
		{&executorv1.DeliverRequest{DeviceId: "d1"}, "message is required"},
		{&executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{}}, "message_id is required"},
	} {
		_, err := h.internal.Deliver(ctx, tt.req)
		wantStatus(t, err, codes.InvalidArgument, tt.want)
	}
}

func TestInternalDeliverDeadline(t *testing.T) {
	h := start(t, nil)
	d, _ := h.connect(t, "d1")
	ctx, cancel := context.WithTimeout(h.serviceCtx(t), 200*time.Millisecond)
	defer cancel()
	res := h.deliverAsync(ctx, &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "m1"}})
	d.message(t) // delivered, never acked
	wantStatus(t, result(t, res).err, codes.DeadlineExceeded, "")
	testutil.WaitFor(t, waitTimeout, "no delivery waiting", func() bool { return h.srv.Stats().Delivering == 0 })

	// The stream is still served.
	res = h.deliverAsync(h.serviceCtx(t), &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "m2"}})
	d.ack(t, d.message(t).GetMessageId())
	if r := result(t, res); r.err != nil {
		t.Fatalf("Deliver after a timeout = %v", r.err)
	}
}

func TestInternalDeliverStreamClosedMidWait(t *testing.T) {
	h := start(t, nil)
	d, _ := h.connect(t, "d1")
	res := h.deliverAsync(h.serviceCtx(t), &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "m1"}})
	d.message(t)
	d.leave(t) // gone without acking
	wantStatus(t, result(t, res).err, codes.Unavailable, "stream closed before the device acknowledged")
	if n := h.srv.Stats().Delivering; n != 0 {
		t.Errorf("Stats().Delivering = %d; want 0", n)
	}

	// A replaced stream ends its deliveries the same way.
	d1, _ := h.connect(t, "d2")
	res = h.deliverAsync(h.serviceCtx(t), &executorv1.DeliverRequest{DeviceId: "d2", Message: &executorv1.Message{MessageId: "m2"}})
	d1.message(t)
	h.connect(t, "d2")
	wantStatus(t, result(t, res).err, codes.Unavailable, "stream closed before the device acknowledged")
}

func TestInternalDeliverSendQueueFull(t *testing.T) {
	h := start(t, func(c *executor.Config) { c.SendQueue = 1 })
	// This device never reads after its Hello, on a connection whose
	// flow-control windows stay small: the executor's sender soon blocks
	// and the send queue fills.
	conn := h.dial(t, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stuck, err := executorv1.NewExecutorServiceClient(conn).Connect(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stuck.Send(helloFrame("slow", h.token(t, "slow"))); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitTimeout, "the slow device admitted", func() bool { return h.srv.Sessions() == 1 })

	payload := make([]byte, 256<<10)
	ctx := h.serviceCtx(t)
	var pending []<-chan deliverResult
	got := map[int]codes.Code{} // outcomes seen, by delivery
	full := false
	for i := 0; i < 64 && !full; i++ {
		pending = append(pending, h.deliverAsync(ctx, &executorv1.DeliverRequest{DeviceId: "slow", Message: &executorv1.Message{
			MessageId: fmt.Sprint("m", i), Payload: payload,
		}}))
		// One at a time: wait until this one waits for its ack, or one
		// failed.
		testutil.WaitFor(t, waitTimeout, "the delivery queued or refused", func() bool {
			if h.srv.Stats().Delivering == len(pending)-len(got) {
				return true
			}
			for j, ch := range pending {
				if _, done := got[j]; done {
					continue
				}
				select {
				case r := <-ch:
					got[j] = status.Code(r.err)
					full = full || got[j] == codes.ResourceExhausted
					return true
				default:
				}
			}
			return false
		})
	}
	if !full {
		t.Fatalf("no RESOURCE_EXHAUSTED after %d deliveries to a device that does not read (seen %v)", len(pending), got)
	}
	// The stream was closed: every other delivery fails, UNAVAILABLE when
	// it was waiting for its ack, NOT_FOUND when it came too late.
	for j, ch := range pending {
		c, done := got[j]
		if !done {
			c = status.Code(result(t, ch).err)
		}
		if c != codes.Unavailable && c != codes.NotFound && c != codes.ResourceExhausted {
			t.Errorf("a delivery to the closed stream: %v; want UNAVAILABLE or NOT_FOUND", c)
		}
	}
	testutil.WaitFor(t, waitTimeout, "the stuck stream gone", func() bool { return h.srv.Sessions() == 0 })
}

// subscribe opens a Subscribe stream on conn; it is cancelled when the test
// ends.
func (h *harness) subscribe(t *testing.T, conn *grpc.ClientConn) executorv1.ExecutorInternalService_SubscribeClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+h.serviceToken(t))
	before := h.srv.Stats().Subscribers
	sub, err := executorv1.NewExecutorInternalServiceClient(conn).Subscribe(ctx, &executorv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitTimeout, "the subscriber registered", func() bool { return h.srv.Stats().Subscribers > before })
	return sub
}

func publishFrame(topic string, payload []byte) *executorv1.ConnectRequest {
	return &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Publish{Publish: &executorv1.Publish{
		Topic: topic, Payload: payload, ContentType: "application/octet-stream",
	}}}
}

func TestSubscribeReceivesPublishes(t *testing.T) {
	hooked := make(chan *executorv1.Publish, 10)
	h := start(t, func(c *executor.Config) {
		c.Hooks.OnPublish = func(_ string, p *executorv1.Publish) {
			p.Topic = "changed by the hook" // the hook owns p
			hooked <- p
		}
	})
	d, _ := h.connect(t, "d1")
	sub := h.subscribe(t, h.conn)
	want := &executorv1.Publish{Topic: "status", Payload: []byte("ok"), ContentType: "text/plain"}
	before := time.Now()
	if err := d.send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Publish{Publish: proto.Clone(want).(*executorv1.Publish)}}); err != nil {
		t.Fatal(err)
	}
	r, err := sub.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if r.GetDeviceId() != "d1" || r.GetExecutorId() != testExecutor || !proto.Equal(r.GetPublish(), want) {
		t.Errorf("Subscribe got %v; want d1's %v from %s", r, want, testExecutor)
	}
	if at := r.GetReceivedAt().AsTime(); at.Before(before.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
		t.Errorf("received_at = %v; want about now", at)
	}
	select {
	case <-hooked:
	case <-time.After(waitTimeout):
		t.Fatal("OnPublish not called")
	}
}

func TestSlowSubscriberDropsWithoutBlocking(t *testing.T) {
	h := start(t, func(c *executor.Config) { c.SubscribeBuffer = 2 })
	d, _ := h.connect(t, "d1")
	fast := h.subscribe(t, h.conn)
	// The slow subscriber never reads, on a connection whose windows stay
	// small: its stream blocks after a few publishes, then its buffer fills.
	slowConn := h.dial(t, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	h.subscribe(t, slowConn)

	payload := make([]byte, 100<<10)
	n := 0
	for ; n < 200 && h.srv.Stats().PublishesDropped == 0; n++ {
		if err := d.send(publishFrame(fmt.Sprint("t", n), payload)); err != nil {
			t.Fatal(err)
		}
		// The fast subscriber gets every publish: the fan-out of this one
		// is done.
		r, err := fast.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := r.GetPublish().GetTopic(); got != fmt.Sprint("t", n) {
			t.Fatalf("fast subscriber got %s; want t%d", got, n)
		}
	}
	if h.srv.Stats().PublishesDropped == 0 {
		t.Fatalf("no publish dropped for a subscriber that does not read, after %d publishes", n)
	}
	// The device's stream is not held up: a delivery round trip works.
	res := h.deliverAsync(h.serviceCtx(t), &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "m1"}})
	d.ack(t, d.message(t).GetMessageId())
	if r := result(t, res); r.err != nil {
		t.Fatalf("Deliver = %v", r.err)
	}
	if st := h.srv.Stats(); st.Subscribers != 2 {
		t.Errorf("Stats().Subscribers = %d; want 2", st.Subscribers)
	}
}

func TestSubscribeEndsAtShutdown(t *testing.T) {
	h := start(t, nil)
	sub := h.subscribe(t, h.conn)
	h.stop()
	_, err := sub.Recv()
	if errors.Is(err, io.EOF) {
		t.Fatal("Subscribe ended with OK; want UNAVAILABLE")
	}
	wantStatus(t, err, codes.Unavailable, "executor shutting down")
	if err := h.wait(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
}
