package tracing_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/berthproject/berth/internal/tracing"
)

// env is a getenv over a map.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// TestSetupOffInstallsNothing: without OTEL_* variables (or with them
// saying no), Setup returns nil, which installs no stats handler, adds no
// dial option, starts no goroutine (no exporter, no batcher) and whose
// tracer records nothing.
func TestSetupOffInstallsNothing(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"no variables":      {},
		"service name only": {"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"},
		"exporter none":     {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"},
		"sdk disabled":      {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"},
	} {
		t.Run(name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			tr, err := tracing.Setup(context.Background(), "berth-test", env(vars))
			if err != nil || tr != nil {
				t.Fatalf("Setup = %v, %v; want nil, nil (off)", tr, err)
			}
			if h := tr.ServerHandler(); h != nil {
				t.Errorf("ServerHandler = %T; want nil", h)
			}
			if o := tr.DialOptions(); len(o) != 0 {
				t.Errorf("DialOptions = %d options; want none", len(o))
			}
			_, span := tr.TracerProvider().Tracer("t").Start(context.Background(), "s")
			if span.IsRecording() || span.SpanContext().IsValid() {
				t.Error("the off tracer provider records spans")
			}
			span.End()
			if err := tr.Shutdown(context.Background()); err != nil {
				t.Errorf("Shutdown = %v", err)
			}
		})
	}
}

// TestSetupOn: an OTLP endpoint (or OTEL_TRACES_EXPORTER=otlp) turns traces
// on over gRPC or HTTP; Shutdown stops every goroutine Setup started. The
// exporter connects only to export, so no collector is needed.
func TestSetupOn(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"endpoint, grpc by default": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
		"traces endpoint":           {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1"},
		"exporter otlp, http":       {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
		"traces protocol wins":      {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "bogus", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
	} {
		t.Run(name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			tr, err := tracing.Setup(context.Background(), "berth-test", env(vars))
			if err != nil || tr == nil {
				t.Fatalf("Setup = %v, %v; want tracing on", tr, err)
			}
			if tr.ServerHandler() == nil || len(tr.DialOptions()) != 1 {
				t.Error("tracing on installs no stats handler")
			}
			_, span := tr.TracerProvider().Tracer("t").Start(context.Background(), "s")
			if !span.IsRecording() {
				t.Error("tracing on: span not recording")
			}
			// Not ended: Shutdown has nothing to export, so it does not
			// wait on the unreachable endpoint.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tr.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown = %v", err)
			}
		})
	}
}

// TestSetupRefuses: an exporter or protocol this build does not have is an
// error, not silently no traces.
func TestSetupRefuses(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"console exporter": {"OTEL_TRACES_EXPORTER": "console"},
		"bad protocol":     {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
	} {
		t.Run(name, func(t *testing.T) {
			if tr, err := tracing.Setup(context.Background(), "berth-test", env(vars)); err == nil {
				_ = tr.Shutdown(context.Background())
				t.Fatal("Setup succeeded; want an error")
			}
		})
	}
}

const validParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestParentFields(t *testing.T) {
	for _, tc := range []struct {
		name, parent, state string
		valid               bool
		wantState           string
	}{
		{name: "valid", parent: validParent, state: "vendor=v1", valid: true, wantState: "vendor=v1"},
		{name: "empty", parent: ""},
		{name: "garbage", parent: "not a traceparent"},
		{name: "zero trace id", parent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		{name: "bad version", parent: "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{name: "over the bound", parent: validParent + strings.Repeat("-x", 120)},
		{name: "state over the bound is dropped", parent: validParent, state: "v=" + strings.Repeat("a", tracing.MaxFieldLen), valid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tracing.Valid(tc.parent); got != tc.valid {
				t.Errorf("Valid(%q) = %v; want %v", tc.parent, got, tc.valid)
			}
			ctx := tracing.ContextWithParent(context.Background(), tc.parent, tc.state)
			sc := trace.SpanContextFromContext(ctx)
			if sc.IsValid() != tc.valid {
				t.Fatalf("ContextWithParent: span context valid = %v; want %v", sc.IsValid(), tc.valid)
			}
			if !tc.valid {
				return
			}
			if !sc.IsRemote() {
				t.Error("span context not remote")
			}
			// Round trip: what Parent writes is what came in.
			p, s := tracing.Parent(ctx)
			if p != tc.parent || s != tc.wantState {
				t.Errorf("Parent = %q, %q; want %q, %q", p, s, tc.parent, tc.wantState)
			}
		})
	}
	if p, s := tracing.Parent(context.Background()); p != "" || s != "" {
		t.Errorf("Parent without a span = %q, %q; want empty", p, s)
	}
}
