package executor_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/registry"
)

// testInternalAddress is the internal address the split tests advertise.
const testInternalAddress = "10.1.0.1:7001"

func startSplit(t *testing.T) *harness {
	t.Helper()
	return start(t, func(c *executor.Config) { c.InternalAddress = testInternalAddress })
}

// TestSplitDevicePortRefusesInternal: with an internal listener, the
// device port refuses ExecutorInternalService, with a valid service token
// too, saying where it is served, without naming the internal address.
func TestSplitDevicePortRefusesInternal(t *testing.T) {
	h := startSplit(t)
	d, _ := h.connect(t, "d1") // the device port serves devices
	onDevicePort := executorv1.NewExecutorInternalServiceClient(h.conn)
	ctx := h.serviceCtx(t)

	_, err := onDevicePort.Deliver(ctx, &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "m1"}})
	st := wantStatus(t, err, codes.Unimplemented, "ExecutorInternalService is not served on this port")
	if want := "internal listener"; !strings.Contains(st.Message(), want) || strings.Contains(st.Message(), testInternalAddress) {
		t.Errorf("refusal %q: want it to mention the %s and not name %s", st.Message(), want, testInternalAddress)
	}
	sub, err := onDevicePort.Subscribe(ctx, &executorv1.SubscribeRequest{})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	_, err = sub.Recv()
	wantStatus(t, err, codes.Unimplemented, "ExecutorInternalService is not served on this port")
	if n := h.srv.Stats().Subscribers; n != 0 {
		t.Errorf("%d subscribers after the device port refused Subscribe; want 0", n)
	}

	// The refusal delivered nothing: the device's next frame is the
	// message the internal port delivers.
	res := h.deliverAsync(h.serviceCtx(t), &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "m2"}})
	if got := d.message(t).GetMessageId(); got != "m2" {
		t.Fatalf("device got message %q; want m2", got)
	}
	d.ack(t, "m2")
	if r := result(t, res); r.err != nil {
		t.Fatalf("Deliver on the internal port = %v; want OK", r.err)
	}
}

// TestSplitInternalPortRefusesDevices: the internal port refuses device
// streams, and still wants a control plane's token for its own service.
func TestSplitInternalPortRefusesDevices(t *testing.T) {
	h := startSplit(t)
	onInternalPort := executorv1.NewExecutorServiceClient(h.iconn)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := onInternalPort.Connect(ctx)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	// The Hello may or may not be written before the refusal arrives.
	_ = stream.Send(helloFrame("d1", h.token(t, "d1")))
	_, err = stream.Recv()
	wantStatus(t, err, codes.Unimplemented, "ExecutorService is not served on this port")
	if n := h.srv.Sessions(); n != 0 {
		t.Errorf("%d sessions after the internal port refused a device; want 0", n)
	}

	for _, tt := range []struct {
		name string
		md   []string
		code codes.Code
	}{
		{"no token", nil, codes.Unauthenticated},
		{"device token", []string{"authorization", "Bearer " + h.token(t, "d1")}, codes.PermissionDenied},
		{"service token", []string{"authorization", "Bearer " + h.serviceToken(t)}, codes.NotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctx
			if tt.md != nil {
				ctx = metadata.AppendToOutgoingContext(ctx, tt.md...)
			}
			_, err := h.internal.Deliver(ctx, &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "m1"}})
			wantStatus(t, err, tt.code, "")
		})
	}
}

// TestSplitHealthAndRecords: each port reports its own service's health
// (a drain takes the device port out, not the internal one, which keeps
// delivering to the devices that stay), and the executor's record and its
// devices' presence carry the internal address.
func TestSplitHealthAndRecords(t *testing.T) {
	h := startSplit(t)
	internalHealth := healthpb.NewHealthClient(h.iconn)
	wantHealth := func(c healthpb.HealthClient, svc string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		got, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || got.GetStatus() != want {
			t.Fatalf("health of %q = %v, %v; want %v", svc, got.GetStatus(), err, want)
		}
	}
	wantHealth(h.health, executor.ServiceName, healthpb.HealthCheckResponse_SERVING)
	wantHealth(internalHealth, executor.InternalServiceName, healthpb.HealthCheckResponse_SERVING)

	h.connect(t, "d1")
	h.reg.waitPresence(t, "d1 present", func(m map[string]registry.Presence) bool { return m["d1"].SessionID != "" })
	p, _ := h.reg.presenceOf("d1")
	if p.Address != h.cfg.Address || p.InternalAddress != testInternalAddress || p.ControlAddress() != testInternalAddress {
		t.Errorf("presence %+v: want address %s, internal address and control address %s", p, h.cfg.Address, testInternalAddress)
	}
	if r := h.reg.record(); r.Address != h.cfg.Address || r.InternalAddress != testInternalAddress {
		t.Errorf("record has address %q, internal address %q; want %q, %q", r.Address, r.InternalAddress, h.cfg.Address, testInternalAddress)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Drain marks, redirects and returns at once
	_ = h.srv.Drain(ctx)
	wantHealth(h.health, executor.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	wantHealth(internalHealth, executor.InternalServiceName, healthpb.HealthCheckResponse_SERVING)
}

// TestRunSplitNeedsInternalAddress: an internal listener and an internal
// address go together; a mismatch is refused at once, leaving the
// listeners open.
func TestRunSplitNeedsInternalAddress(t *testing.T) {
	_, _, verifier := testKeys(t)
	for _, tt := range []struct {
		name     string
		internal string
		split    bool
	}{
		{"internal listener without address", "", true},
		{"internal address without listener", testInternalAddress, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.InternalAddress = tt.internal
			srv, err := executor.New(cfg, verifier, newFakeRegistrar(), nil)
			if err != nil {
				t.Fatal(err)
			}
			lis, ilis := listenLoopback(t), listenLoopback(t)
			var internal net.Listener
			if tt.split {
				internal = ilis
			}
			if err := srv.RunSplit(context.Background(), lis, internal); !errors.Is(err, executor.ErrInvalidConfig) {
				t.Fatalf("RunSplit = %v; want ErrInvalidConfig", err)
			}
			for _, l := range []net.Listener{lis, ilis} {
				c, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					t.Fatalf("listener closed by a refused RunSplit: %v", err)
				}
				c.Close()
			}
		})
	}
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
