package messaging_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/messaging"
)

// gate holds the executor's deliveries to one device until opened, and
// answers them with err (nil: acknowledged).
type gate struct {
	device string
	mu     sync.Mutex
	held   int
	err    error
	open   chan struct{}
}

func newGate(device string) *gate { return &gate{device: device, open: make(chan struct{})} }

func (g *gate) deliver(ctx context.Context, req *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
	if req.GetDeviceId() != g.device {
		return &executorv1.DeliverResponse{SessionId: "s1"}, nil
	}
	g.mu.Lock()
	g.held++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.held--
		g.mu.Unlock()
	}()
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if g.err != nil {
		return nil, g.err
	}
	return &executorv1.DeliverResponse{SessionId: "s1"}, nil
}

func (g *gate) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

// fill starts n Sends to the gate's device and waits until the executor
// holds them all; their errors arrive on the returned channel.
func fill(t *testing.T, f *msgFixture, g *gate, n int, payload []byte) <-chan error {
	t.Helper()
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: g.device, Payload: payload})
			errs <- err
		}()
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the executor holds the deliveries", func() bool { return g.waiting() == n })
	return errs
}

// TestSendInFlightBound: a device with InFlightPerDevice deliveries in
// flight gets no more until one ends (every way one ends releases it);
// other devices are not held up; the refusal is RESOURCE_EXHAUSTED naming
// the device, with a retry hint in the status and in the trailer.
func TestSendInFlightBound(t *testing.T) {
	for _, outcome := range []struct {
		name string
		err  error
	}{
		{name: "acknowledged"},
		{name: "executor refused", err: status.Error(codes.ResourceExhausted, "device d1: send queue full")},
		{name: "device left", err: status.Error(codes.NotFound, "device d1 is not connected")},
	} {
		t.Run(outcome.name, func(t *testing.T) {
			f, ex := startBounded(t, func(c *messaging.Config) { c.InFlightPerDevice = 3 })
			f.store.setPresence(ex.presence("d2"))
			g := newGate("d1")
			g.err = outcome.err
			ex.setDeliver(g.deliver)
			errs := fill(t, f, g, 3, []byte("x"))

			var trailer metadata.MD
			_, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")}, grpc.Trailer(&trailer))
			wantCode(t, "Send past the bound", err, codes.ResourceExhausted, "device d1 is not reading fast enough: 3 bytes in 3 deliveries")
			if !hasRetryInfo(err) {
				t.Errorf("refusal %v carries no RetryInfo", err)
			}
			if got := trailer.Get(rpcserver.PushbackTrailer); len(got) != 1 || got[0] != "1000" {
				t.Errorf("pushback trailer = %v; want [1000]", got)
			}
			// Call is bounded by the same count.
			_, err = f.client.Call(ctxT(t), &messagingv1.CallRequest{DeviceId: "d1", Payload: []byte("x")})
			wantCode(t, "Call past the bound", err, codes.ResourceExhausted, "not reading fast enough")
			// Another device is not held up.
			if _, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: "d2", Payload: []byte("x")}); err != nil {
				t.Fatalf("Send to d2: %v", err)
			}
			close(g.open)
			for range 3 {
				if err := <-errs; (err == nil) != (outcome.err == nil) {
					t.Errorf("held Send = %v; want the outcome %v", err, outcome.err)
				}
			}
			// Released whatever the outcome: the bound is whole again.
			g2 := newGate("d1")
			ex.setDeliver(g2.deliver)
			errs = fill(t, f, g2, 3, []byte("x"))
			close(g2.open)
			for range 3 {
				if err := <-errs; err != nil {
					t.Errorf("Send after the release: %v", err)
				}
			}
		})
	}
}

// TestSendInFlightReleasedOnDeadline: a delivery that times out releases
// its place.
func TestSendInFlightReleasedOnDeadline(t *testing.T) {
	f, ex := startBounded(t, func(c *messaging.Config) { c.InFlightPerDevice = 1 })
	ex.setDeliver(blockUntilDone)
	ctx, cancel := context.WithCancel(ctxT(t))
	errs := make(chan error, 1)
	go func() {
		_, err := f.client.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")})
		errs <- err
	}()
	testutil.WaitFor(t, testutil.DefaultTimeout, "the delivery is held", func() bool { return len(ex.deliveries()) == 1 })
	_, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")})
	wantCode(t, "second Send", err, codes.ResourceExhausted, "not reading fast enough")
	cancel()
	<-errs
	ex.setDeliver(nil)
	testutil.WaitFor(t, testutil.DefaultTimeout, "the place is released", func() bool {
		_, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")})
		return err == nil
	})
}

// TestSendInFlightBytes: the byte bound refuses a message behind others,
// but one larger than the bound goes when nothing else is in flight.
func TestSendInFlightBytes(t *testing.T) {
	f, ex := startBounded(t, func(c *messaging.Config) { c.InFlightBytesPerDevice = 1000 })
	g := newGate("d1")
	ex.setDeliver(g.deliver)
	big := make([]byte, 4000)
	errs := fill(t, f, g, 1, big)
	_, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")})
	wantCode(t, "Send behind a large message", err, codes.ResourceExhausted, "4000 bytes in 1 deliveries")
	close(g.open)
	if err := <-errs; err != nil {
		t.Fatalf("the large message alone: %v", err)
	}
}

// TestSendQueuedInFlightBound: a QUEUE Send to a device at its bound is
// stored and not attempted now.
func TestSendQueuedInFlightBound(t *testing.T) {
	f, ex := startBounded(t, func(c *messaging.Config) { c.InFlightPerDevice = 1 })
	g := newGate("d1")
	ex.setDeliver(g.deliver)
	errs := fill(t, f, g, 1, []byte("x"))
	resp, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("q"), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != messagingv1.SendStatus_SEND_STATUS_QUEUED || !strings.Contains(resp.GetDetail(), "delivery not attempted now") {
		t.Errorf("QUEUE Send at the bound = %v; want QUEUED, not attempted", resp)
	}
	if n := len(f.store.queue("d1")); n != 1 {
		t.Errorf("%d messages queued; want 1", n)
	}
	if n := len(ex.deliveries()); n != 1 {
		t.Errorf("executor got %d deliveries; want only the one held", n)
	}
	close(g.open)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

func hasRetryInfo(err error) bool {
	for _, d := range status.Convert(err).Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			return true
		}
	}
	return false
}

// startBounded starts a messaging server with bound set on its config and
// one fake executor, e1, holding device d1.
func startBounded(t *testing.T, bound func(*messaging.Config)) (*msgFixture, *fakeExec) {
	t.Helper()
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	cfg := testMessagingConfig()
	bound(&cfg)
	f := startMessaging(t, k, cfg, ex)
	f.store.setPresence(ex.presence("d1"))
	return f, ex
}
