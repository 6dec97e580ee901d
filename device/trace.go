package device

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// maxTraceField bounds the trace_parent and trace_state a Message may
// carry; a longer or malformed one is ignored.
const maxTraceField = 256

// messageSpanName is the span a Device with a TracerProvider starts for
// each message it hands to the application.
const messageSpanName = "device.message"

// startMessageSpan starts the "device.message" span for m, a child of the
// trace context the executor put in it; nil when the Device has no
// TracerProvider. A message without a valid trace_parent gets a span of a
// new trace.
func (d *Device) startMessageSpan(m *executorv1.Message) trace.Span {
	if d.cfg.TracerProvider == nil {
		return nil
	}
	ctx := context.Background()
	if tp := m.GetTraceParent(); tp != "" && len(tp) <= maxTraceField {
		c := propagation.MapCarrier{"traceparent": tp}
		if ts := m.GetTraceState(); ts != "" && len(ts) <= maxTraceField {
			c["tracestate"] = ts
		}
		ctx = propagation.TraceContext{}.Extract(ctx, c)
	}
	_, span := d.cfg.TracerProvider.Tracer("github.com/berthproject/berth/device").Start(ctx, messageSpanName,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("berth.message_id", m.GetMessageId()), attribute.Bool("berth.expects_reply", m.GetExpectsReply())))
	return span
}

// endSpan ends the message's span, with err as its status; only the first
// call counts.
func (m *Message) endSpan(err error) {
	if m == nil || m.span == nil {
		return
	}
	m.spanOnce.Do(func() {
		if err != nil {
			m.span.RecordError(err)
			m.span.SetStatus(codes.Error, err.Error())
		}
		m.span.End()
	})
}

// Context returns ctx carrying the message's "device.message" span (when
// the Device traces), so that the application's own spans for handling the
// message join its trace. Without tracing it returns ctx.
func (m *Message) Context(ctx context.Context) context.Context {
	if m == nil || m.span == nil {
		return ctx
	}
	return trace.ContextWithSpan(ctx, m.span)
}
