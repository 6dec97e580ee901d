package rpcserver

import (
	"context"
	"log/slog"
	"path"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Calls are logged by go-grpc-middleware's logging interceptor, which builds
// a dozen fields for every call before the logger decides to print it. A
// busy server logs successful calls at debug level (levelFor), so at any
// other level nearly every call's fields were built to be dropped: on
// `berth bench push` that was a third of the executor's Deliver cost.
// callLog keeps the interceptor for when the logger prints debug, and
// otherwise logs only the calls whose outcome is at an enabled level, with
// the same message and field names.

// callLog chooses, per call, how a finished call is logged.
type callLog struct {
	log   *slog.Logger
	full  grpc.UnaryServerInterceptor
	fullS grpc.StreamServerInterceptor
}

func newCallLog(log *slog.Logger) *callLog {
	lg := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	opts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(levelFor),
	}
	return &callLog{log: log, full: logging.UnaryServerInterceptor(lg, opts...), fullS: logging.StreamServerInterceptor(lg, opts...)}
}

// verbose reports whether successful calls are printed.
func (c *callLog) verbose(ctx context.Context) bool {
	return c.log.Enabled(ctx, slog.Level(levelFor(codes.OK)))
}

// unary is the unary interceptor.
func (c *callLog) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if c.verbose(ctx) {
		return c.full(ctx, req, info, handler)
	}
	start := time.Now()
	resp, err := handler(ctx, req)
	c.finished(ctx, info.FullMethod, "unary", start, err)
	return resp, err
}

// stream is the stream interceptor.
func (c *callLog) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	if c.verbose(ctx) {
		return c.fullS(srv, ss, info, handler)
	}
	start := time.Now()
	err := handler(srv, ss)
	kind := "bidi_stream"
	switch {
	case info.IsClientStream && !info.IsServerStream:
		kind = "client_stream"
	case info.IsServerStream && !info.IsClientStream:
		kind = "server_stream"
	}
	c.finished(ctx, info.FullMethod, kind, start, err)
	return err
}

// finished logs a call whose outcome's level is enabled.
func (c *callLog) finished(ctx context.Context, fullMethod, kind string, start time.Time, err error) {
	code := status.Code(err)
	lvl := slog.Level(levelFor(code))
	if !c.log.Enabled(ctx, lvl) {
		return
	}
	attrs := []any{
		"protocol", "grpc", "grpc.component", "server",
		"grpc.service", path.Dir(fullMethod)[1:], "grpc.method", path.Base(fullMethod), "grpc.method_type", kind,
		"grpc.start_time", start.Format(time.RFC3339),
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, "peer.address", p.Addr.String())
	}
	if d, ok := ctx.Deadline(); ok {
		attrs = append(attrs, "grpc.request.deadline", d.Format(time.RFC3339))
	}
	attrs = append(attrs, "grpc.code", code.String())
	if err != nil {
		attrs = append(attrs, "grpc.error", err.Error())
	}
	attrs = append(attrs, "grpc.time_ms", float64(time.Since(start).Microseconds())/1000)
	c.log.Log(ctx, lvl, "finished call", attrs...)
}
