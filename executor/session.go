package executor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berthproject/berth/fleet"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/registry"
)

// closeGrace bounds how long a closing stream may take to write its Goodbye
// before it is cut.
const closeGrace = time.Second

// errAborted is the cause of a stream context cancelled by the executor.
var errAborted = errors.New("executor: stream aborted")

// session is one admitted device stream. The handler goroutine sends, the
// receive goroutine receives; everything else talks to it through enqueue
// and close.
type session struct {
	id       string
	deviceID string
	// enrollment vouched for the device (from its token; "" when open).
	enrollment string
	// queue holds the frames waiting for the sender; bounded (SendQueue).
	queue chan *executorv1.ConnectResponse
	// abort cancels the stream's context, unblocking a Send or Recv stuck
	// on a device that does not read.
	abort context.CancelCauseFunc
	// admitted is closed once the session is registered; the receive
	// goroutine waits for it before reading past the Hello.
	admitted chan struct{}
	// lastRecv is when the last frame arrived (Unix nanoseconds).
	lastRecv atomic.Int64
	// redirected is set once a Redirect has been queued.
	redirected atomic.Bool
	// weight is the device's load weight, from its token.
	weight float64
	// ticket is the reservation the device came with (hasTicket: one that
	// names this executor).
	ticket    fleet.Ticket
	hasTicket bool
	// since is when the session was admitted.
	since time.Time
	// traffic is what went through the stream since it was last reported.
	traffic traffic
	// publishesRefused counts the publishes refused on this stream; only
	// the receive goroutine uses it.
	publishesRefused int

	// waiters are the deliveries waiting for the device's Ack or Reply,
	// by message id; resolved by the receive goroutine.
	wmu     sync.Mutex
	waiters map[string][]*waiter
	// waiting counts the waiters of every session (the Server's counter).
	waiting *atomic.Int64

	once   sync.Once
	done   chan struct{} // closed by close
	reason closeReason   // set before done is closed
	cut    *time.Timer   // aborts the stream if the sender lingers
}

// closeReason says why a session ends: the error its handler returns (nil
// for a clean end) and the Goodbye sent first, if any.
type closeReason struct {
	err     error
	goodbye *executorv1.Goodbye
}

// newSession returns a session with a queue of n frames whose stream is
// aborted by abort.
func newSession(n int, abort context.CancelCauseFunc, waiting *atomic.Int64) *session {
	return &session{
		waiting:  waiting,
		queue:    make(chan *executorv1.ConnectResponse, n),
		abort:    abort,
		admitted: make(chan struct{}),
		done:     make(chan struct{}),
		waiters:  make(map[string][]*waiter),
	}
}

// waiter is one delivery waiting for the device to acknowledge a message.
type waiter struct {
	// reply is set when only a Reply resolves it (the message expects
	// one); otherwise an Ack or a Reply does.
	reply bool
	// done receives the outcome once: the Reply, or nil for an Ack.
	done chan *executorv1.Reply
}

// await registers a waiter for message id; the caller must call forget
// with it once it stops waiting, on every path.
func (ss *session) await(id string, reply bool) *waiter {
	w := &waiter{reply: reply, done: make(chan *executorv1.Reply, 1)}
	ss.wmu.Lock()
	ss.waiters[id] = append(ss.waiters[id], w)
	ss.waiting.Add(1)
	ss.wmu.Unlock()
	return w
}

// forget removes w, if it is still registered under id.
func (ss *session) forget(id string, w *waiter) {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	ws := ss.waiters[id]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			ss.waiting.Add(-1)
			break
		}
	}
	if len(ws) == 0 {
		delete(ss.waiters, id)
	} else {
		ss.waiters[id] = ws
	}
}

// resolve hands an acknowledgement of message id to its waiters: r is the
// device's Reply, or nil for an Ack (which leaves the waiters that want a
// Reply waiting). It never blocks.
func (ss *session) resolve(id string, r *executorv1.Reply) {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	ws := ss.waiters[id]
	if len(ws) == 0 {
		return
	}
	keep := ws[:0]
	for _, w := range ws {
		if w.reply && r == nil {
			keep = append(keep, w)
			continue
		}
		w.done <- r // buffered, and each waiter is resolved once
		ss.waiting.Add(-1)
	}
	clear(ws[len(keep):])
	if len(keep) == 0 {
		delete(ss.waiters, id)
	} else {
		ss.waiters[id] = keep
	}
}

// close ends the session for r; the first call wins. The sender sees done,
// sends the Goodbye and returns; if it has not finished within grace (it is
// blocked in Send on a device that does not read) the stream is aborted.
// close never blocks.
func (ss *session) close(r closeReason, grace time.Duration) bool {
	first := false
	ss.once.Do(func() {
		first = true
		ss.reason = r
		ss.cut = time.AfterFunc(grace, func() { ss.abort(errAborted) })
		close(ss.done)
	})
	return first
}

// closed reports whether close was called.
func (ss *session) closed() bool {
	select {
	case <-ss.done:
		return true
	default:
		return false
	}
}

// enqueue queues f for the sender without blocking. A full queue means the
// device does not keep up: the stream is closed at once (overflow policy)
// and ErrSendQueueFull returned. A closing stream takes nothing and returns
// ErrNotConnected.
func (ss *session) enqueue(f *executorv1.ConnectResponse) error {
	if ss.closed() {
		return ErrNotConnected
	}
	select {
	case ss.queue <- f:
		return nil
	default:
	}
	err := streamErrorf(ErrSendQueueFull, "send queue full (%d frames): device not reading; stream closed", cap(ss.queue))
	ss.close(closeReason{err: err}, 0)
	return ErrSendQueueFull
}

// admit registers ss under its device id, replacing the device's previous
// session if there is one; it returns the replaced session. It refuses when
// the executor is draining or, for a device not yet connected, full.
func (s *Server) admit(ss *session) (*session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return nil, streamErrorf(errDraining, "executor draining")
	}
	if err := s.checkTrustLocked(ss); err != nil {
		return nil, err
	}
	old := s.sessions[ss.deviceID]
	if old == nil && len(s.sessions) >= s.cfg.Capacity {
		return nil, streamErrorf(errAtCapacity, "executor at capacity (%d streams); try another endpoint", s.cfg.Capacity)
	}
	s.sessions[ss.deviceID] = ss
	s.weight += ss.weight
	s.stats.accepted.Add(1)
	ss.since = time.Now()
	// The count reported with the marks includes this session.
	marked := ss.hasTicket && s.admitted.admit(ss.ticket, ss.since)
	// Under s.mu, so that presence changes reach the Registrar in the
	// order sessions come and go.
	s.reg.SetPresence(registry.Presence{
		DeviceID:   ss.deviceID,
		ExecutorID: s.cfg.ID,
		GroupID:    s.cfg.GroupID,
		Address:    s.cfg.Address,
		SessionID:  ss.id,
		Since:      ss.since,
	})
	if old != nil {
		s.weight -= old.weight
		s.stats.replaced.Add(1)
		closeReplaced(old)
	}
	s.reportLocked(marked)
	return old, nil
}

// closeReplaced ends ss because a newer stream of its device replaced it;
// it reports whether this call closed it.
func closeReplaced(ss *session) bool {
	msg := "a newer stream of the same device replaced this one"
	return ss.close(closeReason{
		err:     streamErrorf(errReplaced, "%s", msg),
		goodbye: &executorv1.Goodbye{Reason: executorv1.GoodbyeReason_GOODBYE_REASON_REPLACED, Message: msg},
	}, closeGrace)
}

// replacedElsewhere ends the session r names, if it is still open here: a
// newer session of its device, on another executor, wrote its presence
// after this one's (the registry's order decides which is newer). The
// session leaves as any other does; its conditional presence delete
// leaves the newer record alone. It never blocks.
func (s *Server) replacedElsewhere(r registry.Replacement) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[r.DeviceID]
	if ss == nil || ss.id != r.SessionID {
		return
	}
	if closeReplaced(ss) {
		s.stats.replaced.Add(1)
		s.log.Info("stream replaced by a newer one of the same device on another executor",
			"device", r.DeviceID, "session", r.SessionID, "by_executor", r.ByExecutor, "by_session", r.BySession)
	}
}

// leave unregisters ss, unless a newer session of the same device has
// replaced it.
func (s *Server) leave(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.deviceID] != ss {
		return
	}
	delete(s.sessions, ss.deviceID)
	s.weight -= ss.weight
	s.reportEnded(ss)
	s.reg.ClearPresence(ss.deviceID, ss.id)
	close(s.left)
	s.left = make(chan struct{})
	s.reportLocked(false)
}

// report is what the Registrar was last told.
type report struct {
	conns int
	load  float64
}

// reportLocked hands the connection count, load and admitted reservations
// (when marked: they changed) to the Registrar when they changed, in one
// update, so that a record never reports a reservation admitted without
// counting its device. It is called with s.mu held, so that updates reach
// the Registrar in order.
func (s *Server) reportLocked(marked bool) {
	r := report{conns: len(s.sessions), load: s.weight}
	if r == s.reported && !marked {
		return
	}
	s.reported = r
	admitted := s.admitted.snapshot()
	s.reg.Update(func(e *registry.Executor) {
		e.Connections = r.conns
		e.Load = r.load
		e.Admitted = admitted
	})
}

// snapshot returns the sessions open now.
func (s *Server) snapshot() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		out = append(out, ss)
	}
	return out
}

// waitEmpty waits until no session is left or ctx is done.
func (s *Server) waitEmpty(ctx context.Context) error {
	for {
		s.mu.Lock()
		n, left := len(s.sessions), s.left
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-left:
		case <-ctx.Done():
			return fmt.Errorf("executor: %d streams still open: %w", n, ctx.Err())
		}
	}
}
