package executor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/registry"
)

func TestDeliver(t *testing.T) {
	h := start(t, nil)
	d, _ := h.connect(t, "d1")
	ctx := context.Background()

	want := &executorv1.Message{MessageId: "m1", Payload: []byte(`{"job":1}`), ContentType: "application/json"}
	if err := h.srv.Deliver(ctx, "d1", proto.Clone(want).(*executorv1.Message)); err != nil {
		t.Fatalf("Deliver to a connected device: %v", err)
	}
	f := d.next(t, "Message", func(f *executorv1.ConnectResponse) bool { return f.GetMessage() != nil })
	if !proto.Equal(f.GetMessage(), want) {
		t.Errorf("device got %v; want %v", f.GetMessage(), want)
	}

	err := h.srv.Deliver(ctx, "nobody", &executorv1.Message{MessageId: "m2"})
	if !errors.Is(err, executor.ErrNotConnected) {
		t.Errorf("Deliver to an unknown device = %v; want ErrNotConnected", err)
	}

	d.leave(t)
	if err := d.closed(t); err != nil {
		t.Fatalf("stream ended with %v; want OK", err)
	}
	h.reg.waitRecord(t, "0 connections", func(e registry.Executor) bool { return e.Connections == 0 })
	if err := h.srv.Deliver(ctx, "d1", &executorv1.Message{MessageId: "m3"}); !errors.Is(err, executor.ErrNotConnected) {
		t.Errorf("Deliver after the device left = %v; want ErrNotConnected", err)
	}
	if err := h.srv.Deliver(ctx, "d1", nil); err == nil {
		t.Error("Deliver(nil message) = nil; want an error")
	}
}

func TestHooksReceiveAcksAndPublishes(t *testing.T) {
	type ack struct{ device, message string }
	type pub struct {
		device string
		p      *executorv1.Publish
	}
	acks := make(chan ack, 1)
	pubs := make(chan pub, 1)
	h := start(t, func(c *executor.Config) {
		c.Hooks = executor.Hooks{
			OnAck:     func(device, message string) { acks <- ack{device, message} },
			OnPublish: func(device string, p *executorv1.Publish) { pubs <- pub{device, p} },
		}
	})
	d, _ := h.connect(t, "d1")

	if err := d.send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Ack{Ack: &executorv1.Ack{MessageId: "m1"}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-acks:
		if a != (ack{"d1", "m1"}) {
			t.Errorf("OnAck(%q, %q); want (d1, m1)", a.device, a.message)
		}
	case <-time.After(waitTimeout):
		t.Fatal("OnAck not called")
	}

	want := &executorv1.Publish{Topic: "status", Payload: []byte("ok"), ContentType: "text/plain"}
	if err := d.send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Publish{Publish: want}}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-pubs:
		if p.device != "d1" || !proto.Equal(p.p, want) {
			t.Errorf("OnPublish(%q, %v); want (d1, %v)", p.device, p.p, want)
		}
	case <-time.After(waitTimeout):
		t.Fatal("OnPublish not called")
	}
	if got := h.srv.Stats().FramesReceived; got != 2 {
		t.Errorf("Stats().FramesReceived = %d; want 2", got)
	}
}

func TestNilHooksAreSkipped(t *testing.T) {
	h := start(t, nil)
	d, _ := h.connect(t, "d1")
	for _, f := range []*executorv1.ConnectRequest{
		{Frame: &executorv1.ConnectRequest_Ack{Ack: &executorv1.Ack{MessageId: "m1"}}},
		{Frame: &executorv1.ConnectRequest_Publish{Publish: &executorv1.Publish{Topic: "t"}}},
		{}, // a frame from a newer device that this executor does not know
	} {
		if err := d.send(f); err != nil {
			t.Fatal(err)
		}
	}
	// The stream is still served: a delivery still arrives.
	if err := h.srv.Deliver(context.Background(), "d1", &executorv1.Message{MessageId: "m2"}); err != nil {
		t.Fatal(err)
	}
	d.next(t, "Message", func(f *executorv1.ConnectResponse) bool { return f.GetMessage() != nil })
}

func TestStuckDeviceIsClosed(t *testing.T) {
	h := start(t, func(c *executor.Config) { c.SendQueue = 2 })
	// This device never reads its stream after the Hello.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stuck, err := h.client.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stuck.Send(helloFrame("slow", h.token(t, "slow"))); err != nil {
		t.Fatal(err)
	}
	h.reg.waitRecord(t, "the slow device admitted", func(e registry.Executor) bool { return e.Connections == 1 })
	healthy, _ := h.connect(t, "fast")

	// Deliveries to the slow device fill its flow-control window, then its
	// queue; Deliver never blocks, and fails once the queue is full.
	payload := make([]byte, 256<<10)
	var deliverErr error
	for i := 0; i < 400 && deliverErr == nil; i++ {
		deliverErr = h.srv.Deliver(context.Background(), "slow", &executorv1.Message{MessageId: "big", Payload: payload})
	}
	if !errors.Is(deliverErr, executor.ErrSendQueueFull) {
		t.Fatalf("Deliver to a device that does not read: last error %v; want ErrSendQueueFull", deliverErr)
	}
	h.reg.waitRecord(t, "the slow device gone", func(e registry.Executor) bool { return e.Connections == 1 && h.srv.Sessions() == 1 })
	if st := h.srv.Stats(); st.Stuck != 1 {
		t.Errorf("Stats().Stuck = %d; want 1", st.Stuck)
	}
	if err := h.srv.Deliver(context.Background(), "slow", &executorv1.Message{MessageId: "after"}); !errors.Is(err, executor.ErrNotConnected) {
		t.Errorf("Deliver after the stuck stream was closed = %v; want ErrNotConnected", err)
	}

	// The other device was never held up.
	if err := h.srv.Deliver(context.Background(), "fast", &executorv1.Message{MessageId: "m1"}); err != nil {
		t.Fatal(err)
	}
	healthy.next(t, "Message", func(f *executorv1.ConnectResponse) bool { return f.GetMessage().GetMessageId() == "m1" })
}

func TestPanickingHookClosesOnlyThatStream(t *testing.T) {
	h := start(t, func(c *executor.Config) {
		c.Hooks.OnAck = func(string, string) { panic("hook bug") }
	})
	d, _ := h.connect(t, "d1")
	other, _ := h.connect(t, "d2")
	if err := d.send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Ack{Ack: &executorv1.Ack{MessageId: "m1"}}}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, d.closed(t), codes.Internal, "internal error")
	if err := h.srv.Deliver(context.Background(), "d2", &executorv1.Message{MessageId: "m2"}); err != nil {
		t.Fatal(err)
	}
	other.next(t, "Message", func(f *executorv1.ConnectResponse) bool { return f.GetMessage() != nil })
}

// TestDeliverToDeviceNotReading: a device that sends its Hello and then
// reads nothing fills the transport, then its send queue, and its stream is
// cut; the deliveries that were waiting for its Ack are answered
// RESOURCE_EXHAUSTED with that reason (not "stream closed" or
// "unreachable"), and the cut is counted as stuck.
func TestDeliverToDeviceNotReading(t *testing.T) {
	h := start(t, func(c *executor.Config) { c.SendQueue = 2 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := h.client.Connect(ctx) // never read
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(helloFrame("slow", h.token(t, "slow"))); err != nil {
		t.Fatal(err)
	}
	h.reg.waitRecord(t, "the device admitted", func(e registry.Executor) bool { return e.Connections == 1 })
	payload := make([]byte, 256<<10) // a few fill the HTTP/2 windows
	const n = 12
	errs := make(chan error, n)
	for i := range n {
		go func() {
			dctx, dcancel := context.WithTimeout(h.serviceCtx(t), time.Minute)
			defer dcancel()
			_, err := h.internal.Deliver(dctx, &executorv1.DeliverRequest{DeviceId: "slow",
				Message: &executorv1.Message{MessageId: fmt.Sprint("m", i), Payload: payload}})
			errs <- err
		}()
	}
	// Those queued or waiting when the stream was cut learn why; those that
	// came after find no device here.
	told := 0
	for range n {
		err := <-errs
		switch st := status.Convert(err); {
		case st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "not reading"):
			told++
		case st.Code() == codes.NotFound:
		default:
			t.Errorf("Deliver to a device not reading: %v; want RESOURCE_EXHAUSTED saying it is not reading, or NOT_FOUND once cut", err)
		}
	}
	if told == 0 {
		t.Error("no delivery was told the device is not reading")
	}
	if got := h.srv.Stats().Stuck; got != 1 {
		t.Errorf("Stuck = %d, want 1", got)
	}
}
