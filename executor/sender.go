package executor

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// The send side of a session. gRPC allows one goroutine in Send and another
// in Recv at a time. The handler goroutine receives, all the stream's life.
// Sends are made by whoever owns the session's sender (ss.sending, under
// ss.smu): the handler until the Welcome is out, then a goroutine started
// by enqueue when it queues a frame and no sender runs. That goroutine
// sends until the queue is empty and ends, so an idle stream holds no
// goroutine of its own beyond the handler (bare grpc-go's count).
//
// Once the session is closed, the sender that sees it finishes it: it sends
// the Goodbye, if any, ends the stream with the close's status (which ends
// the handler's Recv) and closes ss.finished; ss.sending then stays set, so no sender starts
// again. The handler, on its way out, finishes the session itself when no
// sender runs, or waits for the one that does: nothing sends on the stream
// after its handler returned.
//
// A stuck device is cut three ways: its queue fills (enqueue closes the
// stream and ends it at once: ErrSendQueueFull), a Send blocked longer
// than PingMisses ping intervals is cut by the heartbeat (see heartbeat.go),
// and a closing stream whose Goodbye is not out within closeGrace is
// ended by the session's cut timer.
//
// Why the status is written by the sender: a gRPC handler blocked in Recv
// returns only when a frame comes or the stream ends, and a Recv that
// fails on a cancelled context writes status CANCELLED itself, before the
// handler could return its own. So the sender ends the stream with the
// close's status (the one the handler returns: Aborted for a replaced
// stream, DeadlineExceeded for a silent one, and so on) through gRPC's
// server transport stream, which queues the trailers and cancels the
// stream's context: the handler's Recv, or a Send blocked on flow control,
// returns. gRPC keeps the first status written; the handler's return later
// changes nothing. This is also how a stuck stream is cut, so no
// cancellable context per stream is needed (the executor used to add one
// with a tap handler: about 1 KiB per stream).

// statusWriter ends a server stream with a status. gRPC's server transport
// stream (grpc.ServerTransportStreamFromContext) is one: its WriteStatus
// sends the trailers and finishes the stream, whichever goroutine calls it.
type statusWriter interface {
	WriteStatus(st *status.Status) error
}

// streamStatus returns the statusWriter of a handler's stream context, or
// nil.
func streamStatus(ctx context.Context) statusWriter {
	w, _ := grpc.ServerTransportStreamFromContext(ctx).(statusWriter)
	return w
}

// writeStatus ends the stream with err's status (OK for nil), when it can.
func (s *Server) writeStatus(w statusWriter, err error) {
	if w == nil {
		return
	}
	st, _ := status.FromError(toStatus(err, s.cfg.RedirectSpread))
	_ = w.WriteStatus(st)
}

// spawn runs fn in a goroutine of the Server's group.
func (s *Server) spawn(fn func()) {
	if s.group == nil {
		// A Server that was not Run: only the package's unit tests.
		go fn()
		return
	}
	s.group.Go(func() error {
		fn()
		return nil
	})
}

// wake starts a sender if none runs, so that a closed session is finished.
func (ss *session) wake() {
	ss.smu.Lock()
	start := !ss.sending
	ss.sending = true
	ss.smu.Unlock()
	if start {
		ss.srv.spawn(ss.sendQueued)
	}
}

// sendQueued is the sender: it must own ss.sending. It sends the queued
// frames in order until the queue is empty, then gives up the sender; or
// finishes the session once it is closed.
func (ss *session) sendQueued() {
	for {
		ss.smu.Lock()
		if ss.closed() {
			ss.queue = nil
			ss.smu.Unlock()
			ss.finish()
			return
		}
		if len(ss.queue) == 0 {
			ss.queue = nil
			ss.sending = false
			ss.smu.Unlock()
			return
		}
		f := ss.queue[0]
		ss.queue[0] = nil
		ss.queue = ss.queue[1:]
		ss.smu.Unlock()
		if err := ss.send(f); err != nil {
			ss.close(closeReason{err: err}, 0)
			continue
		}
		ss.traffic.countSent(f)
	}
}

// send sends f, recording when the Send began for the heartbeat's check.
func (ss *session) send(f *executorv1.ConnectResponse) error {
	ss.sendStart.Store(time.Now().UnixNano())
	err := ss.stream.Send(f)
	ss.sendStart.Store(0)
	return err
}

// finish ends a closed session: the Goodbye (best effort: the device may be
// gone already), then the stream's status, which makes the handler's Recv
// return. The caller owns the sender, for good.
func (ss *session) finish() {
	r := ss.reason
	if r.goodbye != nil && ss.grace > 0 {
		_ = ss.send(&executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Goodbye{Goodbye: r.goodbye}})
	}
	if ss.cut != nil {
		ss.cut.Stop()
	}
	ss.abort()
	if errors.Is(r.err, ErrSendQueueFull) {
		ss.srv.stats.stuck.Add(1)
	}
	close(ss.finished)
}

// end is the handler's way out once its Recv loop stopped for r: it closes
// the session (unless it was closed already: the first reason wins),
// finishes it or waits for the sender that does, and returns the error the
// handler returns.
func (ss *session) end(r closeReason) error {
	ss.markClosed(r, closeGrace)
	ss.smu.Lock()
	mine := !ss.sending
	ss.sending = true
	ss.smu.Unlock()
	if mine {
		ss.finish()
	}
	<-ss.finished
	return ss.reason.err
}
