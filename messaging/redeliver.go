package messaging

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/retry"
	"github.com/berthproject/berth/internal/tracing"
	"github.com/berthproject/berth/registry"
)

// Redelivery. A QUEUE message whose immediate delivery failed while its
// device stays connected (the device did not acknowledge in time, its
// executor could not be reached, its stream ended during the attempt) stays
// queued. The executor delivers a device's queue when the device connects,
// so without more the message would wait for the next reconnect. Instead the
// replica that made the attempt schedules the device for redelivery: after
// a jittered delay that doubles from RedeliverMinDelay up to
// RedeliverMaxDelay (internal/retry), it
// reads the device's presence and, while the device is connected, delivers
// its queue in order, one message at a time, removing each once the device
// acknowledged it, as the executor's drain does. It stops when the queue is
// empty, when the device is not connected (its next connect drains the
// queue), or after RedeliverAttempts failed rounds. The device drops what it
// already got by message id.
//
// The schedule lives in the replica's memory and is bounded by
// RedeliverPending devices; past that bound, or after a restart of the
// replica, a message waits for the device's next connect as before.

// redeliverPage is how many queued messages one round reads.
const redeliverPage = 64

// redeliverer keeps the devices due for redelivery.
type redeliverer struct {
	m   *Server
	log *slog.Logger

	mu      sync.Mutex
	due     map[string]*redeliverState // by device
	running map[string]bool            // devices being redelivered now
	dropped uint64                     // schedules refused: too many pending
	wake    chan struct{}
	lastLog time.Time
}

// redeliverState is one device's place in the schedule.
type redeliverState struct {
	at       time.Time
	attempts int             // failed rounds so far
	wait     backoff.BackOff // the device's jittered delays
}

func newRedeliverer(m *Server, log *slog.Logger) *redeliverer {
	return &redeliverer{m: m, log: log, due: map[string]*redeliverState{}, running: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// schedule puts dev in the schedule, due after the first delay, unless it
// is already there.
func (r *redeliverer) schedule(dev string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.due[dev]; ok {
		return
	}
	if len(r.due) >= r.m.cfg.RedeliverPending {
		r.dropped++
		if now := r.m.now(); now.Sub(r.lastLog) >= time.Second {
			r.lastLog = now
			r.log.Warn("too many devices waiting for redelivery; their messages wait for the next connect",
				"pending", len(r.due), "refused_total", r.dropped)
		}
		return
	}
	st := &redeliverState{wait: r.policy().NewBackOff()}
	st.at = r.m.now().Add(st.wait.NextBackOff())
	r.due[dev] = st
	r.signal()
}

func (r *redeliverer) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// policy is the backoff between rounds: jittered (±50%), growing from
// RedeliverMinDelay, never longer than RedeliverMaxDelay. Devices whose
// delivery failed together (their executor restarted) are not retried in
// step.
func (r *redeliverer) policy() retry.Policy {
	return retry.Policy{Initial: r.m.cfg.RedeliverMinDelay, Max: r.m.cfg.RedeliverMaxDelay, Multiplier: 2}
}

// run starts the rounds that are due, at most RedeliverWorkers at once,
// until ctx is done; it then waits for the rounds running.
func (r *redeliverer) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, r.m.cfg.RedeliverWorkers)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := r.startDue(ctx, &wg, slots)
		if next <= 0 {
			next = time.Hour
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// startDue starts a round for every device due now while a slot is free,
// and returns how long until the next device is due (0 when none is).
func (r *redeliverer) startDue(ctx context.Context, wg *sync.WaitGroup, slots chan struct{}) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.m.now()
	var next time.Duration
	for dev, st := range r.due {
		if r.running[dev] {
			continue
		}
		if wait := st.at.Sub(now); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			// Every slot is busy: a round that ends signals.
			return next
		}
		r.running[dev] = true
		wg.Go(func() {
			done := r.round(ctx, dev)
			<-slots
			r.finish(dev, done)
		})
	}
	return next
}

// finish takes dev out of the schedule after a round that finished, or
// puts it back for a later round after one that failed.
func (r *redeliverer) finish(dev string, done bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, dev)
	st := r.due[dev]
	switch {
	case st == nil:
	case done:
		delete(r.due, dev)
	case st.attempts+1 >= r.m.cfg.RedeliverAttempts:
		delete(r.due, dev)
		r.log.Info("queued messages not acknowledged after redelivery attempts; they wait for the device's next connect",
			"device", dev, "attempts", st.attempts+1)
	default:
		st.attempts++
		st.at = r.m.now().Add(st.wait.NextBackOff())
	}
	r.signal()
}

// round delivers dev's queue while the device is connected. It reports
// whether it is done: the queue is empty, or the device is not connected
// (its next connect drains it). False means try again later.
func (r *redeliverer) round(ctx context.Context, dev string) bool {
	m := r.m
	p, online, err := m.presence(ctx, dev)
	switch {
	case err != nil:
		r.log.Debug("redelivery: presence unreadable", "device", dev, "err", err)
		return false
	case !online:
		return true
	}
	m.routes.put(p)
	for {
		page, err := m.store.Queue(ctx, dev, redeliverPage)
		if err != nil {
			r.log.Debug("redelivery: queue unreadable", "device", dev, "err", err)
			return false
		}
		for _, qm := range page {
			expired := !qm.ExpiresAt.IsZero() && qm.ExpiresAt.Before(m.now())
			if !expired {
				if !r.deliver(ctx, &p, qm) {
					return p.Address == "" // not connected any more: done

				}
			}
			dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
			err = m.store.Dequeue(dctx, dev, qm.Seq)
			dcancel()
			if err != nil {
				r.log.Debug("redelivery: dequeue failed", "device", dev, "message", qm.ID, "err", err)
				return false
			}
		}
		if len(page) < redeliverPage || ctx.Err() != nil {
			return ctx.Err() == nil
		}
	}
}

// deliver hands qm to the device at *p and waits for its Ack; *p follows
// the device if it moved, and is emptied when it is no longer connected.
func (r *redeliverer) deliver(ctx context.Context, p *registry.Presence, qm registry.QueuedMessage) bool {
	m := r.m
	msg := &executorv1.Message{MessageId: qm.ID, Payload: qm.Payload, ContentType: qm.ContentType}
	if !qm.EnqueuedAt.IsZero() {
		msg.SentAt = timestamppb.New(qm.EnqueuedAt)
	}
	h, busy := m.inflight.acquire(p.DeviceID, len(qm.Payload))
	if busy != nil {
		// Deliveries to the device are at their bound: a later round.
		r.log.Debug("redelivery: not attempted", "device", p.DeviceID, "message", qm.ID, "err", busy.Error())
		return false
	}
	defer h.release()
	// The Deliver call continues the trace of the Send that queued qm.
	actx, cancel := context.WithTimeout(tracing.ContextWithParent(ctx, qm.TraceParent, qm.TraceState), m.cfg.QueueAttemptTimeout)
	defer cancel()
	_, p2, connected, err := m.deliverAt(actx, *p, true, msg, m.cfg.QueueAttemptTimeout)
	switch {
	case !connected:
		*p = registry.Presence{DeviceID: p.DeviceID}
		return false
	case err != nil:
		r.log.Debug("redelivery: not acknowledged", "device", p.DeviceID, "message", qm.ID, "err", err)
		return false
	}
	*p = p2
	return true
}
