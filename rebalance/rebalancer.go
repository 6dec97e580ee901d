package rebalance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/internal/retry"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// Cache is the control plane's view of the registry the rebalancer reads.
// *registry.Cache implements it.
type Cache interface {
	Snapshot() *registry.Snapshot
	Assignment(deviceID string) (registry.Assignment, bool)
	History(deviceID string) (registry.History, bool)
	WaitReady(ctx context.Context) error
	Ready() bool
}

// Signer mints assignment tokens. *token.Signer implements it.
type Signer interface {
	SignBound(deviceID, groupID, label string, weight float64, ttl time.Duration, b token.Binding) (string, time.Time, error)
}

var _ Cache = (*registry.Cache)(nil)

// Rebalancer moves connected devices while it leads. Create it with New
// and run it with Run on every control plane replica.
type Rebalancer struct {
	cfg    Config
	reg    *registry.Registry
	cache  Cache
	signer Signer
	mover  Mover
	log    *slog.Logger
	now    func() time.Time

	leading  atomic.Bool
	policies *placement.Policies
	onMove   func(reason string, ok bool) // nil: none
}

// Option changes how New wires a Rebalancer.
type Option func(*Rebalancer)

// WithPolicies plans with p, the replica's compile-once cache of the stored
// policy, shared with Assign (default: a cache of its own).
func WithPolicies(p *placement.Policies) Option {
	return func(r *Rebalancer) {
		if p != nil {
			r.policies = p
		}
	}
}

// WithMoveHook calls fn after each move the rebalancer asked an executor to
// make, with the move's reason (policy, drain, balance) and whether the
// executor took it; fn must not block (metrics count with it).
func WithMoveHook(fn func(reason string, ok bool)) Option {
	return func(r *Rebalancer) { r.onMove = fn }
}

// New wires a rebalancer. It starts nothing and does no I/O.
func New(cfg Config, reg *registry.Registry, cache Cache, signer Signer, mover Mover, log *slog.Logger, opts ...Option) (*Rebalancer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reg == nil || cache == nil || signer == nil || mover == nil {
		return nil, errors.New("rebalance: registry, cache, signer and mover are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Rebalancer{cfg: cfg, reg: reg, cache: cache, signer: signer, mover: mover, log: log, now: time.Now, policies: placement.NewPolicies(log)}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// Leading reports whether this replica leads the rebalancer now.
func (r *Rebalancer) Leading() bool { return r.leading.Load() }

// writer is the Writer of the assignment records the rebalancer writes:
// every replica, this one included, counts such a device as pending on its
// new group until executor counts include it.
func (r *Rebalancer) writer() string { return "rebalancer@" + r.cfg.ReplicaID }

// Run campaigns for the leadership and, while it leads, rebalances, until
// ctx is cancelled; then it steps down and returns nil.
func (r *Rebalancer) Run(ctx context.Context) error {
	if err := r.cache.WaitReady(ctx); err != nil {
		return nil
	}
	// Campaign failures (etcd away) back off with jitter, from a tenth of
	// Interval up to Interval, so that replicas do not campaign in step.
	loop := retry.New(retry.Policy{Initial: r.cfg.Interval / 10, Max: r.cfg.Interval, Multiplier: 2}, r.log,
		"rebalancer campaign failed")
	for ctx.Err() == nil {
		l, err := r.reg.Campaign(ctx, registry.RebalanceElection, r.cfg.ReplicaID, r.cfg.LeaseTTL)
		if err != nil {
			if !loop.Failed(ctx, nil, err) {
				return nil
			}
			continue
		}
		loop.Succeeded()
		r.leading.Store(true)
		r.log.Info("rebalancer leading", "term", l.Rev())
		err = r.lead(ctx, l)
		r.leading.Store(false)
		l.Close()
		if ctx.Err() != nil {
			r.log.Info("rebalancer stepped down")
			return nil
		}
		r.log.Warn("rebalancer lost its leadership", "term", l.Rev(), "err", err)
	}
	return nil
}

// lead rebalances until the leadership or ctx ends.
func (r *Rebalancer) lead(ctx context.Context, l *registry.Leadership) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-l.Done():
			cancel()
		case <-ctx.Done():
		}
	}()

	t := newTerm()
	view := r.reg.NewPresenceView(r.log.With("component", "presence"))
	view.OnChange(func(id string, p *registry.Presence) { t.observe(r.now(), id, p, r.earlierMove) })
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { _ = view.Run(ctx) })

	// Carry the progress of a migration the last leader had under way.
	rctx, rcancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	prev, err := r.reg.RebalanceState(rctx)
	rcancel()
	if err == nil && !prev.Progress.StartedAt.IsZero() {
		t.started, t.finished = prev.Progress.StartedAt, prev.Progress.FinishedAt
		t.moved, t.failed = prev.Progress.Moved, prev.Progress.Failed
	}
	if err == nil && !prev.Progress.StartedAt.IsZero() && prev.Progress.FinishedAt.IsZero() {
		r.log.Info("rebalancer carries on a migration", "started", prev.Progress.StartedAt, "moved", prev.Progress.Moved, "previous_leader", prev.Leader)
	}
	if err := view.WaitReady(ctx); err != nil {
		return context.Cause(ctx)
	}
	lim := rate.NewLimiter(rate.Limit(r.cfg.Rate), 1)
	next := time.NewTimer(0)
	defer next.Stop()
	var heldUntil time.Time
	var heldWhy string
	for {
		select {
		case <-ctx.Done():
			select {
			case <-l.Done():
				return errors.New("rebalance: leadership lease lost")
			default:
				return nil
			}
		case <-next.C:
		}
		began := time.Now()
		gap, err := r.round(ctx, l, view, t, lim, &heldUntil, &heldWhy)
		if errors.Is(err, registry.ErrNotLeader) {
			return err
		}
		// The next round gap after this one began (at once if this one
		// took longer), as a ticker of that period would.
		next.Reset(max(0, gap-time.Since(began)))
	}
}

// planDuty bounds the share of the leader's time spent planning: a plan
// walks every connected device (about 36 ms of CPU at 10,000 devices on
// the development machine, linear in the fleet), so when it takes longer
// than a planDuty-th of Interval the rounds space out to planDuty times
// the plan's cost, and each round's moves are spread over that longer gap.
const planDuty = 10

// roundGap is the time from one round's start to the next's: Interval, or
// planDuty times what the last plan cost when that is longer.
func roundGap(interval, planCost time.Duration) time.Duration {
	return max(interval, planDuty*planCost)
}

// round plans once, moves what the rate and the budget of one round's gap
// allow, and stores the state. It returns the gap to the next round (see
// roundGap).
func (r *Rebalancer) round(ctx context.Context, l *registry.Leadership, view *registry.PresenceView, t *term, lim *rate.Limiter, heldUntil *time.Time, heldWhy *string) (time.Duration, error) {
	began := time.Now()
	now := r.now()
	cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	ctl, cerr := r.reg.RebalanceControl(cctx)
	cancel()
	latency := time.Since(began)
	t.expire(now, r.cfg.MoveTimeout)

	snap := r.cache.Snapshot()
	pol := r.policies.For(snap)
	migrate := snap.Policy != nil && ctl.MigrateVersion != 0 && ctl.MigrateVersion == snap.Policy.Version
	planStart := time.Now()
	plan := Make(Input{Snapshot: snap, Policy: pol, Devices: r.devices(view, snap, pol, t, now), Migrate: migrate,
		Now: now, MinInterval: r.cfg.MinInterval, Thresholds: r.cfg.Thresholds})
	planned := time.Now()
	gap := roundGap(r.cfg.Interval, planned.Sub(planStart))
	r.log.Debug("rebalance plan", "took", planned.Sub(planStart), "devices", view.Len(), "moves", len(plan.Moves),
		"policy", plan.Policy, "drain", plan.Drain, "balance", plan.Balance, "next_round_in", gap)

	_, unplanned := t.rates(now)
	if why := r.unhealthy(view, cerr, latency, unplanned); why != "" {
		if why != *heldWhy {
			r.log.Warn("rebalancer holding moves", "why", why)
		}
		*heldWhy, *heldUntil = why, now.Add(r.cfg.HoldFor)
	} else if *heldWhy != "" && !now.Before(*heldUntil) {
		r.log.Info("rebalancer no longer holding", "was", *heldWhy)
		*heldWhy = ""
	}
	all, _ := t.inFlight()
	t.mu.Lock()
	underway := !t.started.IsZero() && t.finished.IsZero()
	switch {
	case len(plan.Moves) > 0 && !underway:
		t.started, t.finished, t.moved, t.failed = now, time.Time{}, 0, 0
	case len(plan.Moves) == 0 && all == 0 && underway:
		r.log.Info("rebalancer migration done", "moved", t.moved, "failed", t.failed, "took", now.Sub(t.started).Round(time.Millisecond))
		t.finished = now
	}
	t.mu.Unlock()

	if ctl.Pause == nil && *heldWhy == "" && cerr == nil {
		// A whole gap of moves after the plan, however long it took.
		if err := r.execute(ctx, l, view, plan, t, lim, planned.Add(gap)); err != nil {
			return gap, err
		}
	}

	all, _ = t.inFlight()
	moveRate, _ := t.rates(r.now())
	t.mu.Lock()
	st := registry.RebalanceState{
		Leader: r.cfg.ReplicaID, Term: l.Rev(), UpdatedAt: r.now().UTC(), Held: *heldWhy, Paused: ctl.Pause != nil,
		Plan: registry.RebalancePlan{
			Total: len(plan.Moves), Policy: plan.Policy, Drain: plan.Drain, Balance: plan.Balance, BalanceMinimum: plan.BalanceMinimum,
			Waiting: plan.Waiting, Unmigrated: plan.Unmigrated, NoTarget: plan.NoTarget, PolicyVersion: pol.Version(), ComputedAt: now.UTC(),
		},
		Progress: registry.RebalanceProgress{
			StartedAt: t.started, FinishedAt: t.finished, Moved: t.moved, Failed: t.failed, InFlight: all, Rate: moveRate,
			ETASeconds: math.Round(10*float64(len(plan.Moves))/r.cfg.Rate) / 10,
		},
		Settings: r.cfg.settings(),
		Groups:   plan.Groups,
	}
	t.mu.Unlock()
	wctx, wcancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer wcancel()
	if err := l.PutRebalanceState(wctx, st); err != nil {
		if errors.Is(err, registry.ErrNotLeader) {
			return gap, err
		}
		if ctx.Err() == nil {
			r.log.Warn("storing the rebalancer's state", "err", err)
		}
	}
	return gap, nil
}

// earlierMove reports whether p completes a move another leader made:
// the device arrives where a rebalancer's record sent it, lately.
func (r *Rebalancer) earlierMove(p *registry.Presence) bool {
	rec, ok := r.cache.Assignment(p.DeviceID)
	return ok && rec.Writer != r.writer() && !rec.MovedAt.IsZero() && rec.GroupID == p.GroupID &&
		r.now().Sub(rec.MovedAt) < r.cfg.MoveTimeout
}

// unhealthy says why moves should wait now ("" when they need not).
func (r *Rebalancer) unhealthy(view *registry.PresenceView, cerr error, latency time.Duration, unplanned float64) string {
	switch {
	case cerr != nil:
		return "etcd unreachable"
	case !r.cache.Ready():
		return "registry cache not in sync"
	case !view.Ready():
		return "presence view not in sync"
	case latency > r.cfg.EtcdSlow:
		return fmt.Sprintf("etcd slow: a read took %v (limit %v)", latency.Round(time.Millisecond), r.cfg.EtcdSlow)
	case unplanned > r.cfg.MaxReconnectRate:
		return fmt.Sprintf("%.0f devices connecting per second besides moves (limit %.0f)", unplanned, r.cfg.MaxReconnectRate)
	}
	return ""
}

// devices lists the connected devices for the planner.
func (r *Rebalancer) devices(view *registry.PresenceView, snap *registry.Snapshot, pol *policy.Compiled, t *term, now time.Time) []Device {
	var present []registry.Presence
	view.Range(func(p registry.Presence) bool {
		present = append(present, p)
		return true
	})
	out := make([]Device, 0, len(present))
	for _, p := range present {
		d := Device{ID: p.DeviceID, Executor: p.ExecutorID, Group: p.GroupID, Weight: 1, InFlightTo: t.flightTo(p.DeviceID)}
		if rec, ok := r.cache.Assignment(p.DeviceID); ok {
			d.HasRecord, d.RecordLabel, d.MovedAt = true, rec.Label, rec.MovedAt
			if rec.Inputs != nil && rec.Inputs.Weight > 0 {
				d.Weight = rec.Inputs.Weight
			}
			d.Label = t.label(p.DeviceID, pol.Version(), rec.AssignedAt, now, func() string {
				m, _ := pol.Label(r.input(snap, rec, now))
				return m.Label
			})
		}
		if at := t.lastMoved(p.DeviceID); at.After(d.MovedAt) {
			d.MovedAt = at
		}
		out = append(out, d)
	}
	return out
}

// input is what the policy sees of a recorded device now.
func (r *Rebalancer) input(snap *registry.Snapshot, rec registry.Assignment, now time.Time) *policyv1.Input {
	in := rec.Inputs
	if in == nil {
		in = &registry.DeviceInputs{}
	}
	h, _ := r.cache.History(rec.DeviceID)
	return placement.PolicyInput(snap, rec.DeviceID, in, rec.GroupID, rec.Label, h.Decayed(now))
}

// execute makes the plan's moves, in order, while the rate limit lets one
// happen before deadline. Each move is decided and counted in flight here,
// one after the other, so that the next decision sees it; its record write
// and Move call then run concurrently with the next ones (at most
// moveWorkers at once), so that the rate, not their round trips, bounds
// the pace. Balance moves wait until no other move is planned or under
// way. It returns once every move it started has been asked for.
func (r *Rebalancer) execute(ctx context.Context, l *registry.Leadership, view *registry.PresenceView, plan Plan, t *term, lim *rate.Limiter, deadline time.Time) error {
	room := make(map[string]float64, len(plan.Room))
	for g, v := range plan.Room {
		room[g] = v
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, moveWorkers)
	var lost atomic.Bool
	for _, mv := range plan.Moves {
		if lost.Load() {
			return registry.ErrNotLeader
		}
		all, mandatory := t.inFlight()
		if all >= r.cfg.MaxInFlight {
			return nil
		}
		if mv.Reason == ReasonBalance && (plan.Mandatory() > 0 || mandatory > 0) {
			return nil
		}
		job, err := r.prepare(dctx, view, mv, room, t, lim)
		switch {
		case dctx.Err() != nil:
			return nil
		case err != nil:
			r.log.Debug("move skipped", "device", mv.Device, "reason", mv.Reason, "err", err)
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			t.abort(mv.Device)
			return nil
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := r.run(ctx, l, job, t); errors.Is(err, registry.ErrNotLeader) {
				lost.Store(true)
			}
		})
	}
	wg.Wait()
	if lost.Load() {
		return registry.ErrNotLeader
	}
	return nil
}

// moveWorkers bounds the moves whose record write and Move call run at
// once.
const moveWorkers = 32

// errSkip reports a planned move that is not worth making any more.
var errSkip = errors.New("rebalance: move skipped")

// job is a decided move.
type job struct {
	mv       Move
	rec      registry.Assignment
	d        placement.Decision
	w        float64
	addr     string
	decideAt time.Time
}

// prepare decides where a device goes now, waits for the rate limit
// (within dctx) and counts the move in flight.
func (r *Rebalancer) prepare(dctx context.Context, view *registry.PresenceView, mv Move, room map[string]float64, t *term, lim *rate.Limiter) (job, error) {
	rec, ok := r.cache.Assignment(mv.Device)
	if !ok {
		return job{}, fmt.Errorf("%w: no assignment record", errSkip)
	}
	p, ok := view.Get(mv.Device)
	if !ok || p.ExecutorID != mv.Executor {
		return job{}, fmt.Errorf("%w: the device left %s", errSkip, mv.Executor)
	}
	snap := r.cache.Snapshot()
	pol := r.policies.For(snap)
	now := r.now()
	w := 1.0
	if rec.Inputs != nil && rec.Inputs.Weight > 0 {
		w = rec.Inputs.Weight
	}
	input := r.input(snap, rec, now)
	m, merr := pol.Label(input)
	// The rules see the device as it is; sticky must not keep it where it
	// is being moved from.
	free := proto.CloneOf(input)
	free.History.LastGroup = ""
	bw := 1.0
	if pol.BalanceByLoad() {
		bw = w
	}
	d, err := placement.Decide(snap, pol, placement.Request{Input: free, Weight: w, Match: &m, MatchErr: merr}, t.pending(mv.Executor, bw))
	if err != nil {
		return job{}, fmt.Errorf("%w: %v", errSkip, err)
	}
	if d.Group.ID == mv.Group && mv.Reason != ReasonDrain {
		return job{}, fmt.Errorf("%w: the policy keeps it in %s", errSkip, mv.Group)
	}
	if mv.Reason == ReasonBalance && room[d.Group.ID] < bw {
		return job{}, fmt.Errorf("%w: %s has no room for balance", errSkip, d.Group.ID)
	}
	if err := lim.Wait(dctx); err != nil {
		return job{}, err
	}
	if mv.Reason == ReasonBalance {
		room[d.Group.ID] -= bw
	}
	addr := p.ControlAddress()
	if e, ok := snap.Executors[mv.Executor]; ok {
		addr = e.ControlAddress()
	}
	now = r.now()
	t.start(&flight{device: mv.Device, from: mv.Group, fromExec: mv.Executor, to: d.Group.ID, toExec: d.Endpoints[0].Executor.ID, reason: mv.Reason, w: bw, at: now})
	return job{mv: mv, rec: rec, d: d, w: w, addr: addr, decideAt: now}, nil
}

// run makes a prepared move: it stores the device's new assignment record
// fenced by the leadership, then asks its executor to redirect it there
// with a fresh token. A failed move is counted and its record put back.
func (r *Rebalancer) run(ctx context.Context, l *registry.Leadership, j job, t *term) error {
	mv, d := j.mv, j.d
	// The token carries the identity the device proved at Assign, as
	// Assign's own token does.
	tok, exp, err := r.signer.SignBound(mv.Device, d.Group.ID, d.Label, j.w, r.cfg.TokenTTL,
		token.Binding{Thumbprint: j.rec.Thumbprint, Enrollment: j.rec.Enrollment})
	if err != nil {
		t.abort(mv.Device)
		r.log.Warn("move not made: signing failed", "device", mv.Device, "err", err)
		return nil
	}
	next := j.rec
	next.GroupID, next.Label, next.Rule = d.Group.ID, d.Label, d.Rule
	next.AssignedAt, next.MovedAt = j.decideAt.UTC(), j.decideAt.UTC()
	next.Reason = "rebalance (" + mv.Reason.String() + "): " + d.Reason
	next.PolicyVersion, next.Writer = d.PolicyVersion, r.writer()
	wctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	if err := l.PutAssignments(wctx, []registry.Assignment{next}); err != nil {
		t.abort(mv.Device)
		if !errors.Is(err, registry.ErrNotLeader) && ctx.Err() == nil {
			r.log.Warn("move not made: its record could not be stored", "device", mv.Device, "err", err)
		}
		return err
	}
	eps := make([]*controlplanev1.Endpoint, len(d.Endpoints))
	for i, e := range d.Endpoints {
		eps[i] = &controlplanev1.Endpoint{ExecutorId: e.Executor.ID, Address: e.Executor.Address, Utilization: e.Utilization(), TlsServerName: e.Executor.TLSName}
	}
	err = r.mover.Move(wctx, j.addr, &executorv1.MoveRequest{
		DeviceId: mv.Device,
		Destination: &controlplanev1.Destination{
			GroupId: d.Group.ID, Label: d.Label, Endpoints: eps, Token: tok, TokenExpiresAt: timestamppb.New(exp),
		},
		Message:  fmt.Sprintf("rebalance (%s): to group %s", mv.Reason, d.Group.ID),
		MaxDelay: durationpb.New(r.cfg.RedirectSpread),
	})
	if r.onMove != nil {
		r.onMove(mv.Reason.String(), err == nil)
	}
	if err != nil {
		t.abort(mv.Device)
		// The device stays: put its record back, so that it reads as it is.
		if perr := l.PutAssignments(wctx, []registry.Assignment{j.rec}); perr != nil && !errors.Is(perr, registry.ErrNotLeader) {
			r.log.Warn("restoring the assignment record of a failed move", "device", mv.Device, "err", perr)
		}
		r.log.Info("move failed", "device", mv.Device, "executor", mv.Executor, "to_group", d.Group.ID, "err", err)
		return nil
	}
	r.log.Debug("device moving", "device", mv.Device, "reason", mv.Reason, "from", mv.Group, "to", d.Group.ID)
	return nil
}
