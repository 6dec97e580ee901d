package access_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/berthproject/berth/access"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
)

// callerMessaging answers Send with the name of the caller the guard put
// in the context ("" for none) as the message id.
type callerMessaging struct {
	messagingv1.UnimplementedMessagingServiceServer
}

func (callerMessaging) Send(ctx context.Context, _ *messagingv1.SendRequest) (*messagingv1.SendResponse, error) {
	name := ""
	if id := access.FromContext(ctx); id != nil {
		name = id.Name
	}
	return &messagingv1.SendResponse{MessageId: name}, nil
}

// overridingMessaging authenticates its own calls (go-grpc-middleware's
// ServiceAuthFuncOverride): every caller is "override".
type overridingMessaging struct{ callerMessaging }

func (overridingMessaging) AuthFuncOverride(ctx context.Context, _ string) (context.Context, error) {
	return access.NewContext(ctx, &access.Identity{Name: "override", Roles: []access.Role{access.Service}}), nil
}

// TestServerOptionsSelect: calls of unprotected services (the health
// service) pass without credentials and without an identity; calls of
// protected ones are authenticated and authorized, the caller's identity
// in the handler's context, unless the service overrides authentication.
func TestServerOptionsSelect(t *testing.T) {
	svc, svcSecret, _ := access.NewAPIKey("svc", []string{"service"}, nil, nil, "", time.Now())
	viewer, viewerSecret, _ := access.NewAPIKey("viewer", []string{"viewer"}, nil, nil, "", time.Now())
	g, err := access.New(access.Config{}, access.Deps{Keys: fakeKeys{svc.ID: svc, viewer.ID: viewer}, Assignments: fakeAssignments{}, Audit: &fakeAudit{}})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(m messagingv1.MessagingServiceServer) *bufconn.Listener {
		lis := bufconn.Listen(1 << 20)
		srv := grpc.NewServer(g.ServerOptions()...)
		healthpb.RegisterHealthServer(srv, health.NewServer())
		messagingv1.RegisterMessagingServiceServer(srv, m)
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		return lis
	}
	plain, override := serve(callerMessaging{}), serve(overridingMessaging{})
	dial := func(lis *bufconn.Listener, key string) *grpc.ClientConn {
		opts := []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials())}
		if key != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(access.APIKeyCredentials(key)))
		}
		cc, err := grpc.NewClient("passthrough:///bufnet", opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	if _, err := healthpb.NewHealthClient(dial(plain, "")).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health Check without credentials = %v; want it through", err)
	}
	tests := []struct {
		name   string
		lis    *bufconn.Listener
		key    string
		want   codes.Code
		caller string
	}{
		{"no credentials", plain, "", codes.Unauthenticated, ""},
		{"wrong role", plain, viewerSecret, codes.PermissionDenied, ""},
		{"service key", plain, svcSecret, codes.OK, "apikey:" + svc.ID + " (svc)"},
		{"override", override, "", codes.OK, "override"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := messagingv1.NewMessagingServiceClient(dial(tt.lis, tt.key)).Send(ctx, &messagingv1.SendRequest{DeviceId: "d1"})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("Send = %v; want %v", err, tt.want)
			}
			if got := resp.GetMessageId(); got != tt.caller {
				t.Errorf("handler saw caller %q; want %q", got, tt.caller)
			}
		})
	}
}
