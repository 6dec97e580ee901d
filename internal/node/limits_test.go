package node_test

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/peer"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/node"
)

func TestCallerIdentity(t *testing.T) {
	from := func(addr string) context.Context {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return peer.NewContext(context.Background(), &peer.Peer{Addr: a})
	}
	tests := []struct {
		name string
		ctx  context.Context
		req  any
		want string
	}{
		// Assign is limited by the control plane after authentication;
		// the interceptors never ask for it (see the replica's test).
		{name: "assign: never the claimed device id", ctx: from("10.0.0.1:5000"), req: &controlplanev1.AssignRequest{DeviceId: "dev-1"}, want: "peer:10.0.0.1"},
		{name: "send: the peer's host", ctx: from("10.0.0.2:5001"), req: &messagingv1.SendRequest{DeviceId: "dev-1"}, want: "peer:10.0.0.2"},
		{name: "another port of the same host", ctx: from("10.0.0.2:6001"), req: nil, want: "peer:10.0.0.2"},
		{name: "ipv6", ctx: from("[::1]:7000"), want: "peer:::1"},
		{name: "no peer", ctx: context.Background(), want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := node.CallerIdentity(tt.ctx, tt.req); got != tt.want {
				t.Errorf("CallerIdentity = %q; want %q", got, tt.want)
			}
		})
	}
}
