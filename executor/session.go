package executor

import (
	"context"
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

// session is one admitted device stream. The handler goroutine receives;
// frames to the device go through a bounded queue that a sender drains: the
// handler at the start (the Welcome), later a goroutine started when a frame
// is queued and none is running (see sender.go). An idle stream has no
// goroutine but its handler's, which waits in Recv.
type session struct {
	id       string
	deviceID string
	// enrollment vouched for the device (from its token; "" when open).
	enrollment string
	// srv starts the senders and counts what they do.
	srv *Server
	// stream is the session's Connect stream; only the sender sends on it.
	stream connectStream
	// status ends the stream with a status from any goroutine, which
	// also ends a Send or Recv blocked on it (see sender.go).
	status statusWriter
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
	// the handler goroutine uses it.
	publishesRefused int

	// smu guards the send side: queue and sending.
	smu sync.Mutex
	// queue holds the frames waiting for the sender, at most limit; nil
	// when empty, so that an idle stream holds no queue.
	queue []*executorv1.ConnectResponse
	limit int
	// sending is set while a sender owns the stream's Send side; once the
	// session is closed it stays set (the last sender finished it).
	sending bool
	// sendStart is when the Send in progress began (Unix nanoseconds), 0
	// outside a Send: the heartbeat cuts a Send blocked too long.
	sendStart atomic.Int64
	// finished is closed once the last sender has sent the Goodbye and
	// ended the stream; the handler waits for it before returning.
	finished chan struct{}

	// slot and pos place the session in the heartbeat wheel; nonce is its
	// last Ping's. All three belong to the wheel.
	slot, pos int
	nonce     uint64

	// waiters are the deliveries waiting for the device's Ack or Reply,
	// by message id; resolved by the handler goroutine. Made on first use.
	wmu     sync.Mutex
	waiters map[string][]*waiter
	// waiting counts the waiters of every session (the Server's counter).
	waiting *atomic.Int64

	once   sync.Once
	done   chan struct{} // closed by close
	reason closeReason   // set before done is closed
	grace  time.Duration // the close's grace, set before done is closed
	cut    *time.Timer   // ends the stream if the sender lingers

	// stopDrain cancels the queue drain's registry calls while it runs
	// (nil otherwise); the close calls it. Under wmu.
	stopDrain context.CancelFunc
}

// setStopDrain sets what the close calls to stop the queue drain (nil
// once the drain has ended). A session already closed calls stop at once.
func (ss *session) setStopDrain(stop context.CancelFunc) {
	ss.wmu.Lock()
	ss.stopDrain = stop
	ss.wmu.Unlock()
	if stop != nil && ss.closed() {
		stop()
	}
}

// stopDraining cancels the queue drain, if one runs.
func (ss *session) stopDraining() {
	ss.wmu.Lock()
	stop := ss.stopDrain
	ss.stopDrain = nil
	ss.wmu.Unlock()
	if stop != nil {
		stop()
	}
}

// closeReason says why a session ends: the error its handler returns (nil
// for a clean end) and the Goodbye sent first, if any.
type closeReason struct {
	err     error
	goodbye *executorv1.Goodbye
}

// newSession returns a session of srv on stream, which sw ends, with a
// queue of n frames. The handler owns its sender until it calls
// sendQueued.
func newSession(srv *Server, stream connectStream, sw statusWriter, n int) *session {
	return &session{
		srv:      srv,
		stream:   stream,
		status:   sw,
		waiting:  &srv.stats.waiting,
		limit:    n,
		sending:  true,
		done:     make(chan struct{}),
		finished: make(chan struct{}),
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
	if ss.waiters == nil {
		ss.waiters = make(map[string][]*waiter)
	}
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
	if len(ss.waiters) == 0 {
		// An idle stream holds no map.
		ss.waiters = nil
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

// close ends the session for r; the first call wins and reports true. The
// sender sends the Goodbye, if any, and ends the stream with r's status,
// which ends the handler's Recv; a sender that has not finished within
// grace (it is blocked in Send on a device that does not read) is cut by
// ending the stream under it. With grace 0 the stream is ended at once.
// close never blocks.
func (ss *session) close(r closeReason, grace time.Duration) bool {
	if !ss.markClosed(r, grace) {
		return false
	}
	ss.wake()
	return true
}

// markClosed is close without waking a sender: for the handler, which
// finishes the session itself (see end).
func (ss *session) markClosed(r closeReason, grace time.Duration) bool {
	first := false
	ss.once.Do(func() {
		first = true
		ss.reason, ss.grace = r, grace
		if grace <= 0 {
			ss.abort()
		} else {
			ss.cut = time.AfterFunc(grace, ss.abort)
		}
		close(ss.done)
	})
	if first {
		ss.stopDraining()
	}
	return first
}

// abort ends the stream with the close's status: the trailers are queued,
// and a Send or Recv blocked on the stream returns. Called again it does
// nothing (gRPC keeps the first status).
func (ss *session) abort() {
	ss.srv.writeStatus(ss.status, ss.reason.err)
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

// enqueue queues f for the sender without blocking, and starts a sender if
// none is running. A full queue means the device does not keep up: the
// stream is closed at once (overflow policy) and ErrSendQueueFull
// returned. A closing stream takes nothing and returns ErrNotConnected.
func (ss *session) enqueue(f *executorv1.ConnectResponse) error {
	ss.smu.Lock()
	if ss.closed() {
		ss.smu.Unlock()
		return ErrNotConnected
	}
	if len(ss.queue) >= ss.limit {
		ss.smu.Unlock()
		err := streamErrorf(ErrSendQueueFull, "send queue full (%d frames): device not reading; stream closed", ss.limit)
		ss.close(closeReason{err: err}, 0)
		return err // wraps ErrSendQueueFull, with the reason
	}
	ss.queue = append(ss.queue, f)
	start := !ss.sending
	ss.sending = true
	ss.smu.Unlock()
	if start {
		ss.srv.spawn(ss.sendQueued)
	}
	return nil
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
	s.beats.add(ss)
	s.weight += ss.weight
	s.stats.accepted.Add(1)
	ss.since = time.Now()
	// The count reported with the marks includes this session.
	marked := ss.hasTicket && s.admitted.admit(ss.ticket, ss.since)
	// Under s.mu, so that presence changes reach the Registrar in the
	// order sessions come and go.
	s.reg.SetPresence(registry.Presence{
		DeviceID:        ss.deviceID,
		ExecutorID:      s.cfg.ID,
		GroupID:         s.cfg.GroupID,
		Address:         s.cfg.Address,
		InternalAddress: s.cfg.InternalAddress,
		SessionID:       ss.id,
		Since:           ss.since,
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
// replaced it, and stops its heartbeat.
func (s *Server) leave(ss *session) {
	// Out of the wheel even when replaced: it was added at admission.
	s.beats.remove(ss)
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
