package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/refusallog"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/registry"
)

// ServiceName is the health-checked name of the service an executor serves.
const ServiceName = "berth.executor.v1.ExecutorService"

// stopTimeout bounds the graceful part of stopping the gRPC server, after
// the drain; streams still open then (only ones that never sent a Hello)
// are cut.
const stopTimeout = time.Second

// Server holds the Connect streams of one executor. Create it with New and
// start it with Run; its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	verifier Verifier
	reg      Registrar
	queue    Queue                            // nil: no queue drain on connect
	usage    UsageRecorder                    // nil: usage is not reported
	trust    Trust                            // nil: no revocation checks
	creds    credentials.TransportCredentials // nil: plaintext
	log      *slog.Logger

	running atomic.Bool
	// group owns every goroutine of Run, including the streams' senders
	// and queue drains. Set by Run before the server serves.
	group *errgroup.Group

	mu       sync.Mutex
	sessions map[string]*session // by device id
	left     chan struct{}       // closed and renewed whenever a session leaves
	draining bool
	rpc      *rpcserver.Server // set by Run
	reported report            // last counts given to the Registrar
	// admitted are the reservations admitted, reported with the counts.
	admitted admittedMarks
	// beats pings the sessions; a session is in it while admitted.
	beats *heartbeat

	// subs are the open Subscribe streams; subsClosed is closed at
	// shutdown, which ends them.
	subMu      sync.RWMutex
	subs       map[*subscriber]struct{}
	subsClosed chan struct{}
	// dropLogAt is when a dropped publish was last logged (Unix ns).
	dropLogAt atomic.Int64

	stats counters
	// authLog logs refused credentials (device and service tokens) at
	// warn, rate-limited, and counts them by reason.
	authLog *refusallog.Log
	// publishLog logs refused publishes, rate-limited.
	publishLog *refusallog.Log
	// cutLog logs streams cut because their device does not read (a full
	// send queue, a send blocked too long), at warn, rate-limited.
	cutLog *refusallog.Log
	// weight is the sum of the load weights of the sessions, reported
	// as the executor's load.
	weight float64
	// timeouts are the queue drains' coarse timeouts (see coarseTimers).
	timeouts *coarseTimers
}

// New validates cfg and wires the dependencies. It starts nothing and does
// no I/O. log may be nil. v verifies both the devices' assignment tokens
// and the control planes' service tokens.
func New(cfg Config, v Verifier, r Registrar, log *slog.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if v == nil || r == nil {
		return nil, fmt.Errorf("%w: a Verifier and a Registrar are required", ErrInvalidConfig)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if cfg.SubscribeBuffer == 0 {
		cfg.SubscribeBuffer = defaultSubscribeBuffer
	}
	s := &Server{
		cfg:        cfg,
		verifier:   v,
		reg:        r,
		queue:      o.queue,
		usage:      o.usage,
		trust:      o.trust,
		creds:      o.creds,
		log:        log,
		authLog:    refusallog.New(log, "authentication refused", refusallog.DefaultInterval, nil),
		publishLog: refusallog.New(log, "publish refused", refusallog.DefaultInterval, nil),
		cutLog:     refusallog.New(log, "stream cut", refusallog.DefaultInterval, nil),
		sessions:   make(map[string]*session),
		left:       make(chan struct{}),
		subs:       make(map[*subscriber]struct{}),
		subsClosed: make(chan struct{}),
		beats:      newHeartbeat(cfg.PingInterval),
		timeouts:   newCoarseTimers(nil),
	}
	if s.trust != nil {
		s.trust.OnChange(s.trustChanged)
	}
	r.OnReplaced(s.replacedElsewhere)
	return s, nil
}

// Run serves ExecutorService and ExecutorInternalService on lis until ctx
// is cancelled, then shuts down in the order the package documentation
// gives and returns nil. It returns an error if serving or the Registrar
// fails, after the same shutdown. Run closes lis. It may be called once;
// later calls return an error at once and leave their listener alone. A
// Server whose Config has an InternalAddress is run with RunSplit instead.
func (s *Server) Run(ctx context.Context, lis net.Listener) error {
	return s.RunSplit(ctx, lis, nil)
}

// RunSplit is Run with ExecutorInternalService served on internal only:
// lis serves devices (ExecutorService), internal serves control planes,
// and each refuses the other's service with UNIMPLEMENTED and a message
// that says where it is served; both serve the health service, with the
// same credentials and limits. internal is what Config.InternalAddress
// advertises: RunSplit refuses (at once, leaving both listeners alone) an
// internal listener without an InternalAddress, and the reverse. A nil
// internal is Run. RunSplit closes both listeners.
func (s *Server) RunSplit(ctx context.Context, lis, internal net.Listener) error {
	switch {
	case internal != nil && s.cfg.InternalAddress == "":
		return fmt.Errorf("%w: an internal listener needs Config.InternalAddress, which control planes are told", ErrInvalidConfig)
	case internal == nil && s.cfg.InternalAddress != "":
		return fmt.Errorf("%w: Config.InternalAddress %s needs an internal listener (RunSplit)", ErrInvalidConfig, s.cfg.InternalAddress)
	}
	if !s.running.CompareAndSwap(false, true) {
		return errRunTwice
	}
	rpc, irpc := s.newServers(internal != nil)

	var g errgroup.Group
	s.group = &g
	// runCtx ends serving: cancelled with ctx, or when a part fails.
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	// The Registrar outlives the streams: its lease is revoked last.
	regCtx, stopReg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReg()

	s.mu.Lock()
	s.rpc = rpc
	s.reg.Update(func(e *registry.Executor) {
		e.ID, e.GroupID, e.Address, e.Capacity = s.cfg.ID, s.cfg.GroupID, s.cfg.Address, s.cfg.Capacity
		e.InternalAddress = s.cfg.InternalAddress
		e.Connections, e.Load, e.Draining = s.reported.conns, s.reported.load, s.draining
		e.Admitted = s.admitted.snapshot()
	})
	s.mu.Unlock()

	g.Go(func() error {
		// ErrServerStopped: the shutdown came before Serve started.
		if err := rpc.GRPC.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			stop(err)
			return fmt.Errorf("executor: serve: %w", err)
		}
		return nil
	})
	if irpc != nil {
		g.Go(func() error {
			if err := irpc.GRPC.Serve(internal); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				stop(err)
				return fmt.Errorf("executor: serve internal listener: %w", err)
			}
			return nil
		})
		// Control planes keep delivering to the devices that stay while
		// the executor drains: the internal health does not follow Drain.
		irpc.SetServing(true, InternalServiceName)
	}
	s.mu.Lock()
	if !s.draining {
		rpc.SetServing(true, ServiceName)
	}
	s.mu.Unlock()
	if irpc != nil {
		s.log.Info("executor serving", "address", s.cfg.Address, "listen", lis.Addr().String(),
			"internal_address", s.cfg.InternalAddress, "internal_listen", internal.Addr().String(), "group", s.cfg.GroupID, "capacity", s.cfg.Capacity)
	} else {
		s.log.Info("executor serving", "address", s.cfg.Address, "listen", lis.Addr().String(), "group", s.cfg.GroupID, "capacity", s.cfg.Capacity)
	}

	g.Go(func() error {
		if err := s.reg.Run(regCtx); err != nil {
			stop(err)
			return fmt.Errorf("executor: registration: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		s.reportUsage(runCtx, UsageInterval)
		return nil
	})
	g.Go(func() error {
		s.runHeartbeat(runCtx)
		return nil
	})
	g.Go(func() error {
		<-runCtx.Done()
		s.shutdown(rpc, irpc)
		stopReg()
		return nil
	})
	return g.Wait()
}

// shutdown drains, closes what remains and stops the gRPC servers (irpc,
// the internal listener's, may be nil).
func (s *Server) shutdown(rpc, irpc *rpcserver.Server) {
	s.log.Info("executor shutting down: draining", "streams", s.Sessions(), "timeout", s.cfg.DrainTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	err := s.Drain(ctx)
	cancel()
	if err != nil {
		n := s.closeAll()
		s.log.Warn("executor drain timed out; closing the remaining streams", "streams", n)
	}
	s.closeSubscribers()
	if irpc == nil {
		rpc.Stop(stopTimeout)
	} else {
		var wg sync.WaitGroup
		wg.Go(func() { rpc.Stop(stopTimeout) })
		wg.Go(func() { irpc.Stop(stopTimeout) })
		wg.Wait()
	}
	s.log.Info("executor stopped")
}

// closeAll closes every session with Goodbye{SHUTDOWN} and returns how many
// there were.
func (s *Server) closeAll() int {
	all := s.snapshot()
	const msg = "executor shutting down"
	for _, ss := range all {
		ss.close(closeReason{
			err:     streamErrorf(errShutdown, msg),
			goodbye: &executorv1.Goodbye{Reason: executorv1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN, Message: msg},
		}, closeGrace)
	}
	return len(all)
}

// Drain stops admitting streams (new ones get UNAVAILABLE "executor
// draining"), marks the executor NOT_SERVING and its registry record
// Draining, and sends every open stream a Redirect{DRAINING} with max_delay
// RedirectSpread. It then waits until every device has left and returns nil,
// or returns an error when ctx is done first. The executor keeps serving the
// devices that stay. Drain may be called more than once; each stream gets
// one Redirect.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	if !s.draining {
		s.draining = true
		if s.rpc != nil {
			s.rpc.SetServing(false, ServiceName)
		}
		s.reg.Update(func(e *registry.Executor) { e.Draining = true })
		s.log.Info("executor draining", "streams", len(s.sessions))
	}
	s.mu.Unlock()

	redirect := &executorv1.Redirect{
		Reason:   executorv1.RedirectReason_REDIRECT_REASON_DRAINING,
		Message:  fmt.Sprintf("executor %s is draining; call Assign again", s.cfg.ID),
		MaxDelay: durationpb.New(s.cfg.RedirectSpread),
	}
	for _, ss := range s.snapshot() {
		if ss.redirected.CompareAndSwap(false, true) {
			// A full queue closes the stream: the device leaves either way.
			_ = ss.enqueue(&executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Redirect{Redirect: redirect}})
		}
	}
	return s.waitEmpty(ctx)
}

// Deliver queues m for deviceID's stream without waiting for the device
// (fire and forget; ExecutorInternalService.Deliver is the delivery that
// waits for the Ack). It never blocks: it returns an error wrapping
// ErrNotConnected when the device has no open stream here, and
// ErrSendQueueFull when the stream's queue was full (the stream is then
// closed, see the package documentation). A nil error means queued, not
// delivered: the device confirms with an Ack (Hooks.OnAck). Deliver takes
// ownership of m.
func (s *Server) Deliver(ctx context.Context, deviceID string, m *executorv1.Message) error {
	if m == nil {
		return errors.New("executor: deliver: nil message")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	ss := s.sessions[deviceID]
	s.mu.Unlock()
	if ss == nil {
		return fmt.Errorf("%w: %s", ErrNotConnected, deviceID)
	}
	if err := ss.enqueue(&executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Message{Message: m}}); err != nil {
		return fmt.Errorf("%w: %s", err, deviceID)
	}
	return nil
}

// Sessions returns the number of devices with an open stream.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Stats returns the executor's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n, draining := len(s.sessions), s.draining
	s.mu.Unlock()
	s.subMu.RLock()
	subs := len(s.subs)
	s.subMu.RUnlock()
	return Stats{
		Sessions:         n,
		Accepted:         s.stats.accepted.Load(),
		Refused:          s.stats.refusedCopy(),
		Replaced:         s.stats.replaced.Load(),
		Timeouts:         s.stats.timeouts.Load(),
		Revoked:          s.stats.revoked.Load(),
		Stuck:            s.stats.stuck.Load(),
		FramesReceived:   s.stats.frames.Load(),
		Delivering:       int(s.stats.waiting.Load()),
		Subscribers:      subs,
		PublishesDropped: s.stats.dropped.Load(),
		PublishesRefused: s.stats.publishesRefused.Load(),
		AuthRefused:      s.authLog.Counts(),
		QueueDelivered:   s.stats.queueDelivered.Load(),
		QueueExpired:     s.stats.queueExpired.Load(),
		QueueReadsSpared: s.stats.queueReadsSpared.Load(),
		Draining:         draining,
		Registered:       s.reg.Registered(),
	}
}
