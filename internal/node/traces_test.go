package node_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/berthproject/berth/device"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/internal/tracing"
)

// traced is a replica and an executor of one registry, traced into one
// in-memory recorder.
type traced struct {
	rec  *tracetest.SpanRecorder
	tp   *sdktrace.TracerProvider
	cp   string // the replica's address
	msg  messagingv1.MessagingServiceClient
	stop func()
}

func startTraced(t *testing.T) *traced {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tr := tracing.New(tp)
	reg := newRegistry(t)
	k := newKeys(t)
	// Before the replica starts, so that its first load of the keys has
	// it (a key made later reaches the replica through its watch).
	key := apiKey(t, reg, "test admin", []string{"admin"})
	elis := listen(t)
	ex, err := node.NewExecutor(executorConfig(elis.Addr().String(), false), node.ExecutorDeps{Registry: reg, Verifier: k.verifier, Tracing: tr})
	if err != nil {
		t.Fatal(err)
	}
	erun := start(ex.Run, elis)
	cfg := node.DefaultReplicaConfig()
	cfg.ControlPlane.ReplicaID = "cp-traces"
	cfg.OpenEnrollment = true
	cfg.Rebalance = nil
	r, err := node.NewReplica(cfg, node.ReplicaDeps{Registry: reg, Signer: k.signer, Tracing: tr})
	if err != nil {
		t.Fatal(err)
	}
	lis := listen(t)
	run := start(r.Run, lis)
	testutil.WaitFor(t, testutil.DefaultTimeout, "the replica seeing the executor", func() bool { return r.ControlPlane().KnownExecutors() == 1 })
	return &traced{
		rec: rec, tp: tp, cp: lis.Addr().String(),
		msg: messagingv1.NewMessagingServiceClient(dialKey(t, lis.Addr().String(), key)),
		stop: func() {
			if err := run.stop(); err != nil {
				t.Errorf("replica Run = %v", err)
			}
			if err := erun.stop(); err != nil {
				t.Errorf("executor Run = %v", err)
			}
			_ = tp.Shutdown(context.Background())
		},
	}
}

// connectDevice connects an SDK device that traces into tr's provider and
// acks every message; it is closed at cleanup.
func (tr *traced) connectDevice(ctx context.Context, t *testing.T, id string) {
	t.Helper()
	d, err := device.Connect(ctx, device.Config{ControlPlane: tr.cp, DeviceID: id, TracerProvider: tr.tp})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range d.Messages() {
			if err := m.Ack(ctx); err != nil {
				t.Errorf("Ack(%s) = %v", m.ID, err)
			}
		}
	}()
	t.Cleanup(func() {
		d.Close()
		<-done
	})
}

// span returns the one ended span of that name and kind, or nil.
func (tr *traced) span(name string, kind trace.SpanKind) sdktrace.ReadOnlySpan {
	var found sdktrace.ReadOnlySpan
	for _, s := range tr.rec.Ended() {
		if s.Name() == name && s.SpanKind() == kind {
			found = s
		}
	}
	return found
}

const (
	sendSpan    = "berth.messaging.v1.MessagingService/Send"
	deliverSpan = "berth.executor.v1.ExecutorInternalService/Deliver"
	deviceSpan  = "device.message"
)

// childOf checks that child is in parent's trace, with parent as its parent.
func childOf(t *testing.T, child, parent sdktrace.ReadOnlySpan) {
	t.Helper()
	if child.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("%s (%v) trace %s; want %s's trace %s", child.Name(), child.SpanKind(), child.SpanContext().TraceID(), parent.Name(), parent.SpanContext().TraceID())
	}
	if child.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("%s (%v) parent %s; want %s (%v) %s", child.Name(), child.SpanKind(), child.Parent().SpanID(), parent.Name(), parent.SpanKind(), parent.SpanContext().SpanID())
	}
}

// TestTraceOfAnOnlineSend: one ONLINE_ONLY Send to a connected SDK device
// is one trace: the Send's server span, the replica's Deliver client span,
// the executor's Deliver server span (which ends once the device acked),
// and the device's "device.message" span.
func TestTraceOfAnOnlineSend(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	tr := startTraced(t)
	defer tr.stop()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	tr.connectDevice(ctx, t, "dev-1")
	testutil.WaitFor(t, testutil.DefaultTimeout, "dev-1 online", func() bool {
		d, err := tr.msg.GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: "dev-1"})
		return err == nil && d.GetOnline()
	})
	sent, err := tr.msg.Send(ctx, &messagingv1.SendRequest{DeviceId: "dev-1", Payload: []byte("hi"), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY})
	if err != nil || sent.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED {
		t.Fatalf("Send = %v, %v; want DELIVERED", sent, err)
	}
	// A server's span ends after its answer is sent, the device's after
	// its Ack is: wait for the four.
	var send, client, server, dev sdktrace.ReadOnlySpan
	testutil.WaitFor(t, testutil.DefaultTimeout, "the Send, Deliver (client and server) and device spans ended", func() bool {
		send, client = tr.span(sendSpan, trace.SpanKindServer), tr.span(deliverSpan, trace.SpanKindClient)
		server, dev = tr.span(deliverSpan, trace.SpanKindServer), tr.span(deviceSpan, trace.SpanKindConsumer)
		return send != nil && client != nil && server != nil && dev != nil
	})
	if send.Parent().IsValid() {
		t.Errorf("Send's span has parent %v; want a root (the caller did not trace)", send.Parent())
	}
	childOf(t, client, send)
	childOf(t, server, client)
	childOf(t, dev, server)
	if !dev.Parent().IsRemote() {
		t.Error("the device's span's parent is not remote: it did not come from the Message's trace_parent")
	}
	if got := attr(dev, "berth.message_id"); got != sent.GetMessageId() {
		t.Errorf("device span berth.message_id = %q; want %q", got, sent.GetMessageId())
	}
}

// TestTraceOfAQueuedSend: a message queued while its device is away is
// delivered at its connect in the trace of the Send that queued it.
func TestTraceOfAQueuedSend(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	tr := startTraced(t)
	defer tr.stop()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	sent, err := tr.msg.Send(ctx, &messagingv1.SendRequest{DeviceId: "dev-q", Payload: []byte("later"), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE, AllowUnassigned: true})
	if err != nil || sent.GetStatus() != messagingv1.SendStatus_SEND_STATUS_QUEUED {
		t.Fatalf("Send = %v, %v; want QUEUED", sent, err)
	}
	tr.connectDevice(ctx, t, "dev-q")
	var send, dev sdktrace.ReadOnlySpan
	testutil.WaitFor(t, testutil.DefaultTimeout, "the Send's and the device's spans ended", func() bool {
		send, dev = tr.span(sendSpan, trace.SpanKindServer), tr.span(deviceSpan, trace.SpanKindConsumer)
		return send != nil && dev != nil
	})
	childOf(t, dev, send)
	if got := attr(dev, "berth.message_id"); got != sent.GetMessageId() {
		t.Errorf("device span berth.message_id = %q; want %q", got, sent.GetMessageId())
	}
}

// attr is the string attribute key of s.
func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.AsString()
		}
	}
	return ""
}
