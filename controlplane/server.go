package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthproject/berth/fleet"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/identity"
	"github.com/berthproject/berth/internal/refusallog"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// Snapshotter is the read side of the registry the control plane needs: a
// watch-fed cache, run by the caller. *registry.Cache implements it.
type Snapshotter interface {
	// Snapshot returns the current immutable snapshot.
	Snapshot() *registry.Snapshot
	// Assignment returns a device's cached assignment record.
	Assignment(deviceID string) (registry.Assignment, bool)
	// OnAssignment registers a callback for assignment records the watch
	// delivers; called before Run.
	OnAssignment(fn func(registry.Assignment))
	// History returns a device's cached traffic history record.
	History(deviceID string) (registry.History, bool)
}

// AssignmentStore writes assignment records and policies.
// *registry.Registry implements it.
type AssignmentStore interface {
	PutAssignment(ctx context.Context, a registry.Assignment) error
	PutPolicy(ctx context.Context, p registry.StoredPolicy, basedOn int64) (int64, error)
}

// Signer mints assignment tokens. *token.Signer implements it.
type Signer interface {
	SignBound(deviceID, groupID, label string, weight float64, ttl time.Duration, b token.Binding) (string, time.Time, error)
}

// Authenticator says which device calls Assign. *identity.Authenticator
// implements it; its errors wrap identity.ErrUnauthenticated or
// identity.ErrForbidden.
type Authenticator interface {
	Authenticate(ctx context.Context, requested string) (identity.Identity, error)
}

// Option changes how New wires a Server.
type Option func(*Server)

// WithAuthenticator makes Assign authenticate every caller with a before
// anything else: a refused caller gets UNAUTHENTICATED or
// PERMISSION_DENIED, and nothing is reserved or written for it. The token
// of an authenticated device is bound to its identity. Without it, Assign
// takes the device id on the caller's word (benchmarks and tests only: the
// composition roots always set one).
func WithAuthenticator(a Authenticator) Option {
	return func(s *Server) { s.auth = a }
}

// WithPolicies decides with p, the replica's compile-once cache of the
// stored policy, shared with the rebalancer (default: a cache of its own).
func WithPolicies(p *placement.Policies) Option {
	return func(s *Server) {
		if p != nil {
			s.policies = p
		}
	}
}

// Limiter limits calls per caller. *ratelimit.Limiter implements it.
type Limiter interface {
	// Check takes a token for (method, id), or returns the refusal
	// status (RESOURCE_EXHAUSTED with a retry hint).
	Check(ctx context.Context, method, id string) error
}

// WithLimiter limits each device's Assigns, counted against its
// authenticated id (so a caller naming another device's id cannot spend
// that device's allowance: it is refused before it is counted).
func WithLimiter(l Limiter) Option {
	return func(s *Server) { s.limit = l }
}

var (
	_ Snapshotter     = (*registry.Cache)(nil)
	_ AssignmentStore = (*registry.Registry)(nil)
	_ Signer          = (*token.Signer)(nil)
	_ Authenticator   = (*identity.Authenticator)(nil)
)

// Server is a control plane replica.
type Server struct {
	controlplanev1.UnimplementedControlPlaneServiceServer

	cfg    Config
	cache  Snapshotter
	store  AssignmentStore
	signer Signer
	auth   Authenticator // nil: device ids taken on the caller's word
	limit  Limiter       // nil: Assigns not limited per device
	log    *slog.Logger
	// refused logs refused Assigns at warn, at most once a second per
	// reason (the counts are in Stats).
	refused *refusallog.Log
	now     func() time.Time

	res      *reservations
	admit    *admission // nil: no rate bound
	writes   writeBreaker
	inFlight atomic.Int64
	stats    counters
	policies *placement.Policies
	tokens   *tokenCache
	labels   *labelMemo // nil when disabled
	// hints are the reconnect hints of every Assign answer, built once:
	// answers share them, so nothing may modify an answer's Reconnect.
	hints *controlplanev1.ReconnectHints
}

// counters are the control plane's statistics.
type counters struct {
	assigns, writes, writeErrors, shed, refused, unauthenticated, forbidden atomic.Int64
}

// Stats is a copy of the control plane's counters.
type Stats struct {
	// Assigns answered with a destination.
	Assigns int64
	// Writes of assignment records (changed assignments).
	Writes int64
	// WriteErrors of assignment records.
	WriteErrors int64
	// Shed Assigns refused with RESOURCE_EXHAUSTED because of load.
	Shed int64
	// Refused Assigns for bad input or no usable group.
	Refused int64
	// Unauthenticated Assigns: missing, wrong or expired credentials.
	Unauthenticated int64
	// Forbidden Assigns: a known identity without the right (another
	// device's id, a disabled enrollment, a revoked device).
	Forbidden int64
}

// New wires a control plane. It starts nothing and does no I/O.
func New(cfg Config, cache Snapshotter, store AssignmentStore, signer Signer, log *slog.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cache == nil || store == nil || signer == nil {
		return nil, errors.New("controlplane: cache, store and signer are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, cache: cache, store: store, signer: signer, log: log.With("replica", cfg.ReplicaID), now: time.Now}
	s.refused = refusallog.New(s.log, "Assign refused", refusallog.DefaultInterval, nil)
	b := cfg.Reconnect
	s.hints = &controlplanev1.ReconnectHints{
		BaseDelay:  durationpb.New(b.BaseDelay),
		Multiplier: b.Multiplier,
		Jitter:     b.Jitter,
		MaxDelay:   durationpb.New(b.MaxDelay),
	}
	s.writes.probeEvery = cfg.RetryAfter
	s.admit = newAdmission(cfg.AdmitRate, cfg.AdmitBurst, cfg.RetryAfter, s.now)
	s.res = newReservations(cfg.ReplicaID, cfg.ReservationGrace, cfg.ReservationMaxAge, s.now)
	s.res.unlisted = cfg.ReservationUnlisted
	s.policies = placement.NewPolicies(s.log)
	if cfg.TokenCacheSize > 0 {
		s.tokens = newTokenCache(cfg.TokenCacheSize)
	}
	s.labels = newLabelMemo(cfg.LabelMemoSize)
	for _, o := range opts {
		o(s)
	}
	cache.OnAssignment(s.learn)
	return s, nil
}

// KnownExecutors returns how many executors the control plane's registry
// cache holds: once it matches the fleet, Assign sees every executor.
func (s *Server) KnownExecutors() int { return len(s.cache.Snapshot().Executors) }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Assigns: s.stats.assigns.Load(), Writes: s.stats.writes.Load(), WriteErrors: s.stats.writeErrors.Load(),
		Shed: s.stats.shed.Load(), Refused: s.stats.refused.Load(),
		Unauthenticated: s.stats.unauthenticated.Load(), Forbidden: s.stats.forbidden.Load(),
	}
}

// Register registers ControlPlaneService on s. The caller owns the gRPC
// server and the registry cache's Run.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	controlplanev1.RegisterControlPlaneServiceServer(r, s)
}

// Assign implements ControlPlaneService.Assign.
func (s *Server) Assign(ctx context.Context, req *controlplanev1.AssignRequest) (*controlplanev1.AssignResponse, error) {
	if n := s.inFlight.Add(1); n > int64(s.cfg.MaxInFlight) {
		s.inFlight.Add(-1)
		s.stats.shed.Add(1)
		return nil, shed(ctx, "control plane overloaded; retry later", s.cfg.RetryAfter)
	}
	defer s.inFlight.Add(-1)
	if s.admit != nil {
		if hint, ok := s.admit.admit(); !ok {
			s.stats.shed.Add(1)
			return nil, shed(ctx, fmt.Sprintf("control plane admitting at most %g Assigns a second; retry in %v", s.cfg.AdmitRate, hint.Round(time.Millisecond)), hint)
		}
	}
	id, err := s.authenticate(ctx, req)
	if err != nil {
		return nil, err
	}
	if s.limit != nil && req.GetDeviceId() != "" {
		if err := s.limit.Check(ctx, controlplanev1.ControlPlaneService_Assign_FullMethodName, "device:"+req.GetDeviceId()); err != nil {
			s.stats.shed.Add(1)
			return nil, err
		}
	}
	if err := validateAssign(req); err != nil {
		s.stats.refused.Add(1)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp, err := s.assign(ctx, req, id)
	if err != nil {
		s.stats.refused.Add(1)
		return nil, toStatus(err, s.cfg.RetryAfter)
	}
	s.stats.assigns.Add(1)
	return resp, nil
}

// learn counts a device another replica assigned as pending (on the
// executor its ticket names, else on its group), so that replicas do not
// herd into one group between executor heartbeats.
func (s *Server) learn(a registry.Assignment) {
	if a.Writer == "" || a.Writer == s.cfg.ReplicaID {
		return
	}
	w := 1.0
	if a.Inputs != nil && a.Inputs.Weight > 0 && s.policies.Current().BalanceByLoad() {
		w = a.Inputs.Weight
	}
	if t, err := fleet.ParseTicket(a.Reservation); err == nil && t.Replica == a.Writer {
		s.res.learn(t, w)
		return
	}
	s.res.addGroup(a.GroupID, w)
}

// policyFor returns the compiled policy of snap (see placement.Policies).
func (s *Server) policyFor(snap *registry.Snapshot) *policy.Compiled { return s.policies.For(snap) }

// authenticate says who calls, before anything is read or written for the
// request; a certificate's device id fills an empty device_id. It returns
// the caller's binding, and a status when the caller is refused.
func (s *Server) authenticate(ctx context.Context, req *controlplanev1.AssignRequest) (token.Binding, error) {
	if s.auth == nil {
		return token.Binding{}, nil
	}
	if n := len(req.GetDeviceId()); n > registry.MaxIDLen {
		s.stats.refused.Add(1)
		return token.Binding{}, status.Errorf(codes.InvalidArgument, "device_id is %d bytes; at most %d", n, registry.MaxIDLen)
	}
	id, err := s.auth.Authenticate(ctx, req.GetDeviceId())
	switch {
	case errors.Is(err, identity.ErrForbidden):
		s.stats.forbidden.Add(1)
		s.refused.Refused("permission denied", "device", req.GetDeviceId(), "peer", peerAddr(ctx), "why", err.Error())
		return token.Binding{}, status.Error(codes.PermissionDenied, err.Error())
	case err != nil:
		s.stats.unauthenticated.Add(1)
		s.refused.Refused("unauthenticated", "device", req.GetDeviceId(), "peer", peerAddr(ctx), "why", err.Error())
		return token.Binding{}, status.Error(codes.Unauthenticated, err.Error())
	}
	if req.GetDeviceId() == "" {
		req.DeviceId = id.DeviceID
	}
	return token.Binding{Thumbprint: id.Thumbprint, Enrollment: id.Enrollment}, nil
}

// assign decides, reserves, records and signs.
func (s *Server) assign(ctx context.Context, req *controlplanev1.AssignRequest, b token.Binding) (*controlplanev1.AssignResponse, error) {
	snap := s.cache.Snapshot()
	pol := s.policyFor(snap)
	prev, hasPrev := s.cache.Assignment(req.GetDeviceId())
	traffic := s.history(req.GetDeviceId())
	// The device's inputs and its label rules' outcome, in one allocation.
	sc := &struct {
		in registry.DeviceInputs
		m  policy.Match
	}{in: inputsOf(req)}
	in := &sc.in
	in.Weight = placement.LoadWeight(traffic)
	lastGroup, lastLabel := lastOf(prev, hasPrev, req.GetPrevious())
	preq := placement.Request{Input: placement.PolicyInput(snap, req.GetDeviceId(), in, lastGroup, lastLabel, traffic), Weight: in.Weight}
	// The rules are the costly part of a decision: run them before taking
	// the reservations lock, which serializes placements.
	var ok bool
	sc.m, ok = s.labels.get(req.GetDeviceId(), pol.Version(), preq.Input)
	var merr error
	if !ok {
		sc.m, merr = pol.Label(preq.Input)
		if merr == nil {
			s.labels.put(req.GetDeviceId(), pol.Version(), preq.Input, sc.m)
		}
	}
	preq.Match, preq.MatchErr = &sc.m, merr
	w := 1.0
	if pol.BalanceByLoad() {
		w = in.Weight
	}
	var d placement.Decision
	var ticket fleet.Ticket
	var err error
	s.res.locked(func() {
		d, err = placement.Decide(snap, pol, preq, s.res)
		if err == nil {
			ticket = s.res.addLocked(d.Endpoints[0].Executor.ID, w)
		}
	})
	if d.RuleErrors != nil {
		s.log.Debug("policy rules failed to evaluate", "device", req.GetDeviceId(), "err", d.RuleErrors)
	}
	if err != nil {
		return nil, err
	}
	if !hasPrev || prev.GroupID != d.Group.ID || prev.Label != d.Label || !sameInputs(prev.Inputs, in) ||
		prev.Thumbprint != b.Thumbprint || prev.Enrollment != b.Enrollment {
		// Where the device can stay if the record cannot be written.
		recorded, canKeep := recordedCandidate(d, prev, hasPrev)
		err := errRegistryDown
		if s.writes.allow(s.now()) {
			timeout := s.cfg.WriteTimeout
			if canKeep {
				timeout = min(timeout, s.cfg.KeepWriteTimeout)
			}
			err = s.record(ctx, req.GetDeviceId(), d, in, b, ticket, timeout)
			if err != nil && ctx.Err() != nil {
				s.writes.abandon() // the caller left: says nothing of etcd
				s.withdraw(ticket)
				return nil, err
			}
			s.writes.done(err == nil, s.now())
		}
		if err != nil {
			// etcd cannot take the record: a known device whose recorded
			// group is still usable goes back there, which needs no write.
			if !canKeep {
				s.withdraw(ticket)
				return nil, err
			}
			d = s.keepRecorded(d, recorded, prev.Label, w, &ticket)
			s.log.Debug("registry unavailable: device kept in its recorded group", "device", req.GetDeviceId(), "group", d.Group.ID)
		}
	}
	tok, exp, err := s.token(req.GetDeviceId(), d, in.Weight, b)
	if err != nil {
		s.withdraw(ticket)
		return nil, err
	}
	return answer(d, tok, exp, ticket.String(), s.hints), nil
}

// answerEndpoints is how many endpoints an answer holds without another
// allocation.
const answerEndpoints = 4

// answerMessages are the messages of one Assign answer, allocated
// together: an answer is built on every Assign.
type answerMessages struct {
	resp controlplanev1.AssignResponse
	dest controlplanev1.Destination
	exp  timestamppb.Timestamp
	eps  [answerEndpoints]controlplanev1.Endpoint
	ptrs [answerEndpoints]*controlplanev1.Endpoint
}

// answer builds the answer to an Assign decided d, with its token, the
// token's expiry, the reservation ticket and the shared reconnect hints.
func answer(d placement.Decision, tok string, exp time.Time, ticket string, hints *controlplanev1.ReconnectHints) *controlplanev1.AssignResponse {
	a := &answerMessages{
		dest: controlplanev1.Destination{GroupId: d.Group.ID, Label: d.Label, Token: tok, Reservation: ticket},
		exp:  timestamppb.Timestamp{Seconds: exp.Unix(), Nanos: int32(exp.Nanosecond())},
	}
	var vals []controlplanev1.Endpoint
	if n := len(d.Endpoints); n <= answerEndpoints {
		vals, a.dest.Endpoints = a.eps[:n], a.ptrs[:n:n]
	} else {
		vals, a.dest.Endpoints = make([]controlplanev1.Endpoint, n), make([]*controlplanev1.Endpoint, n)
	}
	for i, e := range d.Endpoints {
		v := &vals[i]
		v.ExecutorId, v.Address, v.Utilization, v.TlsServerName = e.Executor.ID, e.Executor.Address, e.Utilization(), e.Executor.TLSName
		a.dest.Endpoints[i] = v
	}
	a.dest.TokenExpiresAt = &a.exp
	a.resp.Destination, a.resp.Reconnect, a.resp.Reason = &a.dest, hints, d.Reason
	return &a.resp
}

// withdraw cancels the reservation of an Assign that fails after it was
// made: its device is not on its way.
func (s *Server) withdraw(t fleet.Ticket) {
	s.res.locked(func() { s.res.cancelLocked(t) })
}

// recordedCandidate returns the device's recorded group among d's usable
// candidates under the recorded label, if it is one.
func recordedCandidate(d placement.Decision, prev registry.Assignment, hasPrev bool) (placement.Candidate, bool) {
	if !hasPrev {
		return placement.Candidate{}, false
	}
	for _, c := range d.Candidates {
		if c.Group.ID == prev.GroupID && c.Label == prev.Label && c.Dropped == "" && len(c.Endpoints) > 0 {
			return c, true
		}
	}
	return placement.Candidate{}, false
}

// keepRecorded turns d into a decision for the device's recorded group c
// under its recorded label (see recordedCandidate) and moves the
// reservation there (ticket is updated). It is the answer while the
// registry cannot record a change: the device's record stays true.
func (s *Server) keepRecorded(d placement.Decision, c placement.Candidate, label string, w float64, ticket *fleet.Ticket) placement.Decision {
	d.Group, d.Label, d.Endpoints = *c.Group, label, c.Endpoints
	d.Method = "recorded"
	d.Reason = "registry unavailable: kept in recorded group " + c.Group.ID
	s.res.locked(func() {
		s.res.cancelLocked(*ticket)
		*ticket = s.res.addLocked(c.Endpoints[0].Executor.ID, w)
	})
	return d
}

// history returns the device's traffic history as of now (zero without a
// record).
func (s *Server) history(deviceID string) registry.History {
	h, ok := s.cache.History(deviceID)
	if !ok {
		return registry.History{}
	}
	return h.Decayed(s.now())
}

// token returns a token for the decision: the device's cached one when it
// still fits, else a fresh signature.
func (s *Server) token(device string, d placement.Decision, weight float64, b token.Binding) (string, time.Time, error) {
	now := s.now()
	if tok, exp, ok := s.tokens.get(device, d.Group.ID, d.Label, weight, b, now, s.cfg.TokenTTL); ok {
		return tok, exp, nil
	}
	tok, exp, err := s.signer.SignBound(device, d.Group.ID, d.Label, weight, s.cfg.TokenTTL, b)
	if err != nil {
		return "", time.Time{}, err
	}
	s.tokens.put(device, cachedToken{group: d.Group.ID, label: d.Label, weight: weight, binding: b, token: tok, exp: exp})
	return tok, exp, nil
}

// record writes the device's assignment record.
func (s *Server) record(ctx context.Context, deviceID string, d placement.Decision, in *registry.DeviceInputs, b token.Binding, t fleet.Ticket, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := s.store.PutAssignment(wctx, registry.Assignment{
		DeviceID: deviceID, GroupID: d.Group.ID, Label: d.Label, AssignedAt: s.now().UTC(),
		Rule: d.Rule, Reason: d.Reason, PolicyVersion: d.PolicyVersion, Writer: s.cfg.ReplicaID, Inputs: in,
		Thumbprint: b.Thumbprint, Enrollment: b.Enrollment, Reservation: t.String(),
	})
	if err != nil {
		s.stats.writeErrors.Add(1)
		s.log.Warn("writing assignment record", "device", deviceID, "group", d.Group.ID, "err", err)
		return fmt.Errorf("%w: %v", errRegistryWrite, err)
	}
	s.stats.writes.Add(1)
	return nil
}

// peerAddr is the address of ctx's caller, for logs ("" when unknown).
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// errRegistryWrite wraps a failed assignment write.
var errRegistryWrite = errors.New("controlplane: registry write failed")

// errRegistryDown is the answer, without trying, while recent writes of
// assignment records failed (see writeBreaker).
var errRegistryDown = fmt.Errorf("%w: writes are failing; not tried", errRegistryWrite)
