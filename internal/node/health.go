package node

import (
	"context"
	"fmt"
	"time"

	"github.com/berthproject/berth/internal/metrics"
	"github.com/berthproject/berth/registry"
)

// degradedPoll is how often a serving replica looks whether its cache lost
// etcd, to say so in its log.
const degradedPoll = time.Second

// Ready reports whether the replica is ready for traffic, and what it sees:
// not before its cache is loaded, not while stopping, and not while
// degraded — etcd unreachable, the cache serving its last snapshot. While
// degraded the gRPC health service stays SERVING (Assign of known devices
// goes on from the snapshot); readiness and the log tell the truth.
func (r *Replica) Ready() (bool, string) {
	switch {
	case r.stopping.Load():
		return false, "stopping"
	case !r.serving.Load():
		return false, "starting: loading the registry cache"
	case !r.cache.Ready():
		return false, fmt.Sprintf("degraded: etcd unreachable, serving the last snapshot (revision %d)", r.cache.Revision())
	}
	return true, fmt.Sprintf("in sync with etcd at revision %d", r.cache.Revision())
}

// watchDegraded logs when the cache loses etcd and when it is back; it
// returns when ctx ends.
func (r *Replica) watchDegraded(ctx context.Context) {
	t := time.NewTicker(degradedPoll)
	defer t.Stop()
	degraded := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := !r.cache.Ready()
		switch {
		case now && !degraded:
			r.log.Warn("control plane degraded: etcd unreachable; Assign answers known devices from the last snapshot, readiness reports not ready",
				"revision", r.cache.Revision())
		case !now && degraded:
			r.log.Info("control plane back in sync with etcd", "revision", r.cache.Revision())
		}
		degraded = now
	}
}

// addMetrics registers the replica's collector.
func (r *Replica) addMetrics(reg *registry.Registry) {
	if r.met == nil {
		return
	}
	mr := metrics.Replica{
		Cache:        r.cache,
		Reservations: r.cp.Reservations,
		Refusals:     r.cp.Refusals,
		QueueUsage: func(ctx context.Context) (int64, int64, error) {
			u, err := reg.TotalQueueUsage(ctx)
			return u.Count, u.Bytes, err
		},
	}
	if r.rb != nil {
		mr.Leading = r.rb.Leading
	}
	r.met.AddReplica(mr)
}
