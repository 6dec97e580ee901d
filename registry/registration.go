package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/berthproject/berth/internal/retry"
)

// RegistrationConfig tunes an executor registration.
type RegistrationConfig struct {
	// TTL of the lease the record lives under: how long after the executor
	// dies its record disappears. Whole seconds, at least 2s.
	TTL time.Duration
	// Refresh is how often the record is rewritten when nothing changed, so
	// that readers see a fresh UpdatedAt.
	Refresh time.Duration
	// MinInterval spaces writes of a changing record (connection counts move
	// with every connect), bounding writes per executor.
	MinInterval time.Duration
	// RetryDelay is the centre of the first pause before registering again
	// after a failure (and before retrying a presence write or the drain
	// mark's watch); the pauses are jittered, grow after each failure up to
	// RetryMax and start again from RetryDelay after a success.
	RetryDelay time.Duration
	// RetryMax bounds those pauses; 0 means four times RetryDelay (never
	// less than RetryDelay).
	RetryMax time.Duration
}

// DefaultRegistrationConfig returns the settings used by `berth executor`.
func DefaultRegistrationConfig() RegistrationConfig {
	return RegistrationConfig{TTL: 10 * time.Second, Refresh: 5 * time.Second, MinInterval: 500 * time.Millisecond, RetryDelay: time.Second}
}

// Validate checks c.
func (c RegistrationConfig) Validate() error {
	switch {
	case c.TTL < 2*time.Second:
		return fmt.Errorf("%w: registration TTL %v: want at least 2s", ErrInvalid, c.TTL)
	case c.Refresh <= 0 || c.MinInterval <= 0 || c.RetryDelay <= 0 || c.RetryMax < 0:
		return fmt.Errorf("%w: registration intervals must be positive", ErrInvalid)
	case c.Refresh >= c.TTL:
		return fmt.Errorf("%w: registration refresh %v must be shorter than the TTL %v", ErrInvalid, c.Refresh, c.TTL)
	}
	return nil
}

// Registration keeps one executor's record in etcd under a lease that is kept
// alive in the background. When the lease is lost (etcd unreachable longer
// than the TTL, or revoked), it grants a new one and writes the record again:
// the executor keeps serving its devices and says so in its log.
type Registration struct {
	reg *Registry
	cfg RegistrationConfig
	log *slog.Logger

	mu    sync.Mutex
	cur   Executor
	dirty chan struct{}

	// counting holds the reads counting the queues of the presence
	// batches written (countQueues); presenceLoop waits for them.
	counting sync.WaitGroup

	registered atomic.Bool
	lost       atomic.Int64
	// marked is set while an operator's drain mark names the executor.
	marked atomic.Bool

	// Presence of the devices held here (see presence.go).
	pmu     sync.Mutex
	present map[string]*presenceEntry // live sessions, by device
	// recorded marks the devices for which a put was sent under the
	// current lease: their record may exist and be this executor's.
	recorded map[string]bool
	pdirty   map[string]bool
	notes    map[string]note // replacement notices to write, by executor/device
	psignal  chan struct{}

	// onReplaced is told of this executor's sessions replaced elsewhere
	// (see replaced.go); notesSync is the state of its watch.
	onReplaced func(Replacement)
	notesSync  syncState
}

// retryPolicy is the backoff of the registration's loops.
func (c RegistrationConfig) retryPolicy() retry.Policy {
	m := c.RetryMax
	if m == 0 {
		m = 4 * c.RetryDelay
	}
	return retry.Policy{Initial: c.RetryDelay, Max: max(m, c.RetryDelay), Multiplier: 2}
}

// NewRegistration prepares a registration for e. It does no I/O; Run does.
func (r *Registry) NewRegistration(e Executor, cfg RegistrationConfig, log *slog.Logger) (*Registration, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registration{reg: r, cfg: cfg, log: log, cur: e, dirty: make(chan struct{}, 1),
		present: map[string]*presenceEntry{}, recorded: map[string]bool{}, pdirty: map[string]bool{},
		notes: map[string]note{}, psignal: make(chan struct{}, 1), notesSync: syncState{first: make(chan struct{})}}, nil
}

// Update changes the record (for example the connection count); the change is
// written within MinInterval.
func (g *Registration) Update(fn func(e *Executor)) {
	g.mu.Lock()
	fn(&g.cur)
	g.mu.Unlock()
	select {
	case g.dirty <- struct{}{}:
	default:
	}
}

// Current returns the record as it stands locally.
func (g *Registration) Current() Executor {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cur
}

// Registered reports whether the record is in etcd under a live lease, as far
// as this process knows.
func (g *Registration) Registered() bool { return g.registered.Load() }

// LeasesLost counts the leases lost since Run started.
func (g *Registration) LeasesLost() int64 { return g.lost.Load() }

// Run registers the executor and keeps it registered until ctx is cancelled;
// then it revokes the lease so the record disappears at once. It returns nil
// after a clean stop.
func (g *Registration) Run(ctx context.Context) error {
	var notices sync.WaitGroup
	defer notices.Wait()
	notices.Go(func() { _ = g.watchReplaced(ctx) })
	loop := retry.New(g.cfg.retryPolicy(), g.log, "executor registration lost; registering again")
	for {
		err := g.session(ctx, loop)
		g.registered.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		g.lost.Add(1)
		if !loop.Failed(ctx, nil, err) {
			return nil
		}
	}
}

// errLeaseLost ends a session whose lease expired or was revoked.
var errLeaseLost = errors.New("registry: lease lost")

// session holds one lease until it is lost or ctx is done. It tells loop
// once the record is written.
func (g *Registration) session(ctx context.Context, loop *retry.Loop) error {
	// The lease is granted under ctx: with etcd unreachable a grant waits
	// for it, and cancelling ctx must still stop Run.
	cli := g.reg.client()
	lease, err := cli.Grant(ctx, int64(g.cfg.TTL/time.Second))
	if err != nil {
		return fmt.Errorf("registry: grant lease: %w", err)
	}
	// The session outlives ctx by the time it takes to revoke its lease.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	s, err := concurrency.NewSession(cli, concurrency.WithLease(lease.ID), concurrency.WithContext(sctx))
	if err != nil {
		rctx, rcancel := context.WithTimeout(sctx, 2*time.Second)
		defer rcancel()
		_, _ = cli.Revoke(rctx, lease.ID)
		return fmt.Errorf("registry: keep lease alive: %w", err)
	}
	defer func() {
		rctx, rcancel := context.WithTimeout(sctx, 2*time.Second)
		defer rcancel()
		s.Orphan()
		if _, err := cli.Revoke(rctx, s.Lease()); err != nil && ctx.Err() != nil {
			g.log.Warn("revoking executor lease", "err", err)
		}
	}()

	// The drain mark is read before the first write, so that a marked
	// executor never shows as taking devices.
	g.loadDrainMark(ctx)
	if err := g.write(ctx, s.Lease()); err != nil {
		return err
	}
	g.registered.Store(true)
	loop.Succeeded()
	g.log.Info("executor registered", "lease", fmt.Sprintf("%x", s.Lease()))
	pctx, pcancel := context.WithCancel(ctx)
	var loops sync.WaitGroup
	loops.Go(func() { g.presenceLoop(pctx, s.Lease()) })
	loops.Go(func() { g.watchDrainMark(pctx) })
	defer func() {
		pcancel()
		loops.Wait()
	}()

	// The registration is a write too: the first update waits MinInterval
	// after it like any other.
	last := time.Now()
	refresh := time.NewTicker(g.cfg.Refresh)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.Done():
			return errLeaseLost
		case <-refresh.C:
		case <-g.dirty:
			if wait := g.cfg.MinInterval - time.Since(last); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-s.Done():
					t.Stop()
					return errLeaseLost
				case <-t.C:
				}
			}
		}
		if err := g.write(ctx, s.Lease()); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// A write may fail while etcd is briefly away; the lease is
			// still ours until Done says otherwise, so only log it.
			g.log.Warn("executor heartbeat write failed", "err", err)
			continue
		}
		last = time.Now()
	}
}

// write puts the record under lease, provided the lease still exists: a
// record is never written without the lease that bounds its life.
func (g *Registration) write(ctx context.Context, lease clientv3.LeaseID) error {
	g.mu.Lock()
	g.cur.UpdatedAt = time.Now().UTC()
	e := g.cur
	g.mu.Unlock()
	if g.marked.Load() {
		e.Draining, e.DrainMarked = true, true
	}
	wctx, cancel := context.WithTimeout(ctx, g.cfg.Refresh)
	defer cancel()
	return g.reg.putJSON(wctx, g.reg.executorKey(e.ID), e, clientv3.WithLease(lease))
}
