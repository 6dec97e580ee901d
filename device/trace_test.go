package device

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// TestMessageSpan: with a TracerProvider the Device starts a
// "device.message" span, the child of a valid trace_parent or the root of
// a new trace when it is malformed; without one there is no span.
func TestMessageSpan(t *testing.T) {
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	if span := (&Device{}).startMessageSpan(&executorv1.Message{MessageId: "m0", TraceParent: parent}); span != nil {
		t.Error("a span without a TracerProvider")
	}
	d := &Device{cfg: Config{TracerProvider: tp}}

	m := &Message{ID: "m1", span: d.startMessageSpan(&executorv1.Message{MessageId: "m1", TraceParent: parent})}
	m.endSpan(nil)
	m.endSpan(errors.New("second end ignored"))
	bad := &Message{ID: "m2", span: d.startMessageSpan(&executorv1.Message{MessageId: "m2", TraceParent: "00-nonsense"})}
	bad.endSpan(errors.New("not taken"))

	ended := rec.Ended()
	if len(ended) != 2 {
		t.Fatalf("%d spans ended; want 2", len(ended))
	}
	child, root := ended[0], ended[1]
	if child.Name() != messageSpanName || child.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("span %q %v; want %q consumer", child.Name(), child.SpanKind(), messageSpanName)
	}
	if got := child.Parent().TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" || child.Parent().SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("child's parent = %v; want the trace_parent's span", child.Parent())
	}
	if child.Status().Code == codes.Error {
		t.Error("a second endSpan changed the status")
	}
	if root.Parent().IsValid() {
		t.Errorf("span of a malformed trace_parent has parent %v; want a new trace", root.Parent())
	}
	if root.Status().Code != codes.Error {
		t.Errorf("span of a message not taken: status %v; want Error", root.Status())
	}
	if ctx := m.Context(context.Background()); !trace.SpanFromContext(ctx).SpanContext().Equal(child.SpanContext()) {
		t.Error("Message.Context does not carry the message's span")
	}
}
