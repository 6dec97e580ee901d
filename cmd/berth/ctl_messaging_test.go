package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
)

// fakeMessaging answers MessagingService from canned data and records the
// requests.
type fakeMessaging struct {
	messagingv1.UnimplementedMessagingServiceServer
	mu   sync.Mutex
	reqs []proto.Message
	dead time.Duration // the deadline left at the last call
}

func (f *fakeMessaging) record(ctx context.Context, m proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, m)
	if dl, ok := ctx.Deadline(); ok {
		f.dead = time.Until(dl)
	}
}

func (f *fakeMessaging) last() proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reqs[len(f.reqs)-1]
}

func (f *fakeMessaging) Send(ctx context.Context, r *messagingv1.SendRequest) (*messagingv1.SendResponse, error) {
	f.record(ctx, r)
	switch {
	case r.GetDeviceId() == "offline" && r.GetMode() != messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE:
		return nil, status.Error(codes.Unavailable, "device offline is not connected")
	case r.GetMode() == messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE:
		return &messagingv1.SendResponse{MessageId: "m-q", Status: messagingv1.SendStatus_SEND_STATUS_QUEUED, Detail: "device is not connected"}, nil
	}
	return &messagingv1.SendResponse{MessageId: "m-1", Status: messagingv1.SendStatus_SEND_STATUS_DELIVERED}, nil
}

func (f *fakeMessaging) Call(ctx context.Context, r *messagingv1.CallRequest) (*messagingv1.CallResponse, error) {
	f.record(ctx, r)
	if string(r.GetPayload()) == "fail" {
		return nil, status.Error(codes.Aborted, "device d1: paper jam")
	}
	return &messagingv1.CallResponse{MessageId: "m-2", Payload: append([]byte("re: "), r.GetPayload()...), ContentType: "text/plain"}, nil
}

func (f *fakeMessaging) GetDevice(ctx context.Context, r *messagingv1.GetDeviceRequest) (*messagingv1.GetDeviceResponse, error) {
	f.record(ctx, r)
	if r.GetDeviceId() == "nobody" {
		return nil, status.Error(codes.NotFound, "device nobody is unknown")
	}
	return &messagingv1.GetDeviceResponse{DeviceId: r.GetDeviceId(), Online: true, GroupId: "g1", ExecutorId: "e1",
		ConnectedSince: timestamppb.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)), QueuedMessages: 3, AssignedGroupId: "g1", AssignedLabel: "default"}, nil
}

func (f *fakeMessaging) Subscribe(r *messagingv1.SubscribeRequest, s grpc.ServerStreamingServer[messagingv1.SubscribeResponse]) error {
	f.record(s.Context(), r)
	at := timestamppb.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	for i, p := range []string{"one", "two", "three"} {
		var dropped int64
		if i == 1 {
			dropped = 7
		}
		if err := s.Send(&messagingv1.SubscribeResponse{DeviceId: "d1", TenantId: "acme", Topic: "status", Payload: []byte(p), ReceivedAt: at, Dropped: dropped}); err != nil {
			return err
		}
	}
	<-s.Context().Done()
	return nil
}

func startFakeMessaging(t *testing.T) (*fakeMessaging, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeMessaging{}
	gs := grpc.NewServer()
	messagingv1.RegisterMessagingServiceServer(gs, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return f, lis.Addr().String()
}

func TestCtlMessaging(t *testing.T) {
	f, addr := startFakeMessaging(t)
	ctl := func(args ...string) string {
		t.Helper()
		out, errOut, err := berth(t, append(append([]string{"ctl"}, args...), "--controlplane", addr)...)
		if err != nil {
			t.Fatalf("berth ctl %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return out
	}

	out := ctl("send", "d1", "--data", "hello", "--idempotency-key", "k1")
	if !strings.Contains(out, "message m-1 delivered to d1") {
		t.Errorf("send:\n%s", out)
	}
	sr := f.last().(*messagingv1.SendRequest)
	if string(sr.GetPayload()) != "hello" || sr.GetContentType() != "text/plain" || sr.GetIdempotencyKey() != "k1" ||
		sr.GetMode() != messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY || sr.GetTtl() != nil {
		t.Errorf("send request = %v", sr)
	}

	file := filepath.Join(t.TempDir(), "job.json")
	if err := os.WriteFile(file, []byte(`{"job":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out = ctl("send", "d1", "--data-file", file, "--content-type", "application/json", "--queue", "--ttl", "2h")
	if !strings.Contains(out, "message m-q queued for d1") || !strings.Contains(out, "device is not connected") {
		t.Errorf("send --queue:\n%s", out)
	}
	sr = f.last().(*messagingv1.SendRequest)
	if string(sr.GetPayload()) != `{"job":1}` || sr.GetContentType() != "application/json" ||
		sr.GetMode() != messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE || sr.GetTtl().AsDuration() != 2*time.Hour || sr.GetAllowUnassigned() {
		t.Errorf("send --queue request = %v", sr)
	}
	ctl("send", "d1", "--data", "x", "--queue", "--allow-unassigned")
	if sr = f.last().(*messagingv1.SendRequest); !sr.GetAllowUnassigned() || sr.GetMode() != messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE {
		t.Errorf("send --queue --allow-unassigned request = %v", sr)
	}
	if _, _, err := berth(t, "ctl", "send", "d1", "--data", "x", "--allow-unassigned", "--controlplane", addr); err == nil || !strings.Contains(err.Error(), "--allow-unassigned needs --queue") {
		t.Errorf("send --allow-unassigned without --queue = %v; want refused", err)
	}

	var resp map[string]any
	if err := json.Unmarshal([]byte(ctl("send", "d1", "--data", "x", "-o", "json")), &resp); err != nil || resp["messageId"] != "m-1" || resp["status"] != "SEND_STATUS_DELIVERED" {
		t.Errorf("send -o json = %v, %v", resp, err)
	}

	_, _, err := berth(t, "ctl", "send", "offline", "--data", "x", "--controlplane", addr)
	if err == nil || !strings.Contains(err.Error(), "Unavailable: device offline is not connected") {
		t.Errorf("send to an offline device = %v; want the status", err)
	}
	_, _, err = berth(t, "ctl", "send", "d1", "--data", "x", "--data-file", file, "--controlplane", addr)
	if err == nil || !strings.Contains(err.Error(), "data") {
		t.Errorf("send with --data and --data-file = %v; want a usage error", err)
	}

	if out := ctl("call", "d1", "--data", "ping", "--timeout", "3s"); strings.TrimSpace(out) != "re: ping" {
		t.Errorf("call:\n%s", out)
	}
	f.mu.Lock()
	dead := f.dead
	f.mu.Unlock()
	if dead <= 0 || dead > 3*time.Second {
		t.Errorf("call deadline left = %v; want within --timeout 3s", dead)
	}
	_, _, err = berth(t, "ctl", "call", "d1", "--data", "fail", "--controlplane", addr)
	if err == nil || !strings.Contains(err.Error(), "Aborted: device d1: paper jam") {
		t.Errorf("call answered with an error = %v", err)
	}

	out = ctl("device", "d1")
	for _, want := range []string{"executor e1 of group g1 since 2030-01-02T03:04:05Z", "QUEUED", "3", "group g1, label default"} {
		if !strings.Contains(out, want) {
			t.Errorf("device output lacks %q:\n%s", want, out)
		}
	}
	if err := json.Unmarshal([]byte(ctl("device", "d1", "-o", "json")), &resp); err != nil || resp["queuedMessages"] != "3" {
		t.Errorf("device -o json = %v, %v", resp, err)
	}
	_, _, err = berth(t, "ctl", "device", "nobody", "--controlplane", addr)
	if err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("device nobody = %v", err)
	}

	out, errOut, err := berth(t, "ctl", "subscribe", "--device", "d1", "--device", "d2", "--tenant", "acme", "--topic", "status", "--count", "3", "--controlplane", addr)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "d1 tenant=acme status: one") || !strings.Contains(lines[2], "three") {
		t.Errorf("subscribe output:\n%s", out)
	}
	if !strings.Contains(errOut, "7 publishes dropped") {
		t.Errorf("subscribe stderr lacks the dropped count:\n%s", errOut)
	}
	sub := f.last().(*messagingv1.SubscribeRequest)
	if strings.Join(sub.GetDeviceIds(), ",") != "d1,d2" || strings.Join(sub.GetTenantIds(), ",") != "acme" || strings.Join(sub.GetTopics(), ",") != "status" {
		t.Errorf("subscribe request = %v", sub)
	}
	out, _, err = berth(t, "ctl", "subscribe", "--count", "1", "-o", "json", "--controlplane", addr)
	if err != nil || !strings.Contains(out, `"deviceId":"d1"`) {
		t.Errorf("subscribe -o json = %q, %v", out, err)
	}
}
