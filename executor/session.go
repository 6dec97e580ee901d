package executor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

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
func newSession(n int, abort context.CancelCauseFunc) *session {
	return &session{
		queue:    make(chan *executorv1.ConnectResponse, n),
		abort:    abort,
		admitted: make(chan struct{}),
		done:     make(chan struct{}),
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
	old := s.sessions[ss.deviceID]
	if old == nil && len(s.sessions) >= s.cfg.Capacity {
		return nil, streamErrorf(errAtCapacity, "executor at capacity (%d streams); try another endpoint", s.cfg.Capacity)
	}
	s.sessions[ss.deviceID] = ss
	s.weight += ss.weight
	s.stats.accepted.Add(1)
	if old != nil {
		s.weight -= old.weight
		s.stats.replaced.Add(1)
		msg := "a newer stream of the same device replaced this one"
		old.close(closeReason{
			err:     streamErrorf(errReplaced, "%s", msg),
			goodbye: &executorv1.Goodbye{Reason: executorv1.GoodbyeReason_GOODBYE_REASON_REPLACED, Message: msg},
		}, closeGrace)
	}
	s.reportLocked()
	return old, nil
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
	close(s.left)
	s.left = make(chan struct{})
	s.reportLocked()
}

// report is what the Registrar was last told.
type report struct {
	conns int
	load  float64
}

// reportLocked hands the connection count and load to the Registrar when
// they changed. It is called with s.mu held, so that updates reach the
// Registrar in order.
func (s *Server) reportLocked() {
	r := report{conns: len(s.sessions), load: s.weight}
	if r == s.reported {
		return
	}
	s.reported = r
	s.reg.Update(func(e *registry.Executor) {
		e.Connections = r.conns
		e.Load = r.load
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
