package tracing

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// MaxFieldLen bounds the trace_parent and trace_state a Message or a
// queued message carries: they come from services and reach devices. A
// traceparent is 55 bytes; a longer tracestate is dropped.
const MaxFieldLen = 256

// w3c reads and writes the W3C Trace Context headers.
var w3c = propagation.TraceContext{}

// Parent returns the W3C traceparent and tracestate of ctx's span, or ""
// when ctx carries no valid span context (tracing off). A tracestate over
// MaxFieldLen is left out.
func Parent(ctx context.Context) (traceParent, traceState string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return "", ""
	}
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	traceParent, traceState = c["traceparent"], c["tracestate"]
	if len(traceParent) > MaxFieldLen {
		return "", ""
	}
	if len(traceState) > MaxFieldLen {
		traceState = ""
	}
	return traceParent, traceState
}

// Valid reports whether traceParent is a traceparent within MaxFieldLen
// naming a valid span context.
func Valid(traceParent string) bool {
	return SpanContext(traceParent, "").IsValid()
}

// SpanContext parses traceParent and traceState as a remote span context;
// the zero (invalid) SpanContext when traceParent is empty, longer than
// MaxFieldLen or malformed. A tracestate over MaxFieldLen or malformed is
// ignored.
func SpanContext(traceParent, traceState string) trace.SpanContext {
	if traceParent == "" || len(traceParent) > MaxFieldLen {
		return trace.SpanContext{}
	}
	c := propagation.MapCarrier{"traceparent": traceParent}
	if traceState != "" && len(traceState) <= MaxFieldLen {
		c["tracestate"] = traceState
	}
	return trace.SpanContextFromContext(w3c.Extract(context.Background(), c))
}

// ContextWithParent returns ctx carrying the remote span context that
// traceParent and traceState name, so that a span started from it (a
// client call's) continues that trace; ctx itself when they are empty or
// malformed.
func ContextWithParent(ctx context.Context, traceParent, traceState string) context.Context {
	sc := SpanContext(traceParent, traceState)
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}
