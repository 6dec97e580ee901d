package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/berthproject/berth/access"
	"github.com/berthproject/berth/admin"
	"github.com/berthproject/berth/controlplane"
	"github.com/berthproject/berth/execclient"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/identity"
	"github.com/berthproject/berth/internal/fleetpage"
	"github.com/berthproject/berth/internal/metrics"
	"github.com/berthproject/berth/internal/ratelimit"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/internal/tracing"
	"github.com/berthproject/berth/messaging"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/rebalance"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// ErrRunTwice is returned by a second call of Run.
var ErrRunTwice = errors.New("node: Run called twice")

// ReplicaConfig is everything a control plane replica is built from.
type ReplicaConfig struct {
	// ControlPlane tunes Assign. Its ReplicaID names the replica
	// everywhere: in assignment records, in the service tokens presented
	// to executors, and in the rebalancer's election.
	ControlPlane controlplane.Config
	// Messaging tunes MessagingService.
	Messaging messaging.Config
	// Executors tunes the connections to executors; its Subject is set to
	// the replica id.
	Executors execclient.Config
	// Rebalance runs the rebalancer next to the replica (nil: off); its
	// ReplicaID is set to the replica id.
	Rebalance *rebalance.Config
	// RPC tunes the gRPC server.
	RPC rpcserver.Config
	// Access tunes who may call AdminService and MessagingService (API
	// keys always; client certificates when it names an operator CA) and
	// bounds the audit trail. Those services always need a caller.
	Access access.Config
	// RateLimits limit Assign, Send, Call and Subscribe per caller (zero:
	// off; `berth controlplane` uses DefaultRateLimits).
	RateLimits RateLimits
	// StopTimeout bounds the graceful stop of the gRPC server; the calls
	// and streams still open then are cut.
	StopTimeout time.Duration
	// OpenEnrollment lets Assign callers without credentials (no client
	// certificate, no enrollment signature) through with the device id they
	// ask for, as before enrollments existed. Off by default: `berth
	// controlplane --open-enrollment` and `berth dev` turn it on.
	OpenEnrollment bool
}

// DefaultReplicaConfig returns the settings of `berth controlplane`,
// rebalancer included.
func DefaultReplicaConfig() ReplicaConfig {
	rb := rebalance.DefaultConfig()
	rpc := rpcserver.DefaultConfig()
	// Short, deep unary calls: workers that keep their grown stacks. At
	// least 64, as many as the callers a replica commonly has in flight:
	// a call that finds every worker busy runs on a fresh goroutine whose
	// stack grows again, copied in placement.Decide under the
	// reservations lock (with 8 workers, 8% of the CPU of
	// bench.BenchmarkAssignServer's 64 callers). Idle workers cost their
	// stacks only.
	rpc.StreamWorkers = uint32(max(64, 4*runtime.GOMAXPROCS(0)))
	return ReplicaConfig{
		ControlPlane: controlplane.DefaultConfig(),
		Messaging:    messaging.DefaultConfig(),
		Executors:    execclient.DefaultConfig(),
		Rebalance:    &rb,
		RPC:          rpc,
		RateLimits:   DefaultRateLimits(),
		StopTimeout:  5 * time.Second,
	}
}

// withReplicaID returns c with the replica id copied where the parts
// need it.
func (c ReplicaConfig) withReplicaID() ReplicaConfig {
	id := c.ControlPlane.ReplicaID
	c.Executors.Subject = id
	if c.Rebalance != nil {
		rb := *c.Rebalance
		rb.ReplicaID = id
		c.Rebalance = &rb
	}
	return c
}

// Validate checks c and every part of it.
func (c ReplicaConfig) Validate() error {
	c = c.withReplicaID()
	errs := []error{c.ControlPlane.Validate(), c.Messaging.Validate(), c.Executors.Validate(), c.RateLimits.Validate()}
	if c.Rebalance != nil {
		errs = append(errs, c.Rebalance.Validate())
	}
	if c.StopTimeout <= 0 {
		errs = append(errs, fmt.Errorf("node: stop timeout %v: want > 0", c.StopTimeout))
	}
	return errors.Join(errs...)
}

// ReplicaDeps are what a replica is built on.
type ReplicaDeps struct {
	// Registry is the etcd registry. Required.
	Registry *registry.Registry
	// Signer mints assignment tokens and the service tokens presented to
	// executors. Required.
	Signer *token.Signer
	// Log may be nil.
	Log *slog.Logger
	// WrapMover, when set, wraps the rebalancer's mover (benchmarks count
	// the moves with it).
	WrapMover func(rebalance.Mover) rebalance.Mover
	// Metrics, when set, records the replica's metrics: gRPC server calls,
	// calls to executors, Assign and Send outcomes, the rebalancer's moves,
	// the cache's state, reservations, refusals and the queues' usage.
	Metrics *metrics.Metrics
	// Tracing, when set, traces the replica's calls, served and made to
	// executors, and stores a queued message's trace context with it;
	// nil: off.
	Tracing *tracing.Tracing
}

// Replica is one control plane replica: Assign, messaging, the Admin
// service and, when configured, the rebalancer, on one gRPC server.
type Replica struct {
	cfg ReplicaConfig
	log *slog.Logger

	cache *registry.Cache
	trust *registry.TrustView
	pool  *execclient.Pool
	cp    *controlplane.Server
	msg   *messaging.Server
	admin *admin.Server
	rb    *rebalance.Rebalancer // nil: off
	keys  *registry.APIKeyView
	guard *access.Guard
	fleet *fleetpage.Handler
	limit *ratelimit.Limiter
	met   *metrics.Metrics // nil: no metrics

	running  atomic.Bool
	serving  atomic.Bool // SERVING reported
	stopping atomic.Bool
}

// NewReplica validates cfg and wires a replica. It starts nothing and does
// no I/O.
func NewReplica(cfg ReplicaConfig, deps ReplicaDeps) (*Replica, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Registry == nil || deps.Signer == nil {
		return nil, errors.New("node: a replica needs a registry and a signer")
	}
	cfg = cfg.withReplicaID()
	cfg.RPC.Metrics = deps.Metrics.ServerMetrics()
	cfg.Executors.DialOptions = append(slices.Clip(cfg.Executors.DialOptions), deps.Metrics.ClientDialOptions()...)
	cfg.RPC.StatsHandler = deps.Tracing.ServerHandler()
	cfg.Executors.DialOptions = append(cfg.Executors.DialOptions, deps.Tracing.DialOptions()...)
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg, signer, id := deps.Registry, deps.Signer, cfg.ControlPlane.ReplicaID
	r := &Replica{cfg: cfg, log: log.With("replica", id), met: deps.Metrics}
	r.cache = reg.NewCache(log.With("component", "cache"))
	pool, err := execclient.New(cfg.Executors, execclient.Deps{Signer: signer, Executors: r.cache, Log: r.log.With("component", "execclient")})
	if err != nil {
		return nil, err
	}
	r.pool = pool
	if r.limit, err = ratelimit.New(cfg.RateLimits.config(), CallerIdentity, nil); err != nil {
		return nil, err
	}
	// One compile-once cache of the stored policy for Assign, the
	// rebalancer and (through Assign) the Admin service.
	pols := placement.NewPolicies(r.log)
	r.trust = reg.NewTrustView(log.With("component", "trust"))
	auth, err := identity.New(r.trust, cfg.OpenEnrollment, nil)
	if err != nil {
		return nil, err
	}
	// Assign's records go by group commit: one etcd round trip carries
	// the records of every Assign that came while the one before was in
	// flight.
	store := assignStore{Registry: reg, batch: reg.NewAssignmentBatcher(cfg.ControlPlane.WriteTimeout)}
	if r.cp, err = controlplane.New(cfg.ControlPlane, r.cache, store, signer, log, controlplane.WithAuthenticator(auth), controlplane.WithLimiter(r.limit),
		controlplane.WithPolicies(pols)); err != nil {
		return nil, err
	}
	r.msg, err = messaging.New(cfg.Messaging, messaging.Deps{Store: reg, Cache: r.cache, Executors: pool, Log: r.log.With("component", "messaging")})
	if err != nil {
		return nil, err
	}
	r.keys = reg.NewAPIKeyView(r.log.With("component", "apikeys"))
	if r.admin, err = admin.New(admin.Deps{Cache: r.cache, Policies: r.cp, Store: reg, Rebalance: reg, Fleet: reg, Identity: reg, Access: reg, Keys: r.keys, Log: r.log}); err != nil {
		return nil, err
	}
	if r.guard, err = access.New(cfg.Access, access.Deps{Keys: r.keys, Assignments: r.cache, Audit: reg, Log: r.log.With("component", "access")}); err != nil {
		return nil, err
	}
	if r.fleet, err = fleetpage.New(fleetpage.Deps{Admin: r.admin, Devices: r.msg, Auth: r.guard, Log: r.log.With("component", "fleetpage")}); err != nil {
		return nil, err
	}
	if cfg.Rebalance != nil {
		var mover rebalance.Mover = rebalance.NewGRPCMover(pool)
		if deps.WrapMover != nil {
			mover = deps.WrapMover(mover)
		}
		rbOpts := []rebalance.Option{rebalance.WithPolicies(pols)}
		if deps.Metrics != nil {
			rbOpts = append(rbOpts, rebalance.WithMoveHook(deps.Metrics.MoveObserved))
		}
		if r.rb, err = rebalance.New(*cfg.Rebalance, reg, r.cache, signer, mover, log.With("component", "rebalancer"), rbOpts...); err != nil {
			return nil, err
		}
	}
	r.addMetrics(reg)
	return r, nil
}

// assignStore is the registry with assignment records written by group
// commit.
type assignStore struct {
	*registry.Registry
	batch *registry.AssignmentBatcher
}

// PutAssignment implements controlplane.AssignmentStore.
func (s assignStore) PutAssignment(ctx context.Context, a registry.Assignment) error {
	return s.batch.PutAssignment(ctx, a)
}

// ControlPlane returns the Assign server (for its counters).
func (r *Replica) ControlPlane() *controlplane.Server { return r.cp }

// RateLimited returns the calls refused by the rate limits, by method.
func (r *Replica) RateLimited() map[string]uint64 { return r.limit.Refused() }

// Cache returns the replica's registry cache.
func (r *Replica) Cache() *registry.Cache { return r.cache }

// FleetPage returns the fleet page's handler, to serve at
// fleetpage.Prefix on the operations listener: read-only, each API call
// checked by the replica's access guard (a viewer key at least).
func (r *Replica) FleetPage() http.Handler { return r.fleet }

// Rebalancer returns the rebalancer, nil when it is off.
func (r *Replica) Rebalancer() *rebalance.Rebalancer { return r.rb }

// services are the names the replica's health service reports.
var services = []string{
	controlplanev1.ControlPlaneService_ServiceDesc.ServiceName,
	messagingv1.MessagingService_ServiceDesc.ServiceName,
	adminv1.AdminService_ServiceDesc.ServiceName,
}

// Run serves the replica on lis until ctx is cancelled or a part fails,
// then stops in the package's order and returns nil after a clean stop.
// It reports SERVING through the health service once the registry cache is
// loaded. Run closes lis; it may be called once.
func (r *Replica) Run(ctx context.Context, lis net.Listener) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	// The outcome counters run before the access guard and the rate
	// limits, so that their refusals are counted too (without metrics
	// there is nothing to count: no interceptor, no cost per call).
	var opts []grpc.ServerOption
	if r.met != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(r.met.UnaryServerInterceptor()))
	}
	opts = append(opts, r.guard.ServerOptions()...)
	opts = append(opts, grpc.ChainUnaryInterceptor(r.limit.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(r.limit.StreamServerInterceptor()))
	rpc := rpcserver.New(r.cfg.RPC, r.log, opts...)
	r.cp.Register(rpc.GRPC)
	r.msg.Register(rpc.GRPC)
	r.admin.Register(rpc.GRPC)

	// runCtx ends serving: ctx is cancelled, or a part failed.
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	// The cache, the pool and the rebalancer outlive serving: calls that
	// finish during the graceful stop still read the cache and reach
	// executors.
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBg()
	var bg sync.WaitGroup
	var bgErr error
	var bgMu sync.Mutex
	background := func(name string, run func(context.Context) error) {
		bg.Go(func() {
			if err := run(bgCtx); err != nil {
				err = fmt.Errorf("node: %s: %w", name, err)
				bgMu.Lock()
				bgErr = errors.Join(bgErr, err)
				bgMu.Unlock()
				stop(err)
			}
		})
	}
	background("registry cache", r.cache.Run)
	background("api key view", r.keys.Run)
	background("trust view", r.trust.Run)
	background("executor connections", r.pool.Run)
	if r.rb != nil {
		background("rebalancer", r.rb.Run)
	}

	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error {
		// ErrServerStopped: the stop came before Serve started.
		if err := rpc.GRPC.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("node: serve: %w", err)
		}
		return nil
	})
	g.Go(func() error { return r.msg.Run(gctx) })
	g.Go(func() error {
		if err := errors.Join(r.cache.WaitReady(gctx), r.keys.WaitReady(gctx), r.trust.WaitReady(gctx)); err == nil {
			rpc.SetServing(true, services...)
			r.serving.Store(true)
			r.log.Info("control plane serving", "addr", lis.Addr().String())
			r.watchDegraded(gctx)
		}
		<-gctx.Done()
		r.stopping.Store(true)
		rpc.SetServing(false, services...)
		rpc.Stop(r.cfg.StopTimeout)
		return nil
	})
	err := g.Wait()
	r.msg.Close()
	stopBg()
	bg.Wait()
	r.pool.Close()
	bgMu.Lock()
	defer bgMu.Unlock()
	return errors.Join(err, bgErr)
}
