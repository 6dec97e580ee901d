package rpcserver_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/internal/rpcserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServerHealthAndReflection(t *testing.T) {
	s := rpcserver.New(rpcserver.DefaultConfig(), nil)
	lis, err := rpcserver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.GRPC.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := healthpb.NewHealthClient(cc)
	check := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		r, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("Check(%q): %v", svc, err)
		}
		return r.GetStatus()
	}
	if got := check(""); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health before SetServing = %v, want NOT_SERVING", got)
	}
	s.SetServing(true, "x.v1.Svc")
	if check("") != healthpb.HealthCheckResponse_SERVING || check("x.v1.Svc") != healthpb.HealthCheckResponse_SERVING {
		t.Error("SetServing(true) did not mark the server and the service SERVING")
	}
	if _, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"}); status.Code(err) != codes.NotFound {
		t.Errorf("Check(unknown) = %v, want NOT_FOUND", err)
	}
	rs, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, svc := range resp.GetListServicesResponse().GetService() {
		found = found || svc.GetName() == "grpc.health.v1.Health"
	}
	if !found {
		t.Errorf("reflection lists %v, want grpc.health.v1.Health among them", resp.GetListServicesResponse().GetService())
	}
	_ = rs.CloseSend()
	s.Stop(time.Second)
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
}
