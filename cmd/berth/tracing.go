package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/berthproject/berth/internal/tracing"
)

// tracingFlushTimeout bounds the flush of the last spans at exit.
const tracingFlushTimeout = 5 * time.Second

// startTracing turns traces on for a command when the OTEL_* variables ask
// for them (tracing.Setup; docs/operations.md, "Traces"); service names
// the process in its spans unless OTEL_SERVICE_NAME does. It returns nil
// when they do not. stop flushes the spans not yet exported, for
// tracingFlushTimeout at most; call it once the servers have stopped.
func startTracing(ctx context.Context, service string, log *slog.Logger) (tr *tracing.Tracing, stop func(), err error) {
	tr, err = tracing.Setup(ctx, service, os.Getenv)
	if err != nil {
		return nil, func() {}, usageError{err}
	}
	if tr == nil {
		return nil, func() {}, nil
	}
	log.Info("traces on: exported by OTLP as the OTEL_* variables say", "service", service)
	return tr, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tracingFlushTimeout)
		defer cancel()
		if err := tr.Shutdown(sctx); err != nil {
			log.Warn("flushing traces", "err", err)
		}
	}, nil
}
