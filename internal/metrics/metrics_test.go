package metrics_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/executor"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/metrics"
)

// call runs the outcome interceptor over a handler answering resp, err.
func call(t *testing.T, m *metrics.Metrics, method string, req, resp any, err error) {
	t.Helper()
	_, got := m.UnaryServerInterceptor()(context.Background(), req, &grpc.UnaryServerInfo{FullMethod: method},
		func(context.Context, any) (any, error) { return resp, err })
	if !errors.Is(got, err) {
		t.Fatalf("interceptor changed the error: %v; want %v", got, err)
	}
}

func TestOutcomes(t *testing.T) {
	m := metrics.New()
	assign := controlplanev1.ControlPlaneService_Assign_FullMethodName
	call(t, m, assign, &controlplanev1.AssignRequest{DeviceId: "d1"}, &controlplanev1.AssignResponse{Destination: &controlplanev1.Destination{Label: "std"}}, nil)
	call(t, m, assign, &controlplanev1.AssignRequest{DeviceId: "d2"}, &controlplanev1.AssignResponse{Destination: &controlplanev1.Destination{Label: "std"}}, nil)
	call(t, m, assign, &controlplanev1.AssignRequest{DeviceId: "d3"}, nil, status.Error(codes.ResourceExhausted, "full"))
	send := messagingv1.MessagingService_Send_FullMethodName
	call(t, m, send, &messagingv1.SendRequest{Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE}, &messagingv1.SendResponse{Status: messagingv1.SendStatus_SEND_STATUS_QUEUED}, nil)
	call(t, m, send, &messagingv1.SendRequest{Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY}, &messagingv1.SendResponse{Status: messagingv1.SendStatus_SEND_STATUS_DELIVERED}, nil)
	call(t, m, send, &messagingv1.SendRequest{Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY}, nil, status.Error(codes.Unavailable, "not connected"))
	call(t, m, "/other.v1.Service/Method", nil, nil, nil)
	m.MoveObserved("drain", true)
	m.MoveObserved("balance", false)

	want := `
# HELP berth_assign_total Assign calls answered, by the label placed under ("none" when refused) and gRPC code.
# TYPE berth_assign_total counter
berth_assign_total{code="OK",label="std"} 2
berth_assign_total{code="ResourceExhausted",label="none"} 1
# HELP berth_messages_delivered_total Send calls answered DELIVERED (the device acked), by delivery mode.
# TYPE berth_messages_delivered_total counter
berth_messages_delivered_total{mode="online_only"} 1
# HELP berth_messages_failed_total Send calls that failed, by delivery mode and gRPC code.
# TYPE berth_messages_failed_total counter
berth_messages_failed_total{code="Unavailable",mode="online_only"} 1
# HELP berth_messages_sent_total Send calls accepted (delivered or queued), by delivery mode.
# TYPE berth_messages_sent_total counter
berth_messages_sent_total{mode="online_only"} 1
berth_messages_sent_total{mode="queue"} 1
# HELP berth_rebalance_move_failures_total Moves the rebalancer stored but the executor did not make, by reason.
# TYPE berth_rebalance_move_failures_total counter
berth_rebalance_move_failures_total{reason="balance"} 1
# HELP berth_rebalance_moves_total Devices the rebalancer asked to move (redirected), by reason (policy, drain, balance).
# TYPE berth_rebalance_moves_total counter
berth_rebalance_moves_total{reason="drain"} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want),
		"berth_assign_total", "berth_messages_sent_total", "berth_messages_delivered_total", "berth_messages_failed_total",
		"berth_rebalance_moves_total", "berth_rebalance_move_failures_total"); err != nil {
		t.Error(err)
	}
}

// fakeCache is a CacheState the test sets.
type fakeCache struct {
	ready, loaded atomic.Bool
	rev           atomic.Int64
}

func (c *fakeCache) Ready() bool     { return c.ready.Load() }
func (c *fakeCache) Loaded() bool    { return c.loaded.Load() }
func (c *fakeCache) Revision() int64 { return c.rev.Load() }

var _ metrics.CacheState = (*fakeCache)(nil)

func TestReplicaCollector(t *testing.T) {
	m := metrics.New()
	cache := &fakeCache{}
	queueErr := errors.New("etcd down")
	var failQueue atomic.Bool
	m.AddReplica(metrics.Replica{
		Cache:        cache,
		Reservations: func() int { return 4 },
		Refusals:     func() map[string]uint64 { return map[string]uint64{"unauthenticated": 2} },
		Leading:      func() bool { return true },
		QueueUsage: func(context.Context) (int64, int64, error) {
			if failQueue.Load() {
				return 0, 0, queueErr
			}
			return 12, 3400, nil
		},
	})
	m.SawRevision(50)
	m.SawRevision(40) // older: ignored
	cache.rev.Store(45)
	steps := []struct {
		name                string
		ready, loaded       bool
		wantSynced, wantDeg float64
	}{
		{"loading", false, false, 0, 0},
		{"in sync", true, true, 1, 0},
		{"degraded", false, true, 0, 1},
		{"in sync again", true, true, 1, 0},
	}
	for _, st := range steps {
		cache.ready.Store(st.ready)
		cache.loaded.Store(st.loaded)
		for name, want := range map[string]float64{"berth_registry_cache_synced": st.wantSynced, "berth_registry_degraded": st.wantDeg} {
			if got := gauge(t, m, name); got != want {
				t.Errorf("%s: %s = %v; want %v", st.name, name, got, want)
			}
		}
	}
	for name, want := range map[string]float64{
		"berth_registry_cache_revision": 45, "berth_registry_cache_revision_lag": 5, "berth_assign_reservations": 4,
		"berth_rebalance_leading": 1, "berth_queue_messages": 12, "berth_queue_bytes": 3400,
	} {
		if got := gauge(t, m, name); got != want {
			t.Errorf("%s = %v; want %v", name, got, want)
		}
	}
	failQueue.Store(true)
	if n, err := testutil.GatherAndCount(m.Registry, "berth_queue_messages"); err != nil || n != 0 {
		t.Errorf("berth_queue_messages series with the usage unreadable = %d, %v; want none (unknown, not 0)", n, err)
	}
}

// gauge gathers the one series of name.
func gauge(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no single series of %s", name)
	return 0
}

func TestExecutorCollector(t *testing.T) {
	m := metrics.New()
	var st atomic.Pointer[executor.Stats]
	st.Store(&executor.Stats{Sessions: 3, Accepted: 10, Refused: map[codes.Code]uint64{codes.Unauthenticated: 2},
		Replaced: 2, Timeouts: 1, AuthRefused: map[string]uint64{"assignment token invalid": 2}, Registered: true, QueueDelivered: 5})
	m.AddExecutor(metrics.Executor{ID: "e1", Group: "g1", Stats: func() executor.Stats { return *st.Load() }})
	m.AddExecutor(metrics.Executor{ID: "e2", Group: "g2", Stats: func() executor.Stats { return executor.Stats{Sessions: 1, Accepted: 1} }})
	want := `
# HELP berth_executor_disconnects_total Admitted device streams that ended, by reason: replaced, timeout, revoked, stuck, or other (the device left, a drain, a move).
# TYPE berth_executor_disconnects_total counter
berth_executor_disconnects_total{executor="e1",group="g1",reason="other"} 4
berth_executor_disconnects_total{executor="e1",group="g1",reason="replaced"} 2
berth_executor_disconnects_total{executor="e1",group="g1",reason="revoked"} 0
berth_executor_disconnects_total{executor="e1",group="g1",reason="stuck"} 0
berth_executor_disconnects_total{executor="e1",group="g1",reason="timeout"} 1
berth_executor_disconnects_total{executor="e2",group="g2",reason="other"} 0
berth_executor_disconnects_total{executor="e2",group="g2",reason="replaced"} 0
berth_executor_disconnects_total{executor="e2",group="g2",reason="revoked"} 0
berth_executor_disconnects_total{executor="e2",group="g2",reason="stuck"} 0
berth_executor_disconnects_total{executor="e2",group="g2",reason="timeout"} 0
# HELP berth_executor_streams Device streams open.
# TYPE berth_executor_streams gauge
berth_executor_streams{executor="e1",group="g1"} 3
berth_executor_streams{executor="e2",group="g2"} 1
# HELP berth_executor_connects_total Device streams opened, by gRPC code: OK for admitted, the refusal's code otherwise.
# TYPE berth_executor_connects_total counter
berth_executor_connects_total{code="OK",executor="e1",group="g1"} 10
berth_executor_connects_total{code="Unauthenticated",executor="e1",group="g1"} 2
berth_executor_connects_total{code="OK",executor="e2",group="g2"} 1
# HELP berth_executor_auth_refused_total Refused credentials (assignment tokens of streams, service tokens of internal calls), by reason.
# TYPE berth_executor_auth_refused_total counter
berth_executor_auth_refused_total{executor="e1",group="g1",reason="assignment token invalid"} 2
`
	names := []string{"berth_executor_disconnects_total", "berth_executor_streams", "berth_executor_connects_total", "berth_executor_auth_refused_total"}
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// A read where a stream has ended but the replacement that ended it
	// is not counted yet must not make "other" go down.
	st.Store(&executor.Stats{Sessions: 1, Accepted: 10, Replaced: 2, Timeouts: 1, Registered: true})
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(strings.ReplaceAll(want, `reason="other"} 4`, `reason="other"} 6`)), "berth_executor_disconnects_total"); err != nil {
		t.Error(err)
	}
	st.Store(&executor.Stats{Sessions: 1, Accepted: 10, Replaced: 4, Timeouts: 1, Registered: true})
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(strings.ReplaceAll(strings.ReplaceAll(want, `reason="other"} 4`, `reason="other"} 6`), `g1",reason="replaced"} 2`, `g1",reason="replaced"} 4`)), "berth_executor_disconnects_total"); err != nil {
		t.Error(err)
	}
}

func TestNamesAndLint(t *testing.T) {
	m := metrics.New()
	names := m.Names()
	for _, want := range []string{
		"berth_assign_total", "berth_executor_streams", "berth_registry_degraded", "berth_etcd_request_duration_seconds",
		"grpc_server_handled_total", "grpc_server_handling_seconds", "grpc_client_handled_total", "grpc_client_handling_seconds", "go_goroutines",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("Names() lacks %s: %v", want, names)
		}
	}
	// Every berth_ metric follows Prometheus' naming rules.
	m.AddReplica(metrics.Replica{Cache: &fakeCache{}, Reservations: func() int { return 0 }, Refusals: func() map[string]uint64 { return map[string]uint64{"x": 1} },
		QueueUsage: func(context.Context) (int64, int64, error) { return 0, 0, nil }, Leading: func() bool { return false }})
	m.AddExecutor(metrics.Executor{ID: "e", Group: "g", Stats: func() executor.Stats { return executor.Stats{AuthRefused: map[string]uint64{"x": 1}} }})
	problems, err := testutil.GatherAndLint(m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "berth_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestNilRecordsNothing(t *testing.T) {
	var m *metrics.Metrics
	m.MoveObserved("drain", true)
	m.SawRevision(3)
	m.AddReplica(metrics.Replica{Cache: &fakeCache{}})
	m.AddExecutor(metrics.Executor{Stats: func() executor.Stats { return executor.Stats{} }})
	if m.ServerMetrics() != nil || m.ClientDialOptions() != nil || m.EtcdDialOptions() != nil || m.EtcdRevision() != 0 {
		t.Error("a nil *Metrics hands out something")
	}
	call(t, m, controlplanev1.ControlPlaneService_Assign_FullMethodName, nil, nil, status.Error(codes.Internal, "x"))
}
