// Package tracing sets up OpenTelemetry tracing for berth's servers and
// clients: an OTLP exporter configured by the standard OTEL_* variables,
// and grpc-go stats handlers (otelgrpc) that start a span per call and
// carry its context in the call's metadata. It is off unless configured:
// then Setup returns nil, and a nil *Tracing installs no stats handler and
// starts no goroutine.
//
// It also reads and writes the W3C traceparent that travels inside a
// device-facing Message (see Parent and ContextWithParent), the one place
// where trace context crosses a boundary gRPC metadata does not.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// Tracing is a tracer provider and the propagator its spans travel with.
// A nil *Tracing is tracing off: its methods return no options, a no-op
// tracer provider and do nothing.
type Tracing struct {
	tp       trace.TracerProvider
	shutdown func(context.Context) error
	prop     propagation.TextMapPropagator
}

// New wraps tp (tests pass an SDK provider with an in-memory recorder).
// Shutdown does not stop tp.
func New(tp trace.TracerProvider) *Tracing {
	return &Tracing{tp: tp, prop: propagation.TraceContext{}, shutdown: func(context.Context) error { return nil }}
}

// Setup reads the OTEL_* variables through getenv (os.Getenv in cmd/) and,
// when they ask for traces, builds a tracer provider exporting by OTLP; it
// returns nil (tracing off) otherwise. Traces are on when
// OTEL_TRACES_EXPORTER is "otlp", or when it is unset and
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
// set; OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn them off.
// OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL picks "grpc" (the default) or
// "http/protobuf". The exporter reads its own variables (endpoint,
// headers, TLS, timeout), the SDK the sampler's (OTEL_TRACES_SAMPLER,
// OTEL_TRACES_SAMPLER_ARG; default parent-based always-on) and the
// resource's (OTEL_SERVICE_NAME, which overrides serviceName,
// OTEL_RESOURCE_ATTRIBUTES). Setup does no I/O: the exporter connects
// when it first exports.
func Setup(ctx context.Context, serviceName string, getenv func(string) string) (*Tracing, error) {
	if !enabled(getenv) {
		return nil, nil
	}
	exp, err := newExporter(ctx, getenv)
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", serviceName)))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, env); err == nil {
			res = merged
		}
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Tracing{tp: tp, shutdown: tp.Shutdown, prop: propagation.TraceContext{}}, nil
}

// enabled reports whether the variables ask for traces.
func enabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	switch strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")) {
	case "otlp":
		return true
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	default: // "none", or an exporter this build does not have (Setup refuses it)
		return getenv("OTEL_TRACES_EXPORTER") != "none"
	}
}

// newExporter builds the OTLP exporter the protocol variables name.
func newExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	if e := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); e != "" && e != "otlp" {
		return nil, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%q: this build exports by OTLP only (otlp, none)", e)
	}
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch proto {
	case "", "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_PROTOCOL=%q: want grpc or http/protobuf", proto)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	return exp, nil
}

// Shutdown flushes the spans not yet exported and stops the exporter,
// waiting until ctx ends at most. It is safe on nil.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}

// TracerProvider returns the provider; a no-op one when t is nil.
func (t *Tracing) TracerProvider() trace.TracerProvider {
	if t == nil {
		return noop.NewTracerProvider()
	}
	return t.tp
}

// noopMeter keeps otelgrpc's own metrics off: berth's gRPC metrics come
// from internal/metrics.
var noopMeter = metricnoop.NewMeterProvider()

// deviceFacing are the services devices call: their calls start a new
// trace linked to the caller's context instead of continuing it, so a
// device cannot graft its spans into a service's trace or force sampling.
var deviceFacing = []string{"/berth.controlplane.v1.ControlPlaneService/", "/berth.executor.v1.ExecutorService/"}

func publicEndpoint(_ context.Context, info *stats.RPCTagInfo) bool {
	for _, p := range deviceFacing {
		if strings.HasPrefix(info.FullMethodName, p) {
			return true
		}
	}
	return false
}

// notHealth leaves health checks and reflection out of traces.
func notHealth(info *stats.RPCTagInfo) bool {
	return !strings.HasPrefix(info.FullMethodName, "/grpc.health.v1.") && !strings.HasPrefix(info.FullMethodName, "/grpc.reflection.")
}

// ServerHandler is the stats handler a server installs
// (rpcserver.Config.StatsHandler); nil when t is nil.
func (t *Tracing) ServerHandler() stats.Handler {
	if t == nil {
		return nil
	}
	return otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithPropagators(t.prop),
		otelgrpc.WithMeterProvider(noopMeter),
		otelgrpc.WithPublicEndpointFn(publicEndpoint),
		otelgrpc.WithFilter(notHealth),
	)
}

// DialOptions are the options a client connection adds to trace its
// calls and carry their context to the server; none when t is nil.
func (t *Tracing) DialOptions() []grpc.DialOption {
	if t == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithPropagators(t.prop),
		otelgrpc.WithMeterProvider(noopMeter),
		otelgrpc.WithFilter(notHealth),
	))}
}
