package simulate_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berthproject/berth/access"
	"github.com/berthproject/berth/device"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/devcluster"
	"github.com/berthproject/berth/simulate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSummaryString(t *testing.T) {
	s := simulate.Summary{
		Devices:    3,
		ByState:    map[device.State]int{device.Connected: 2, device.Backoff: 1},
		ByGroup:    map[string]int{"g2": 1, "g1": 1},
		ByExecutor: map[string]int{"e1": 2},
		Connects:   5,
	}
	want := "devices=3 connected=2 connecting=0 assigning=0 backoff=1 idle=0 connects=5 messages=0 calls=0 received=0 published=0 groups=g1:1,g2:1 executors=e1:2"
	if got := s.String(); got != want {
		t.Errorf("String() =\n %s\nwant\n %s", got, want)
	}
}

// lineWaiter is an io.Writer that closes found when a written line contains
// want.
type lineWaiter struct {
	want  string
	once  sync.Once
	found chan struct{}
	mu    sync.Mutex
	all   strings.Builder
}

func (w *lineWaiter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.all.Write(p)
	w.mu.Unlock()
	if strings.Contains(string(p), w.want) {
		w.once.Do(func() { close(w.found) })
	}
	return len(p), nil
}

// TestRunConnectsFleet runs a small fleet against a dev cluster until every
// device is connected, then stops it.
func TestRunConnectsFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info := startDevCluster(t, ctx)

	sc := simulate.DefaultConfig()
	sc.ControlPlane = info.ControlPlane
	sc.Devices = 30
	sc.Every = 20 * time.Millisecond
	sc.Services = []string{"print+scan", "telemetry"}
	w := &lineWaiter{want: "connected=30 ", found: make(chan struct{})}
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	go func() { simDone <- simulate.Run(simCtx, sc, w, nil) }()
	select {
	case <-w.found:
	case err := <-simDone:
		t.Fatalf("simulate stopped early: %v", err)
	case <-ctx.Done():
		t.Fatalf("devices never all connected; output:\n%s", w.all.String())
	}
	stopSim()
	if err := <-simDone; err != nil {
		t.Errorf("simulate: %v", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !strings.Contains(w.all.String(), "simulate: final") {
		t.Errorf("no final summary in:\n%s", w.all.String())
	}
}

func TestRunRejectsEmptyFleet(t *testing.T) {
	cfg := simulate.DefaultConfig()
	cfg.Devices = 0
	if err := simulate.Run(context.Background(), cfg, nil, nil); err == nil {
		t.Error("Run with no devices succeeded")
	}
}

// TestStatusReports checks that connected devices publish status reports
// on topic "status" that a MessagingService subscriber receives.
func TestStatusReports(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info := startDevCluster(t, ctx)

	cc, err := grpc.NewClient(info.ControlPlane, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.APIKeyCredentials(info.AdminAPIKey)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	subCtx, stopSub := context.WithCancel(ctx)
	defer stopSub()
	sub, err := messagingv1.NewMessagingServiceClient(cc).Subscribe(subCtx, &messagingv1.SubscribeRequest{Topics: []string{simulate.StatusTopic}})
	if err != nil {
		t.Fatal(err)
	}

	sc := simulate.DefaultConfig()
	sc.ControlPlane = info.ControlPlane
	sc.Devices = 3
	sc.Every = 0
	sc.StatusEvery = 50 * time.Millisecond
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	w := &lineWaiter{want: "published=", found: make(chan struct{})}
	go func() { simDone <- simulate.Run(simCtx, sc, w, nil) }()

	resp, err := sub.Recv()
	if err != nil {
		t.Fatalf("subscription: %v", err)
	}
	var report struct{ Device, Group, Executor string }
	if err := json.Unmarshal(resp.GetPayload(), &report); err != nil {
		t.Fatalf("status payload %q: %v", resp.GetPayload(), err)
	}
	if resp.GetTopic() != "status" || resp.GetContentType() != "application/json" || report.Device != resp.GetDeviceId() ||
		!strings.HasPrefix(report.Device, "sim-") || report.Group == "" || report.Executor == "" {
		t.Errorf("status report = %+v (topic %q, %s, device %s), want one from a connected sim- device naming its group and executor",
			report, resp.GetTopic(), resp.GetContentType(), resp.GetDeviceId())
	}
	stopSim()
	if err := <-simDone; err != nil {
		t.Errorf("simulate: %v", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if strings.Contains(w.all.String(), " published=0 ") {
		t.Errorf("final summary counts no status report:\n%s", w.all.String())
	}
}

// startDevCluster runs a dev cluster on loopback until the test ends (its
// cleanup stops it and waits) and returns it once it is ready.
func startDevCluster(t *testing.T, ctx context.Context) devcluster.Info {
	t.Helper()
	cfg := devcluster.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	ready := make(chan devcluster.Info, 1)
	clusterCtx, stopCluster := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- devcluster.Run(clusterCtx, cfg, nil, func(i devcluster.Info) { ready <- i }) }()
	t.Cleanup(func() {
		stopCluster()
		if err := <-done; err != nil {
			t.Errorf("cluster: %v", err)
		}
	})
	select {
	case info := <-ready:
		return info
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("cluster stopped: %v", err)
		return devcluster.Info{}
	}
}
