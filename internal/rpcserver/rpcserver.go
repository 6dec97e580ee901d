// Package rpcserver builds the gRPC server stack shared by every berth
// server: keepalive enforcement, message size limits, metrics, logging and
// panic recovery interceptors, the health service and server reflection.
package rpcserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/internal/codec"
)

// Config tunes the shared server stack.
type Config struct {
	// MaxRecvMsgSize bounds every message a client sends.
	MaxRecvMsgSize int
	// MaxSendMsgSize bounds every message the server sends.
	MaxSendMsgSize int
	// KeepaliveTime is how often the server pings an idle connection.
	KeepaliveTime time.Duration
	// KeepaliveTimeout is how long it waits for the ping's answer.
	KeepaliveTimeout time.Duration
	// KeepaliveMinTime is the shortest client ping interval tolerated;
	// clients pinging faster are disconnected (GOAWAY "too_many_pings").
	KeepaliveMinTime time.Duration
	// MaxConcurrentStreams bounds the streams of one connection.
	MaxConcurrentStreams uint32
	// TLS, when set, makes the server serve TLS with it (see
	// internal/tlsfiles: reloaded certificates, client certificates
	// requested); handlers read the client's certificate, if any, from
	// credentials.TLSInfo in the peer. Nil serves plaintext.
	TLS *tls.Config
	// Metrics, when set, records every call's count, code and handling
	// time (go-grpc-middleware's prometheus provider): the outermost
	// interceptor, so it sees the code a recovered panic became.
	Metrics *grpcprom.ServerMetrics
	// StreamWorkers, when not 0, serves streams (unary calls too) on a pool
	// of that many goroutines (grpc.NumStreamWorkers; more streams at once
	// still get a goroutine each). A worker keeps the stack its calls grew,
	// so a server of short, deep calls (Assign: interceptors, CEL, a
	// signature) does not grow a fresh stack on every call. 0: a goroutine
	// per stream, grpc's default, right for servers of long streams.
	StreamWorkers uint32
	// StatsHandler, when set, is installed with grpc.StatsHandler: the
	// tracing package's otelgrpc server handler when traces are on. Nil
	// installs none.
	StatsHandler stats.Handler
}

// DefaultConfig returns settings that suit device fleets: small messages,
// server pings every 30s, clients may ping every 15s at most.
func DefaultConfig() Config {
	return Config{
		MaxRecvMsgSize:       1 << 20,
		MaxSendMsgSize:       4 << 20,
		KeepaliveTime:        30 * time.Second,
		KeepaliveTimeout:     10 * time.Second,
		KeepaliveMinTime:     15 * time.Second,
		MaxConcurrentStreams: 100,
	}
}

// Server is a gRPC server with its health service.
type Server struct {
	// GRPC is the server; register services on it before Serve.
	GRPC *grpc.Server
	// Health is the standard health service. The overall status ("") and
	// each service's status start NOT_SERVING.
	Health *health.Server
}

// New builds a server. extra options are appended (for example a stats
// handler).
func New(cfg Config, log *slog.Logger, extra ...grpc.ServerOption) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	calls := newCallLog(log)
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in RPC handler", "panic", fmt.Sprint(p))
		return status.Error(codes.Internal, "internal error")
	})
	unary := []grpc.UnaryServerInterceptor{recovery.UnaryServerInterceptor(recoverOpt), calls.unary}
	stream := []grpc.StreamServerInterceptor{recovery.StreamServerInterceptor(recoverOpt), calls.stream}
	if cfg.Metrics != nil {
		unary = append([]grpc.UnaryServerInterceptor{cfg.Metrics.UnaryServerInterceptor()}, unary...)
		stream = append([]grpc.StreamServerInterceptor{cfg.Metrics.StreamServerInterceptor()}, stream...)
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		codec.ServerOption(),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	if cfg.StatsHandler != nil {
		opts = append(opts, grpc.StatsHandler(cfg.StatsHandler))
	}
	if cfg.StreamWorkers > 0 {
		opts = append(opts, grpc.NumStreamWorkers(cfg.StreamWorkers))
	}
	opts = append(opts, extra...)
	s := grpc.NewServer(opts...)
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s, h)
	reflection.Register(s)
	return &Server{GRPC: s, Health: h}
}

// levelFor logs successful and expected-failure calls at debug level, so a
// busy server does not log every device, and bugs at error level.
// UNIMPLEMENTED is a caller at the wrong server or port (an executor's
// split listeners refuse each other's service with it) or of another
// version: info.
func levelFor(c codes.Code) logging.Level {
	switch c {
	case codes.OK, codes.Canceled, codes.InvalidArgument, codes.NotFound, codes.Unauthenticated,
		codes.PermissionDenied, codes.FailedPrecondition, codes.ResourceExhausted, codes.DeadlineExceeded:
		return logging.LevelDebug
	case codes.Unavailable, codes.Aborted, codes.Unimplemented:
		return logging.LevelInfo
	default:
		return logging.LevelError
	}
}

// SetServing marks the server and the named services SERVING or NOT_SERVING.
func (s *Server) SetServing(serving bool, services ...string) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, svc := range append([]string{""}, services...) {
		s.Health.SetServingStatus(svc, st)
	}
}

// Stop stops the server gracefully, waiting at most timeout for calls to
// finish, then cuts what remains (streams never end by themselves).
func (s *Server) Stop(timeout time.Duration) {
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.GRPC.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.GRPC.Stop()
		<-done
	}
}

// Listen opens a TCP listener on addr ("127.0.0.1:0" picks a free port).
func Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rpcserver: listen %s: %w", addr, err)
	}
	return l, nil
}
