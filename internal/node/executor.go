package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/berthproject/berth/executor"
	"github.com/berthproject/berth/internal/metrics"
	"github.com/berthproject/berth/internal/tracing"
	"github.com/berthproject/berth/registry"
)

// ExecutorConfig is everything an executor is built from.
type ExecutorConfig struct {
	// Executor tunes the executor; its ID, GroupID, Address,
	// InternalAddress and Capacity are also its registry record, and its
	// Registration the record's lease and writes. With an InternalAddress
	// the executor is run with RunSplit.
	Executor executor.Config
	// RecordUsage writes each device's traffic history to the registry
	// when its stream ends (and hourly for long streams), for the policy's
	// history inputs. The stream benchmarks turn it off.
	RecordUsage bool
}

// DefaultExecutorConfig returns the settings of `berth executor`; ID,
// GroupID and Address have no default.
func DefaultExecutorConfig() ExecutorConfig {
	return ExecutorConfig{Executor: executor.DefaultConfig(), RecordUsage: true}
}

// ExecutorDeps are what an executor is built on.
type ExecutorDeps struct {
	// Registry is the etcd registry. Required.
	Registry *registry.Registry
	// Verifier checks assignment tokens and control planes' service
	// tokens. Required.
	Verifier executor.Verifier
	// Log may be nil; the executor's id is added to it.
	Log *slog.Logger
	// Metrics, when set, records the executor's metrics: gRPC server calls
	// and its streams, connects, disconnects and refusals.
	Metrics *metrics.Metrics
	// Tracing, when set, traces the executor's calls (Deliver's span is
	// the parent of the device's span for the message); nil: off.
	Tracing *tracing.Tracing
}

// Executor is one executor: its registration, its device streams and its
// usage recorder.
type Executor struct {
	srv   *executor.Server
	rr    *registry.Registration
	usage *registry.UsageRecorder // nil: usage is not recorded
	trust *registry.TrustView

	running  atomic.Bool
	stopping atomic.Bool
}

// NewExecutor validates cfg and wires an executor. It starts nothing and
// does no I/O.
func NewExecutor(cfg ExecutorConfig, deps ExecutorDeps) (*Executor, error) {
	if deps.Registry == nil || deps.Verifier == nil {
		return nil, errors.New("node: an executor needs a registry and a verifier")
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ec, reg := cfg.Executor, deps.Registry
	ec.RPC.Metrics = deps.Metrics.ServerMetrics()
	ec.RPC.StatsHandler = deps.Tracing.ServerHandler()
	log = log.With("executor", ec.ID)
	rr, err := reg.NewRegistration(registry.Executor{ID: ec.ID, GroupID: ec.GroupID, Address: ec.Address, InternalAddress: ec.InternalAddress, TLSName: ec.TLSName, Capacity: ec.Capacity}, ec.Registration, log)
	if err != nil {
		return nil, err
	}
	// The executor follows revocations and enrollments with its own watch,
	// not through control planes: it closes a revoked identity's streams
	// whether or not a control plane is up, and refuses at Hello the
	// tokens minted before the revocation.
	e := &Executor{rr: rr, trust: reg.NewTrustView(log.With("component", "trust"))}
	opts := []executor.Option{executor.WithQueue(reg), executor.WithTrust(e.trust)}
	if cfg.RecordUsage {
		e.usage = reg.NewUsageRecorder(0, log.With("component", "usage"))
		opts = append(opts, executor.WithUsage(e.usage))
	}
	if e.srv, err = executor.New(ec, deps.Verifier, rr, log, opts...); err != nil {
		return nil, err
	}
	deps.Metrics.AddExecutor(metrics.Executor{ID: ec.ID, Group: ec.GroupID, Stats: e.srv.Stats})
	return e, nil
}

// Server returns the executor's stream server (for its counters).
func (e *Executor) Server() *executor.Server { return e.srv }

// Registration returns the executor's registry record.
func (e *Executor) Registration() *registry.Registration { return e.rr }

// Run serves on lis until ctx is cancelled, then drains and stops as
// executor.Server.Run does, and returns nil after a clean stop. The usage
// recorder and the trust view outlive the streams, so that the usage of
// the last ones is written too. Run closes lis; it may be called once.
func (e *Executor) Run(ctx context.Context, lis net.Listener) error {
	return e.RunSplit(ctx, lis, nil)
}

// RunSplit is Run with control planes served on internal, devices on lis
// (executor.Server.RunSplit): for an executor whose config has an
// InternalAddress. A nil internal is Run. RunSplit closes both listeners.
func (e *Executor) RunSplit(ctx context.Context, lis, internal net.Listener) error {
	if !e.running.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup
	// Both return nil when cancelled and retry etcd errors themselves.
	bg.Go(func() { _ = e.trust.Run(bgCtx) })
	if e.usage != nil {
		bg.Go(func() { _ = e.usage.Run(bgCtx) })
	}
	stopped := context.AfterFunc(ctx, func() { e.stopping.Store(true) })
	defer stopped()
	err := e.srv.RunSplit(ctx, lis, internal)
	e.stopping.Store(true)
	stopBg()
	bg.Wait()
	return err
}

// Ready reports whether the executor takes devices, and what it sees: not
// while stopping or draining, and not while its record is missing from the
// registry (etcd unreachable past the lease, or not registered yet) — it
// keeps the devices it holds meanwhile.
func (e *Executor) Ready() (bool, string) {
	st := e.srv.Stats()
	switch {
	case e.stopping.Load():
		return false, "stopping"
	case st.Draining:
		return false, fmt.Sprintf("draining (%d streams)", st.Sessions)
	case !st.Registered:
		return false, fmt.Sprintf("degraded: not registered in etcd (%d streams kept)", st.Sessions)
	}
	return true, fmt.Sprintf("registered, %d streams", st.Sessions)
}

// Trust returns the executor's view of enrollments and revocations.
func (e *Executor) Trust() *registry.TrustView { return e.trust }
