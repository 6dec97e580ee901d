package rpcserver

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

type fakeServerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeServerStream) Context() context.Context { return f.ctx }

func TestCallLog(t *testing.T) {
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}})
	info := &grpc.UnaryServerInfo{FullMethod: "/berth.test.v1.Svc/Do"}
	sinfo := &grpc.StreamServerInfo{FullMethod: "/berth.test.v1.Svc/Watch", IsServerStream: true}
	tests := []struct {
		name  string
		level slog.Level
		err   error
		want  []string // substrings of the log; nil: nothing logged
	}{
		{"ok at info: nothing", slog.LevelInfo, nil, nil},
		{"not found at info: nothing (debug level)", slog.LevelInfo, status.Error(codes.NotFound, "no"), nil},
		{"unavailable at info", slog.LevelInfo, status.Error(codes.Unavailable, "down"),
			[]string{"level=INFO", `msg="finished call"`, "grpc.service=berth.test.v1.Svc", "grpc.code=Unavailable", "grpc.error=", "peer.address=127.0.0.1:4242"}},
		{"internal at warn", slog.LevelWarn, status.Error(codes.Internal, "bug"), []string{"level=ERROR", "grpc.code=Internal", "grpc.method=Do"}},
		{"unavailable at warn: nothing", slog.LevelWarn, status.Error(codes.Unavailable, "down"), nil},
		{"ok at debug: the middleware logs it", slog.LevelDebug, nil, []string{"level=DEBUG", `msg="finished call"`, "grpc.code=OK", "grpc.method=Do"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, kind := range []string{"unary", "stream"} {
				var buf bytes.Buffer
				c := newCallLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tt.level})))
				var err error
				if kind == "unary" {
					_, err = c.unary(ctx, nil, info, func(context.Context, any) (any, error) { return "resp", tt.err })
				} else {
					err = c.stream(nil, fakeServerStream{ctx: ctx}, sinfo, func(any, grpc.ServerStream) error { return tt.err })
				}
				if err != tt.err {
					t.Errorf("%s: returned %v, want the handler's %v", kind, err, tt.err)
				}
				out := buf.String()
				if tt.want == nil {
					if out != "" {
						t.Errorf("%s: logged %q, want nothing", kind, out)
					}
					continue
				}
				for _, w := range tt.want {
					if kind == "stream" {
						w = strings.Replace(w, "grpc.method=Do", "grpc.method=Watch", 1)
					}
					if !strings.Contains(out, w) {
						t.Errorf("%s: log %q lacks %q", kind, out, w)
					}
				}
				if kind == "stream" && !strings.Contains(out, "grpc.method_type=server_stream") {
					t.Errorf("stream: log %q lacks the method type", out)
				}
			}
		})
	}
}
