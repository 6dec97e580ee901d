package node_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/embedetcd"
	"github.com/berthproject/berth/internal/metrics"
	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/ops"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// scrape answers GET path on the operations handler.
func scrape(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// TestMetricsOfARealReplicaAndExecutor runs a replica and an executor
// through their composition roots with one process's metrics and
// operations listener: after one Assign, one stream and one Send, /metrics
// names them, /readyz is ready, and when they stop it is not.
func TestMetricsOfARealReplicaAndExecutor(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	met := metrics.New()
	srv := testutil.StartEtcd(t)
	cli, err := srv.ClientWith(nil, met.EtcdDialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	reg := registry.New(cli, "/node-metrics")
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	if err := reg.PutGroup(ctx, registry.Group{ID: "g1", Labels: []string{"default"}, Capacity: 100, State: registry.GroupActive}); err != nil {
		t.Fatal(err)
	}
	k := newKeys(t)
	opsSrv, err := ops.New(ops.DefaultConfig(), met.Registry, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := opsSrv.Handler()

	elis := listen(t)
	ex, err := node.NewExecutor(executorConfig(elis.Addr().String(), false), node.ExecutorDeps{Registry: reg, Verifier: k.verifier, Metrics: met})
	if err != nil {
		t.Fatal(err)
	}
	opsSrv.AddCheck("executor e1", ex.Ready)
	erun := start(ex.Run, elis)
	cfg := node.DefaultReplicaConfig()
	cfg.ControlPlane.ReplicaID = "cp-metrics"
	cfg.OpenEnrollment = true
	cfg.Rebalance = nil
	r, err := node.NewReplica(cfg, node.ReplicaDeps{Registry: reg, Signer: k.signer, Metrics: met})
	if err != nil {
		t.Fatal(err)
	}
	opsSrv.AddCheck("controlplane", r.Ready)
	lis := listen(t)
	run := start(r.Run, lis)

	testutil.WaitFor(t, testutil.DefaultTimeout, "/readyz 200", func() bool { code, _ := scrape(t, h, "/readyz"); return code == 200 })
	testutil.WaitFor(t, testutil.DefaultTimeout, "the replica seeing the executor", func() bool { return r.ControlPlane().KnownExecutors() == 1 })
	cc := dial(t, lis.Addr().String())
	resp, err := controlplanev1.NewControlPlaneServiceClient(cc).Assign(ctx, &controlplanev1.AssignRequest{DeviceId: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	st := connect(ctx, t, dial(t, elis.Addr().String()), "dev-1", resp.GetDestination().GetToken())
	msg := messagingv1.NewMessagingServiceClient(dialKey(t, lis.Addr().String(), apiKey(t, reg, "test admin", []string{"admin"})))
	testutil.WaitFor(t, testutil.DefaultTimeout, "dev-1 online", func() bool {
		d, err := msg.GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: "dev-1"})
		return err == nil && d.GetOnline()
	})
	acked := make(chan error, 1)
	go func() { _, err := ackNext(st); acked <- err }()
	if sent, err := msg.Send(ctx, &messagingv1.SendRequest{DeviceId: "dev-1", Payload: []byte("hi"), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY}); err != nil || sent.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED {
		t.Fatalf("Send = %v, %v; want DELIVERED", sent, err)
	}
	if err := <-acked; err != nil {
		t.Fatal(err)
	}

	code, body := scrape(t, h, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`berth_assign_total{code="OK",label="default"} 1`,
		`berth_executor_streams{executor="e1",group="g1"} 1`,
		`berth_executor_connects_total{code="OK",executor="e1",group="g1"} 1`,
		`berth_executor_registered{executor="e1",group="g1"} 1`,
		`berth_messages_sent_total{mode="online_only"} 1`,
		`berth_messages_delivered_total{mode="online_only"} 1`,
		`berth_registry_cache_synced 1`,
		`berth_registry_degraded 0`,
		`berth_queue_messages 0`,
		`berth_assign_reservations 1`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Assign",grpc_service="berth.controlplane.v1.ControlPlaneService",grpc_type="unary"} 1`,
		`grpc_server_handling_seconds_count{grpc_method="Assign",grpc_service="berth.controlplane.v1.ControlPlaneService",grpc_type="unary"} 1`,
		`grpc_server_started_total{grpc_method="Connect",grpc_service="berth.executor.v1.ExecutorService",grpc_type="bidi_stream"} 1`,
		`grpc_client_handled_total{grpc_code="OK",grpc_method="Deliver",grpc_service="berth.executor.v1.ExecutorInternalService",grpc_type="unary"} 1`,
		`berth_etcd_request_duration_seconds_count{method="Range"}`,
		`berth_registry_cache_revision `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, "dev-1") {
		t.Error("/metrics names a device id")
	}

	if err := run.stop(); err != nil {
		t.Errorf("replica Run = %v", err)
	}
	if ok, detail := r.Ready(); ok || detail != "stopping" {
		t.Errorf("Ready after the stop = %v %q; want not ready, stopping", ok, detail)
	}
	if err := erun.stop(); err != nil {
		t.Errorf("executor Run = %v", err)
	}
	if code, body := scrape(t, h, "/readyz"); code != 503 || !strings.Contains(body, "executor e1: not ready: stopping") {
		t.Errorf("/readyz after the stop = %d %q; want 503, stopping", code, body)
	}
}

// TestDegradedWhenEtcdIsLost stops etcd under a serving replica: the gRPC
// health service stays SERVING (Assign goes on from the snapshot) while
// readiness and berth_registry_degraded say the replica is degraded.
func TestDegradedWhenEtcdIsLost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	srv, err := embedetcd.Start(ctx, embedetcd.Config{Dir: t.TempDir(), UnsafeNoFsync: true})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	reg := registry.New(cli, "/node-degraded")
	met := metrics.New()
	cfg := node.DefaultReplicaConfig()
	cfg.ControlPlane.ReplicaID = "cp-degraded"
	cfg.Rebalance = nil
	r, err := node.NewReplica(cfg, node.ReplicaDeps{Registry: reg, Signer: newKeys(t).signer, Metrics: met})
	if err != nil {
		t.Fatal(err)
	}
	opsSrv, err := ops.New(ops.DefaultConfig(), met.Registry, nil)
	if err != nil {
		t.Fatal(err)
	}
	opsSrv.AddCheck("controlplane", r.Ready)
	// A lost etcd shows after five silent progress intervals.
	r.Cache().SetProgressInterval(100 * time.Millisecond)
	h := opsSrv.Handler()
	if code, body := scrape(t, h, "/readyz"); code != 503 || !strings.Contains(body, "starting") {
		t.Errorf("/readyz before Run = %d %q; want 503, starting", code, body)
	}
	lis := listen(t)
	run := start(r.Run, lis)
	testutil.WaitFor(t, testutil.DefaultTimeout, "/readyz 200", func() bool { code, _ := scrape(t, h, "/readyz"); return code == 200 })

	srv.Close()
	testutil.WaitFor(t, testutil.DefaultTimeout, "/readyz degraded", func() bool {
		code, body := scrape(t, h, "/readyz")
		return code == 503 && strings.Contains(body, "controlplane: not ready: degraded: etcd unreachable")
	})
	if _, body := scrape(t, h, "/metrics"); !strings.Contains(body, "berth_registry_degraded 1") || !strings.Contains(body, "berth_registry_cache_synced 0") {
		t.Error("/metrics while degraded lacks berth_registry_degraded 1 and berth_registry_cache_synced 0")
	}
	hctx, hcancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer hcancel()
	hr, err := healthpb.NewHealthClient(dial(t, lis.Addr().String())).Check(hctx, &healthpb.HealthCheckRequest{Service: controlplanev1.ControlPlaneService_ServiceDesc.ServiceName})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health while degraded = %v, %v; want SERVING", hr, err)
	}
	if err := run.stop(); err != nil {
		t.Errorf("replica Run = %v", err)
	}
}
