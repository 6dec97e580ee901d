package executor

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

const testParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestStampTrace: the Deliver call's span wins; without one a valid
// trace_parent from the caller or the queue is kept, and a malformed or
// oversized one is dropped before it reaches the device.
func TestStampTrace(t *testing.T) {
	callSpan := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled,
	})
	traced := trace.ContextWithSpanContext(context.Background(), callSpan)
	for _, tc := range []struct {
		name              string
		ctx               context.Context
		parent, state     string
		wantParent, wantS string
	}{
		{name: "call span", ctx: traced, parent: testParent, state: "a=b",
			wantParent: "00-01000000000000000000000000000000-0200000000000000-01"},
		{name: "kept", ctx: context.Background(), parent: testParent, state: "a=b", wantParent: testParent, wantS: "a=b"},
		{name: "malformed dropped", ctx: context.Background(), parent: "00-zz", state: "a=b"},
		{name: "oversized dropped", ctx: context.Background(), parent: testParent + strings.Repeat("0", 300)},
		{name: "oversized state dropped", ctx: context.Background(), parent: testParent, state: strings.Repeat("a", 300), wantParent: testParent},
		{name: "none", ctx: context.Background()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &executorv1.Message{MessageId: "m", TraceParent: tc.parent, TraceState: tc.state}
			stampTrace(tc.ctx, m)
			if m.GetTraceParent() != tc.wantParent || m.GetTraceState() != tc.wantS {
				t.Errorf("trace = %q, %q; want %q, %q", m.GetTraceParent(), m.GetTraceState(), tc.wantParent, tc.wantS)
			}
		})
	}
}
