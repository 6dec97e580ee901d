package metrics

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthproject/berth/executor"
)

// CacheState is a watch-fed view's state. *registry.Cache implements it.
type CacheState interface {
	// Ready reports whether the view is in sync (listed and watching).
	Ready() bool
	// Loaded reports whether it ever was: it holds a snapshot.
	Loaded() bool
	// Revision is the store revision the view reflects.
	Revision() int64
}

// Replica is what a control plane replica's collector reads at each
// gather. Cache is required; nil funcs are skipped.
type Replica struct {
	Cache CacheState
	// Reservations returns the reservations Assign holds.
	Reservations func() int
	// Refusals returns the refused Assigns by reason (refusallog).
	Refusals func() map[string]uint64
	// QueueUsage returns the messages waiting in all queues and their
	// bytes, from the registry's usage counters (one etcd read).
	QueueUsage func(ctx context.Context) (count, bytes int64, err error)
	// Leading reports whether this replica leads the rebalancer.
	Leading func() bool
}

// queueReadTimeout bounds the etcd read of the queue usage at a gather.
const queueReadTimeout = 2 * time.Second

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
}

var (
	descSynced = desc("registry_cache_synced", "1 while the registry cache is in sync with etcd (listed and watching), else 0.")
	descDegr   = desc("registry_degraded", "1 while etcd is unreachable and the cache serves its last snapshot (Assign of known devices goes on), else 0.")
	descRev    = desc("registry_cache_revision", "The etcd revision the registry cache reflects.")
	descLag    = desc("registry_cache_revision_lag", "Revisions between the newest one this process saw in an etcd response and the one the cache reflects.")
	descResv   = desc("assign_reservations", "Reservations Assign holds (devices sent to an executor, not yet old enough to be in its counts or forgotten).")
	descARef   = desc("assign_refused_total", "Assigns refused for their credentials, by reason.", "reason")
	descQMsgs  = desc("queue_messages", "Messages waiting in all device queues (the registry's usage counters).")
	descQBytes = desc("queue_bytes", "Bytes of etcd the waiting messages are charged.")
	descLead   = desc("rebalance_leading", "1 while this replica leads the rebalancer, else 0.")
)

// replicaCollector reads the process's Replica, if it has one, at each
// gather.
type replicaCollector struct {
	m *Metrics

	mu sync.Mutex
	r  *Replica
}

func (c *replicaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSynced, descDegr, descRev, descLag, descResv, descARef, descQMsgs, descQBytes, descLead} {
		ch <- d
	}
}

func (c *replicaCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	rp := c.r
	c.mu.Unlock()
	if rp == nil {
		return
	}
	r := *rp
	ready, loaded := r.Cache.Ready(), r.Cache.Loaded()
	rev := r.Cache.Revision()
	ch <- prometheus.MustNewConstMetric(descSynced, prometheus.GaugeValue, b2f(ready))
	ch <- prometheus.MustNewConstMetric(descDegr, prometheus.GaugeValue, b2f(loaded && !ready))
	ch <- prometheus.MustNewConstMetric(descRev, prometheus.GaugeValue, float64(rev))
	ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(max(0, c.m.EtcdRevision()-rev)))
	if r.Reservations != nil {
		ch <- prometheus.MustNewConstMetric(descResv, prometheus.GaugeValue, float64(r.Reservations()))
	}
	if r.Refusals != nil {
		for why, n := range r.Refusals() {
			ch <- prometheus.MustNewConstMetric(descARef, prometheus.CounterValue, float64(n), why)
		}
	}
	if r.Leading != nil {
		ch <- prometheus.MustNewConstMetric(descLead, prometheus.GaugeValue, b2f(r.Leading()))
	}
	if r.QueueUsage != nil {
		ctx, cancel := context.WithTimeout(context.Background(), queueReadTimeout)
		n, b, err := r.QueueUsage(ctx)
		cancel()
		if err != nil {
			// Unknown, not zero: the gauges are left out of this gather.
			return
		}
		ch <- prometheus.MustNewConstMetric(descQMsgs, prometheus.GaugeValue, float64(n))
		ch <- prometheus.MustNewConstMetric(descQBytes, prometheus.GaugeValue, float64(b))
	}
}

// AddReplica registers the collector of a control plane replica. A process
// has at most one replica.
func (m *Metrics) AddReplica(r Replica) {
	if m == nil || r.Cache == nil {
		return
	}
	m.replica.mu.Lock()
	m.replica.r = &r
	m.replica.mu.Unlock()
}

// Executor is what an executor's collector reads at each gather.
type Executor struct {
	// ID and Group name the executor in the labels.
	ID, Group string
	// Stats returns its counters. Required.
	Stats func() executor.Stats
}

var (
	execLabels   = []string{"group", "executor"}
	descStreams  = desc("executor_streams", "Device streams open.", execLabels...)
	descConnects = desc("executor_connects_total", "Device streams opened, by gRPC code: OK for admitted, the refusal's code otherwise.", append(execLabels, "code")...)
	descDiscon   = desc("executor_disconnects_total", "Admitted device streams that ended, by reason: replaced, timeout, revoked, stuck, or other (the device left, a drain, a move).", append(execLabels, "reason")...)
	descERef     = desc("executor_auth_refused_total", "Refused credentials (assignment tokens of streams, service tokens of internal calls), by reason.", append(execLabels, "reason")...)
	descQDel     = desc("executor_queue_delivered_total", "Queued messages delivered on connect and acknowledged.", execLabels...)
	descReg      = desc("executor_registered", "1 while the executor's record is in the registry under a live lease, else 0.", execLabels...)
	descDrain    = desc("executor_draining", "1 while the executor drains, else 0.", execLabels...)
)

// executorsCollector reads the process's executors at each gather.
type executorsCollector struct {
	mu    sync.Mutex
	execs []*executorCollector
}

func (c *executorsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descStreams, descConnects, descDiscon, descERef, descQDel, descReg, descDrain} {
		ch <- d
	}
}

func (c *executorsCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	execs := c.execs
	c.mu.Unlock()
	for _, e := range execs {
		e.collect(ch)
	}
}

// executorCollector reads one Executor. The "other" disconnects are
// derived (ended streams less those of known reasons) and kept monotonic.
type executorCollector struct {
	e Executor

	mu    sync.Mutex
	other uint64
}

func (c *executorCollector) collect(ch chan<- prometheus.Metric) {
	s := c.e.Stats()
	g, id := c.e.Group, c.e.ID
	ch <- prometheus.MustNewConstMetric(descStreams, prometheus.GaugeValue, float64(s.Sessions), g, id)
	ch <- prometheus.MustNewConstMetric(descConnects, prometheus.CounterValue, float64(s.Accepted), g, id, "OK")
	for code, n := range s.Refused {
		ch <- prometheus.MustNewConstMetric(descConnects, prometheus.CounterValue, float64(n), g, id, code.String())
	}
	known := s.Replaced + s.Timeouts + s.Revoked + s.Stuck
	var ended uint64
	if s.Accepted > uint64(s.Sessions) {
		ended = s.Accepted - uint64(s.Sessions)
	}
	c.mu.Lock()
	if ended > known && ended-known > c.other {
		c.other = ended - known
	}
	other := c.other
	c.mu.Unlock()
	for reason, n := range map[string]uint64{"replaced": s.Replaced, "timeout": s.Timeouts, "revoked": s.Revoked, "stuck": s.Stuck, "other": other} {
		ch <- prometheus.MustNewConstMetric(descDiscon, prometheus.CounterValue, float64(n), g, id, reason)
	}
	for why, n := range s.AuthRefused {
		ch <- prometheus.MustNewConstMetric(descERef, prometheus.CounterValue, float64(n), g, id, why)
	}
	ch <- prometheus.MustNewConstMetric(descQDel, prometheus.CounterValue, float64(s.QueueDelivered), g, id)
	ch <- prometheus.MustNewConstMetric(descReg, prometheus.GaugeValue, b2f(s.Registered), g, id)
	ch <- prometheus.MustNewConstMetric(descDrain, prometheus.GaugeValue, b2f(s.Draining), g, id)
}

// AddExecutor registers the collector of one executor; a process (`berth
// dev`) may hold several, told apart by their labels.
func (m *Metrics) AddExecutor(e Executor) {
	if m == nil || e.Stats == nil {
		return
	}
	m.execs.mu.Lock()
	defer m.execs.mu.Unlock()
	m.execs.execs = append(slices.Clip(m.execs.execs), &executorCollector{e: e})
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
