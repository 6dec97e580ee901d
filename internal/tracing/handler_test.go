package tracing_test

import (
	"context"
	"net"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/internal/tracing"
)

// TestServerHandlerDeviceCallsStartNewTraces: a traced call to a service's
// method continues the caller's trace; a call to a device-facing service
// (ControlPlaneService, ExecutorService) starts a new trace that only
// links to the caller's, so that a device cannot join or steer a service's
// trace.
func TestServerHandlerDeviceCallsStartNewTraces(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := tracing.New(tp)

	lis := bufconn.Listen(1 << 16)
	srv := grpc.NewServer(grpc.StatsHandler(tr.ServerHandler()), grpc.UnknownServiceHandler(func(_ any, st grpc.ServerStream) error {
		return st.SendMsg(&emptypb.Empty{})
	}))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	defer func() { srv.Stop(); <-done }()
	cc, err := grpc.NewClient("passthrough:///bufnet", append(tr.DialOptions(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	for _, tc := range []struct {
		method string
		public bool
	}{
		{"/berth.messaging.v1.MessagingService/Send", false},
		{"/berth.executor.v1.ExecutorInternalService/Deliver", false},
		{"/berth.controlplane.v1.ControlPlaneService/Assign", true},
		{"/berth.executor.v1.ExecutorService/Connect", true},
	} {
		if err := cc.Invoke(ctx, tc.method, &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
			t.Fatalf("%s: %v", tc.method, err)
		}
		name := tc.method[1:]
		var client, server sdktrace.ReadOnlySpan
		testutil.WaitFor(t, testutil.DefaultTimeout, name+" spans ended", func() bool {
			client, server = nil, nil
			for _, s := range rec.Ended() {
				switch {
				case s.Name() == name && s.SpanKind() == trace.SpanKindClient:
					client = s
				case s.Name() == name && s.SpanKind() == trace.SpanKindServer:
					server = s
				}
			}
			return client != nil && server != nil
		})
		continued := server.SpanContext().TraceID() == client.SpanContext().TraceID() && server.Parent().SpanID() == client.SpanContext().SpanID()
		if continued == tc.public {
			t.Errorf("%s: server span continues the caller's trace = %v; want %v", name, continued, !tc.public)
		}
		if tc.public && (len(server.Links()) != 1 || server.Links()[0].SpanContext.SpanID() != client.SpanContext().SpanID()) {
			t.Errorf("%s: server span links %v; want one, to the caller's span", name, server.Links())
		}
	}
}
