package access_test

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/berthproject/berth/access"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recordingMessaging answers Subscribe with nothing and records the
// request it received.
type recordingMessaging struct {
	messagingv1.UnimplementedMessagingServiceServer
	got chan *messagingv1.SubscribeRequest
}

func (r *recordingMessaging) Subscribe(req *messagingv1.SubscribeRequest, _ grpc.ServerStreamingServer[messagingv1.SubscribeResponse]) error {
	r.got <- req
	return nil
}

// TestSubscribeNarrowed: a service key limited to tenants and topics
// subscribes to those only; asking for others is refused before the
// service sees the request; an unlimited key's request is untouched.
func TestSubscribeNarrowed(t *testing.T) {
	limited, limitedSecret, _ := access.NewAPIKey("limited", []string{"service"}, []string{"t1", "t2"}, []string{"status"}, "", time.Now())
	open, openSecret, _ := access.NewAPIKey("open", []string{"service"}, nil, nil, "", time.Now())
	g, err := access.New(access.Config{}, access.Deps{Keys: fakeKeys{limited.ID: limited, open.ID: open}, Assignments: fakeAssignments{}, Audit: &fakeAudit{}})
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(g.ServerOptions()...)
	rec := &recordingMessaging{got: make(chan *messagingv1.SubscribeRequest, 1)}
	messagingv1.RegisterMessagingServiceServer(srv, rec)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	tests := []struct {
		name                string
		key                 string
		req                 *messagingv1.SubscribeRequest
		want                codes.Code
		wantTenants, topics []string
	}{
		{"limited, no filter", limitedSecret, &messagingv1.SubscribeRequest{}, codes.OK, []string{"t1", "t2"}, []string{"status"}},
		{"limited, one of its tenants", limitedSecret, &messagingv1.SubscribeRequest{TenantIds: []string{"t2"}}, codes.OK, []string{"t2"}, []string{"status"}},
		{"limited, another tenant", limitedSecret, &messagingv1.SubscribeRequest{TenantIds: []string{"t3"}}, codes.PermissionDenied, nil, nil},
		{"limited, another topic", limitedSecret, &messagingv1.SubscribeRequest{Topics: []string{"secrets"}}, codes.PermissionDenied, nil, nil},
		{"open", openSecret, &messagingv1.SubscribeRequest{TenantIds: []string{"t9"}}, codes.OK, []string{"t9"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, err := grpc.NewClient("passthrough:///bufnet", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
				grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(access.APIKeyCredentials(tt.key)))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st, err := messagingv1.NewMessagingServiceClient(cc).Subscribe(ctx, tt.req)
			if err == nil {
				_, err = st.Recv()
			}
			if errors.Is(err, io.EOF) { // the service ended the stream
				err = nil
			}
			if got := status.Code(err); got != tt.want {
				t.Fatalf("Subscribe = %v; want %v", err, tt.want)
			}
			if tt.want != codes.OK {
				select {
				case req := <-rec.got:
					t.Errorf("the service saw %v; want nothing", req)
				default:
				}
				return
			}
			req := <-rec.got
			if !slices.Equal(req.GetTenantIds(), tt.wantTenants) || !slices.Equal(req.GetTopics(), tt.topics) {
				t.Errorf("service saw tenants %v topics %v; want %v %v", req.GetTenantIds(), req.GetTopics(), tt.wantTenants, tt.topics)
			}
		})
	}
}
