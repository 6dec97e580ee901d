package executor

import (
	"context"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/tracing"
)

// stampTrace sets the trace context m carries to the device: the span of
// ctx (the Deliver call's server span) when traces are on, so that the
// device's span for the message is its child and the call's span ends when
// the device acknowledges. Without one, m keeps what it carries if valid.
func stampTrace(ctx context.Context, m *executorv1.Message) {
	if tp, ts := tracing.Parent(ctx); tp != "" {
		m.TraceParent, m.TraceState = tp, ts
		return
	}
	boundTrace(m)
}

// boundTrace clears a trace_parent that is not a valid traceparent of at
// most tracing.MaxFieldLen bytes, and a trace_state over that bound: they
// come from services (or the queue) and reach devices.
func boundTrace(m *executorv1.Message) {
	if !tracing.Valid(m.GetTraceParent()) {
		m.TraceParent, m.TraceState = "", ""
	}
	if len(m.GetTraceState()) > tracing.MaxFieldLen {
		m.TraceState = ""
	}
}
