package executor_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// waitHealth waits until the health of service is want.
func (h *harness) waitHealth(t *testing.T, service string, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	w, err := h.health.Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health Watch(%q): %v", service, err)
	}
	for {
		r, err := w.Recv()
		if err != nil {
			t.Fatalf("health of %q never became %v: %v", service, want, err)
		}
		if r.GetStatus() == want {
			return
		}
	}
}

// checkHealth returns the health of service now.
func (h *harness) checkHealth(t *testing.T, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	r, err := h.health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health Check(%q): %v", service, err)
	}
	return r.GetStatus()
}

// wantRedirect waits for d's Redirect and checks it.
func wantRedirect(t *testing.T, d *device, spread time.Duration) {
	t.Helper()
	f := d.next(t, "Redirect", func(f *executorv1.ConnectResponse) bool { return f.GetRedirect() != nil })
	r := f.GetRedirect()
	if r.GetReason() != executorv1.RedirectReason_REDIRECT_REASON_DRAINING || r.GetMaxDelay().AsDuration() != spread {
		t.Errorf("device %s: Redirect = %v; want DRAINING with max_delay %v", d.id, r, spread)
	}
}

func TestHealthServingWhileRunning(t *testing.T) {
	h := start(t, nil)
	h.waitHealth(t, "", healthpb.HealthCheckResponse_SERVING)
	h.waitHealth(t, executor.ServiceName, healthpb.HealthCheckResponse_SERVING)
	if executor.ServiceName != executorv1.ExecutorService_ServiceDesc.ServiceName {
		t.Errorf("ServiceName = %q; want %q", executor.ServiceName, executorv1.ExecutorService_ServiceDesc.ServiceName)
	}
}

func TestDrainRedirectsEveryStream(t *testing.T) {
	h := start(t, nil)
	h.waitHealth(t, executor.ServiceName, healthpb.HealthCheckResponse_SERVING)
	var devs []*device
	for _, id := range []string{"d1", "d2", "d3"} {
		d, _ := h.connect(t, id)
		devs = append(devs, d)
	}

	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		drained <- h.srv.Drain(ctx)
	}()
	for _, d := range devs {
		wantRedirect(t, d, h.cfg.RedirectSpread)
	}
	h.reg.waitRecord(t, "Draining", func(e registry.Executor) bool { return e.Draining })
	if got := h.checkHealth(t, executor.ServiceName); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health while draining = %v; want NOT_SERVING", got)
	}
	if st := h.srv.Stats(); !st.Draining || st.Sessions != 3 {
		t.Errorf("Stats() = %+v; want draining with 3 sessions still served", st)
	}
	// Draining keeps serving the devices that stay...
	if err := h.srv.Deliver(context.Background(), "d1", &executorv1.Message{MessageId: "m1"}); err != nil {
		t.Errorf("Deliver while draining: %v", err)
	}
	// ...and refuses new ones.
	late := h.hello(t, "d4", h.token(t, "d4"))
	wantStatus(t, late.closed(t), codes.Unavailable, "executor draining")

	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v with devices still connected", err)
	default:
	}
	for _, d := range devs {
		d.leave(t)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Errorf("Drain = %v once every device left; want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Drain did not return after every device left")
	}
}

func TestDrainGivesUpWithContext(t *testing.T) {
	h := start(t, nil)
	d, _ := h.connect(t, "d1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := h.srv.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain with a device that stays = %v; want DeadlineExceeded", err)
	}
	wantRedirect(t, d, h.cfg.RedirectSpread)
	// A second Drain sends no second Redirect.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	_ = h.srv.Drain(ctx2)
	if err := h.srv.Deliver(context.Background(), "d1", &executorv1.Message{MessageId: "marker"}); err != nil {
		t.Fatal(err)
	}
	f := d.next(t, "the marker", func(f *executorv1.ConnectResponse) bool { return f.GetRedirect() != nil || f.GetMessage() != nil })
	if f.GetRedirect() != nil {
		t.Error("second Drain sent a second Redirect")
	}
}

func TestRunShutdownRedirectsThenReturns(t *testing.T) {
	h := start(t, nil)
	h.waitHealth(t, executor.ServiceName, healthpb.HealthCheckResponse_SERVING)
	d1, _ := h.connect(t, "d1")
	d2, _ := h.connect(t, "d2")
	h.reg.waitRecord(t, "2 connections", func(e registry.Executor) bool { return e.Connections == 2 })
	if !h.srv.Stats().Registered {
		t.Error("Stats().Registered = false while the Registrar runs")
	}

	h.stop()
	for _, d := range []*device{d1, d2} {
		wantRedirect(t, d, h.cfg.RedirectSpread)
	}
	// Health went NOT_SERVING before the redirects, and the record is
	// marked Draining while the registration still runs.
	if got := h.checkHealth(t, ""); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health during shutdown = %v; want NOT_SERVING", got)
	}
	h.reg.waitRecord(t, "Draining", func(e registry.Executor) bool { return e.Draining })
	select {
	case err := <-h.done:
		t.Fatalf("Run returned %v while devices were still connected", err)
	default:
	}

	d1.leave(t)
	d2.leave(t)
	if err := h.wait(t); err != nil {
		t.Fatalf("Run = %v after a clean shutdown; want nil", err)
	}
	// The registration stopped last, after the devices had gone.
	if got, want := h.reg.eventLog(), []string{"draining", "run-stopped"}; !slices.Equal(got, want) {
		t.Errorf("registrar events = %v; want %v", got, want)
	}
	if got := h.reg.record().Connections; got != 0 {
		t.Errorf("connections when the registration stopped = %d; want 0", got)
	}
}

func TestRunShutdownClosesStaysAfterDrainTimeout(t *testing.T) {
	h := start(t, func(c *executor.Config) { c.DrainTimeout = 50 * time.Millisecond })
	d, _ := h.connect(t, "d1")
	h.stop()
	wantRedirect(t, d, h.cfg.RedirectSpread)
	f := d.next(t, "Goodbye", func(f *executorv1.ConnectResponse) bool { return f.GetGoodbye() != nil })
	if got := f.GetGoodbye().GetReason(); got != executorv1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN {
		t.Errorf("Goodbye reason = %v; want SHUTDOWN", got)
	}
	wantStatus(t, d.closed(t), codes.Unavailable, "shutting down")
	if err := h.wait(t); err != nil {
		t.Fatalf("Run = %v; want nil", err)
	}
	if got := h.reg.eventLog(); !slices.Equal(got, []string{"draining", "run-stopped"}) {
		t.Errorf("registrar events = %v", got)
	}
}

// failingRegistrar fails as soon as it runs.
type failingRegistrar struct{ err error }

var _ executor.Registrar = failingRegistrar{}

func (f failingRegistrar) Run(context.Context) error             { return f.err }
func (f failingRegistrar) Update(func(e *registry.Executor))     {}
func (f failingRegistrar) Registered() bool                      { return false }
func (f failingRegistrar) SetPresence(registry.Presence)         {}
func (f failingRegistrar) ClearPresence(string, string)          {}
func (f failingRegistrar) OnReplaced(func(registry.Replacement)) {}

func TestRunStopsWhenRegistrarFails(t *testing.T) {
	boom := errors.New("etcd gone for good")
	v, err := token.NewVerifier(nil, make(ed25519.PublicKey, ed25519.PublicKeySize))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := executor.New(testConfig(), v, failingRegistrar{boom}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background(), bufconn.Listen(1<<10)) }()
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Errorf("Run = %v; want the registrar's error", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run kept going after its Registrar failed")
	}
	if err := srv.Run(context.Background(), bufconn.Listen(1<<10)); err == nil {
		t.Error("second Run = nil; want an error")
	}
}
