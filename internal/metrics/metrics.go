// Package metrics holds one process's Prometheus metrics: a registry of
// its own (never the global one), the gRPC server and client metrics of
// go-grpc-middleware's prometheus provider, the latency of etcd requests,
// counters fed by interceptors and hooks, and collectors that read the
// servers' own counters when the registry is gathered. Labels stay few and
// bounded: group, executor, label, code, reason, mode and method — never a
// device id.
//
// A nil *Metrics is valid and records nothing, so that servers built
// without an operations listener pay nothing.
package metrics

import (
	"context"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
)

// Namespace prefixes every metric of berth's own.
const Namespace = "berth"

// latencyBuckets are the histogram buckets of RPC and etcd latencies, in
// seconds: 0.5 ms to 10 s.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics is one process's metrics. Build it with New; every method is
// safe for concurrent use and does nothing on a nil receiver.
type Metrics struct {
	// Registry holds every metric of the process; the operations listener
	// serves it.
	Registry *prometheus.Registry

	server *grpcprom.ServerMetrics
	client *grpcprom.ClientMetrics
	etcd   *prometheus.HistogramVec
	// etcdRev is the highest store revision an etcd response of this
	// process carried: what the cache's revision lags behind.
	etcdRev atomic.Int64

	assigns   *prometheus.CounterVec
	sent      *prometheus.CounterVec
	delivered *prometheus.CounterVec
	failed    *prometheus.CounterVec
	moves     *prometheus.CounterVec
	moveFails *prometheus.CounterVec

	replica *replicaCollector
	execs   *executorsCollector
	// all are the collectors registered, for Names.
	all []prometheus.Collector
}

// New builds the metrics of one process, with the Go runtime and process
// collectors registered.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		server: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(latencyBuckets))),
		client: grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(latencyBuckets))),
		etcd: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "etcd_request_duration_seconds",
			Help:    "Latency of this process's unary etcd requests, by etcd method (Range, Txn, Put, LeaseGrant, …).",
			Buckets: latencyBuckets,
		}, []string{"method"}),
		assigns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "assign_total",
			Help: "Assign calls answered, by the label placed under (\"none\" when refused) and gRPC code.",
		}, []string{"label", "code"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "messages_sent_total",
			Help: "Send calls accepted (delivered or queued), by delivery mode.",
		}, []string{"mode"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "messages_delivered_total",
			Help: "Send calls answered DELIVERED (the device acked), by delivery mode.",
		}, []string{"mode"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "messages_failed_total",
			Help: "Send calls that failed, by delivery mode and gRPC code.",
		}, []string{"mode", "code"}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "rebalance_moves_total",
			Help: "Devices the rebalancer asked to move (redirected), by reason (policy, drain, balance).",
		}, []string{"reason"}),
		moveFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "rebalance_move_failures_total",
			Help: "Moves the rebalancer stored but the executor did not make, by reason.",
		}, []string{"reason"}),
	}
	m.replica = &replicaCollector{m: m}
	m.execs = &executorsCollector{}
	m.all = []prometheus.Collector{
		m.replica, m.execs,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.server, m.client, m.etcd, m.assigns, m.sent, m.delivered, m.failed, m.moves, m.moveFails,
	}
	reg.MustRegister(m.all...)
	return m
}

// fqName finds a descriptor's name in its description (Desc has no
// accessor).
var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Names returns the name of every metric family the registry may hold,
// whether or not it has a series yet, sorted: what dashboards and alerts
// may refer to (histograms add _bucket, _sum and _count).
func (m *Metrics) Names() []string {
	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range m.all {
			c.Describe(ch)
		}
		close(ch)
	}()
	seen := map[string]bool{}
	for d := range ch {
		if sub := fqName.FindStringSubmatch(d.String()); sub != nil {
			seen[sub[1]] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// ServerMetrics returns the gRPC server metrics, for internal/rpcserver;
// nil on a nil receiver.
func (m *Metrics) ServerMetrics() *grpcprom.ServerMetrics {
	if m == nil {
		return nil
	}
	return m.server
}

// ClientDialOptions are the dial options that record gRPC client metrics
// (for the replica's connections to executors).
func (m *Metrics) ClientDialOptions() []grpc.DialOption {
	if m == nil {
		return nil
	}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(m.client.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(m.client.StreamClientInterceptor()),
	}
}

// EtcdDialOptions are the dial options of an etcd client
// (clientv3.Config.DialOptions) that time its unary requests and remember
// the newest store revision they saw.
func (m *Metrics) EtcdDialOptions() []grpc.DialOption {
	if m == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(m.etcdInterceptor)}
}

// etcdHeader is what every etcd response has: a header with the store's
// revision.
type etcdHeader interface {
	GetHeader() *etcdserverpb.ResponseHeader
}

func (m *Metrics) etcdInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	m.etcd.WithLabelValues(path.Base(method)).Observe(time.Since(start).Seconds())
	if h, ok := reply.(etcdHeader); ok && err == nil {
		m.SawRevision(h.GetHeader().GetRevision())
	}
	return err
}

// SawRevision records that etcd's store had reached rev.
func (m *Metrics) SawRevision(rev int64) {
	if m == nil {
		return
	}
	for {
		cur := m.etcdRev.Load()
		if rev <= cur || m.etcdRev.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// EtcdRevision returns the newest store revision an etcd response of this
// process carried (0: none yet).
func (m *Metrics) EtcdRevision() int64 {
	if m == nil {
		return 0
	}
	return m.etcdRev.Load()
}

// UnaryServerInterceptor counts the outcomes of Assign (by label and code)
// and Send (by mode and outcome); other methods pass through.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if m == nil {
			return resp, err
		}
		switch info.FullMethod {
		case controlplanev1.ControlPlaneService_Assign_FullMethodName:
			label := "none"
			if r, ok := resp.(*controlplanev1.AssignResponse); ok && err == nil && r.GetDestination().GetLabel() != "" {
				label = r.GetDestination().GetLabel()
			}
			m.assigns.WithLabelValues(label, status.Code(err).String()).Inc()
		case messagingv1.MessagingService_Send_FullMethodName:
			r, _ := req.(*messagingv1.SendRequest)
			mode := strings.ToLower(strings.TrimPrefix(r.GetMode().String(), "DELIVERY_MODE_"))
			if err != nil {
				m.failed.WithLabelValues(mode, status.Code(err).String()).Inc()
				break
			}
			m.sent.WithLabelValues(mode).Inc()
			if s, ok := resp.(*messagingv1.SendResponse); ok && s.GetStatus() == messagingv1.SendStatus_SEND_STATUS_DELIVERED {
				m.delivered.WithLabelValues(mode).Inc()
			}
		}
		return resp, err
	}
}

// MoveObserved counts one move of the rebalancer: made (ok) or failed.
func (m *Metrics) MoveObserved(reason string, ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.moves.WithLabelValues(reason).Inc()
		return
	}
	m.moveFails.WithLabelValues(reason).Inc()
}
