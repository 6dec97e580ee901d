package main

import (
	"context"
	"log/slog"
	"testing"
)

// TestStartTracing: no OTEL_* variable, no tracing; an exporter this build
// does not have is a usage error (exit 2), not silently no traces.
func TestStartTracing(t *testing.T) {
	for _, v := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		t.Setenv(v, "")
	}
	log := slog.New(slog.DiscardHandler)
	tr, stop, err := startTracing(context.Background(), "berth-test", log)
	if err != nil || tr != nil {
		t.Fatalf("startTracing without variables = %v, %v; want off", tr, err)
	}
	stop()

	t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
	tr, stop, err = startTracing(context.Background(), "berth-test", log)
	stop()
	if err == nil || tr != nil {
		t.Fatalf("startTracing with OTEL_TRACES_EXPORTER=zipkin = %v, %v; want an error", tr, err)
	}
	if got := exitCode(err); got != exitUsage {
		t.Errorf("exit code %d; want %d (usage)", got, exitUsage)
	}
}
