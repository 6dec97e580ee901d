package executor

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/retry"
	"github.com/berthproject/berth/registry"
)

// queuePage is how many queued messages one read of a device's queue takes.
const queuePage = 64

// queueRetry is the backoff between failed queue reads and removals.
var queueRetry = retry.Policy{Initial: 50 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2}

// presenceReader reads presence records; *registry.Registry is one. A
// Queue that is one lets the drain close a gap (see drainQueue).
type presenceReader interface {
	Presence(ctx context.Context, deviceID string) (registry.Presence, error)
}

// presenceNotifier tells when a session's presence has been written;
// *registry.Registration is one. A Registrar that is one spares the queue
// drain its polls of the registry (see awaitPresence).
type presenceNotifier interface {
	PresenceWritten(deviceID, sessionID string) (<-chan struct{}, bool)
}

// queueCounter tells how many messages were queued for a device when its
// session's presence was written; *registry.Registration is one. A
// Registrar that is one spares the queue drain its read of an empty queue
// (see drainQueue).
type queueCounter interface {
	QueuedAtPresence(deviceID, sessionID string) (int64, bool)
}

// The wait for a session's presence record to become visible, when it is
// polled: a first look presenceWaitFirst after the admission, then a
// jittered, growing delay, for at most presenceWaitFor.
var (
	presenceWaitFirst = 20 * time.Millisecond
	presenceWait      = retry.Policy{Initial: 50 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2}
	presenceWaitFor   = 15 * time.Second
)

// drainQueue delivers the messages queued for ss's device, in order, one at
// a time: each waits for the device's Ack and is then removed from the
// queue. Expired messages are removed unsent. It returns when the queue is
// empty (later messages for the online device come through Deliver), or
// when the session or ctx ends: a message not acknowledged by then stays
// queued for the next stream (at least once).
//
// The session's presence is written moments after the drain starts, and a
// control plane that stores a QUEUE message and then finds no presence
// leaves the message to the drain. So the drain first waits until the
// registry shows this session's presence (when the Queue can read
// presence), and only then reads the queue: a message stored before the
// presence was visible is in that read, and one stored after it is
// delivered by its sender. Waiting first costs a device with queued
// messages a few milliseconds; reading first cost every connect a second
// queue read, and the etcd calls of a connect are most of what an executor
// allocates per stream (docs/performance.md).
//
// A Registrar that counts the device's queue in the transaction that writes
// the presence (queueCounter) says whether there is anything to read: most
// devices have nothing queued, and their connect then costs no queue read.
func (s *Server) drainQueue(ctx context.Context, ss *session, log *slog.Logger) {
	if !s.awaitPresence(ctx, ss, log) && (ctx.Err() != nil || ss.closed()) {
		return
	}
	if qc, ok := s.reg.(queueCounter); ok {
		if n, ok := qc.QueuedAtPresence(ss.deviceID, ss.id); ok && n == 0 {
			s.stats.queueReadsSpared.Add(1)
			return
		}
	}
	delivered := 0
	for {
		var page []registry.QueuedMessage
		ok := s.retryQueue(ctx, ss, log, "read the queue", func() error {
			var err error
			page, err = s.queue.Queue(ctx, ss.deviceID, queuePage)
			return err
		})
		if !ok {
			return
		}
		if len(page) == 0 {
			if delivered > 0 {
				log.Debug("queued messages delivered", "messages", delivered)
			}
			return
		}
		for _, qm := range page {
			if !qm.ExpiresAt.IsZero() && qm.ExpiresAt.Before(time.Now()) {
				if !s.dequeue(ctx, ss, log, qm) {
					return
				}
				s.stats.queueExpired.Add(1)
				continue
			}
			m := &executorv1.Message{
				MessageId:   qm.ID,
				Payload:     qm.Payload,
				ContentType: qm.ContentType,
				// The Send's trace: the device's span continues it.
				TraceParent: qm.TraceParent,
				TraceState:  qm.TraceState,
			}
			boundTrace(m)
			if !qm.EnqueuedAt.IsZero() {
				m.SentAt = timestamppb.New(qm.EnqueuedAt)
			}
			if _, err := s.deliverWait(ctx, ss, m); err != nil {
				log.Debug("queued message not acknowledged; it stays queued", "message_id", qm.ID, "seq", qm.Seq, "err", err)
				return
			}
			if !s.dequeue(ctx, ss, log, qm) {
				return
			}
			s.stats.queueDelivered.Add(1)
			delivered++
		}
	}
}

// awaitPresence waits until the registry shows ss's presence. A Registrar
// that tells when the presence is written (presenceNotifier) is asked;
// otherwise, when the Queue can read presence, awaitPresence looks
// presenceWaitFirst after the admission (the registration writes presence
// within milliseconds, so one look usually does), then polls with a
// jittered, growing delay, for at most presenceWaitFor. It reports true when the
// presence is visible, or could not be confirmed in time (the queue is
// read anyway); false when the Queue cannot read presence, or when ss or
// ctx ended. A record naming another session is waited out: either this
// session's put comes later and wins, or the other one is newer and this
// session is replaced (ss ends; the newer session's drain reads the
// queue). Wall clocks of different executors never decide it.
func (s *Server) awaitPresence(ctx context.Context, ss *session, log *slog.Logger) bool {
	if pn, ok := s.reg.(presenceNotifier); ok {
		if written, ok := pn.PresenceWritten(ss.deviceID, ss.id); ok {
			return s.awaitWritten(ctx, ss, log, written)
		}
		// Not present here: the session was replaced or is ending.
		return false
	}
	pr, ok := s.queue.(presenceReader)
	if !ok {
		return false
	}
	if !retry.Sleep(ctx, presenceWaitFirst, ss.done) {
		return false
	}
	wait := presenceWait.NewBackOff()
	deadline := time.Now().Add(presenceWaitFor)
	for {
		p, err := pr.Presence(ctx, ss.deviceID)
		switch {
		case err == nil && p.SessionID == ss.id:
			return true
		case ctx.Err() != nil || ss.closed():
			return false
		case time.Now().After(deadline):
			log.Debug("presence not visible in time; reading the queue anyway", "waited", presenceWaitFor, "err", err)
			return true
		}
		if !retry.Sleep(ctx, wait.NextBackOff(), ss.done) {
			return false
		}
	}
}

// awaitWritten is awaitPresence told by the Registrar: it waits until
// written is closed (the presence was written), at most presenceWaitFor.
func (s *Server) awaitWritten(ctx context.Context, ss *session, log *slog.Logger, written <-chan struct{}) bool {
	// Already written: no timeout to ask for.
	select {
	case <-written:
		return true
	default:
	}
	select {
	case <-written:
		return true
	case <-ss.done:
		return false
	case <-ctx.Done():
		return false
	case <-s.timeouts.after(presenceWaitFor):
		log.Debug("presence not written in time; reading the queue anyway", "waited", presenceWaitFor)
		return true
	}
}

// dequeue removes qm, retrying while the session lasts. It reports whether
// it did.
func (s *Server) dequeue(ctx context.Context, ss *session, log *slog.Logger, qm registry.QueuedMessage) bool {
	return s.retryQueue(ctx, ss, log, "remove a message from the queue", func() error {
		return s.queue.Dequeue(ctx, ss.deviceID, qm.Seq)
	})
}

// retryQueue calls fn until it succeeds, with a jittered, growing delay
// between attempts, while ss and ctx last. It reports whether fn
// succeeded. An outage is logged once (and its end), not per attempt.
func (s *Server) retryQueue(ctx context.Context, ss *session, log *slog.Logger, what string, fn func() error) bool {
	return retry.Do(ctx, queueRetry, log, "queue: cannot "+what, ss.done, func(context.Context) error { return fn() }) == nil
}
