package executor_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

func moveDestination() *controlplanev1.Destination {
	return &controlplanev1.Destination{
		GroupId:   "group-2",
		Label:     "default",
		Token:     "tok-for-group-2",
		Endpoints: []*controlplanev1.Endpoint{{ExecutorId: "exec-9", Address: "10.0.0.9:7000"}},
	}
}

func TestMoveSendsRedirectWithDestination(t *testing.T) {
	h := start(t, nil)
	d, w := h.connect(t, "d1")
	dest := moveDestination()
	resp, err := h.internal.Move(h.serviceCtx(t), &executorv1.MoveRequest{
		DeviceId: "d1", Destination: dest, Message: "rebalance: balance", MaxDelay: durationpb.New(time.Second),
	})
	if err != nil {
		t.Fatalf("Move: %v", err)
	}
	if resp.GetSessionId() != w.GetSessionId() {
		t.Errorf("Move session = %q, want the device's %q", resp.GetSessionId(), w.GetSessionId())
	}
	f := d.next(t, "Redirect", func(f *executorv1.ConnectResponse) bool { return f.GetRedirect() != nil })
	r := f.GetRedirect()
	if r.GetReason() != executorv1.RedirectReason_REDIRECT_REASON_REBALANCE || r.GetMessage() != "rebalance: balance" ||
		r.GetMaxDelay().AsDuration() != time.Second || !proto.Equal(r.GetDestination(), dest) {
		t.Errorf("Redirect = %v; want REBALANCE to %v within 1s", r, dest)
	}
	// The executor keeps the stream: the device closes it once it is
	// welcomed elsewhere.
	if n := h.srv.Sessions(); n != 1 {
		t.Errorf("Sessions() = %d after Move, want 1", n)
	}
	d.leave(t)
	if err := d.closed(t); err != nil {
		t.Errorf("stream ended with %v, want a clean end", err)
	}
}

func TestMoveRefusals(t *testing.T) {
	h := start(t, nil)
	h.connect(t, "d1")
	noAddr := moveDestination()
	noAddr.Endpoints[0].Address = ""
	tests := []struct {
		name     string
		req      *executorv1.MoveRequest
		wantCode codes.Code
		wantMsg  string
	}{
		{"no device", &executorv1.MoveRequest{Destination: moveDestination()}, codes.InvalidArgument, "device_id is required"},
		{"no destination", &executorv1.MoveRequest{DeviceId: "d1"}, codes.InvalidArgument, "destination.group_id"},
		{"no endpoints", &executorv1.MoveRequest{DeviceId: "d1", Destination: &controlplanev1.Destination{GroupId: "g", Token: "t"}}, codes.InvalidArgument, "destination.endpoints"},
		{"no token", &executorv1.MoveRequest{DeviceId: "d1", Destination: &controlplanev1.Destination{GroupId: "g", Endpoints: moveDestination().Endpoints}}, codes.InvalidArgument, "destination.token"},
		{"endpoint without address", &executorv1.MoveRequest{DeviceId: "d1", Destination: noAddr}, codes.InvalidArgument, "endpoints[0].address"},
		{"negative delay", &executorv1.MoveRequest{DeviceId: "d1", Destination: moveDestination(), MaxDelay: durationpb.New(-time.Second)}, codes.InvalidArgument, "max_delay"},
		{"unknown device", &executorv1.MoveRequest{DeviceId: "d2", Destination: moveDestination()}, codes.NotFound, "device d2 is not connected to executor exec-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.internal.Move(h.serviceCtx(t), tt.req)
			wantStatus(t, err, tt.wantCode, tt.wantMsg)
		})
	}
	// Only control planes may move devices.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := h.internal.Move(ctx, &executorv1.MoveRequest{DeviceId: "d1", Destination: moveDestination()})
	wantStatus(t, err, codes.Unauthenticated, "service token missing")
}
