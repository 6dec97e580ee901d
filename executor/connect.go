package executor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/durationpb"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/token"
)

// connectStream is the server side of one Connect stream.
type connectStream = grpc.BidiStreamingServer[executorv1.ConnectRequest, executorv1.ConnectResponse]

// service implements ExecutorService for a Server.
type service struct {
	executorv1.UnimplementedExecutorServiceServer
	s *Server
}

// Connect is the RPC edge: it turns what connect returns into a status, and
// counts refusals by code.
func (svc service) Connect(stream connectStream) error {
	admitted, err := svc.s.connect(stream)
	st := toStatus(err, svc.s.cfg.RedirectSpread)
	if !admitted {
		svc.s.stats.refuse(status.Code(st))
	}
	return st
}

// abortKey is the context key of a Connect stream's abort function.
type abortKey struct{}

// tapAbort gives every Connect stream a context the executor can cancel.
// It runs on the connection's reader goroutine, so it does nothing else.
func tapAbort(ctx context.Context, info *tap.Info) (context.Context, error) {
	if info.FullMethodName != executorv1.ExecutorService_Connect_FullMethodName {
		return ctx, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	return context.WithValue(ctx, abortKey{}, cancel), nil
}

// recvResult is one Recv's outcome.
type recvResult struct {
	req *executorv1.ConnectRequest
	err error
}

// connect serves one stream: accept with a deadline, verify, register,
// then send until the session ends. It reports whether the stream was
// admitted, and the error that ended it (nil for a clean end).
func (s *Server) connect(stream connectStream) (bool, error) {
	ctx := stream.Context()
	abort, ok := ctx.Value(abortKey{}).(context.CancelCauseFunc)
	if !ok {
		// Only without the tap, which Run always installs.
		abort = func(error) {}
	}
	ss := newSession(s.cfg.SendQueue, abort, &s.stats.waiting)
	first := make(chan recvResult, 1)
	s.group.Go(func() error {
		s.receive(stream, ss, first)
		return nil
	})

	hello, err := s.awaitHello(ctx, first)
	if err != nil {
		return false, err
	}
	claims, err := s.verify(hello)
	if err != nil {
		s.refusedToken(ctx, hello.GetDeviceId(), err)
		return false, err
	}
	if err := checkBinding(ctx, claims); err != nil {
		return false, err
	}
	ss.weight = claims.Weight
	ss.enrollment = claims.Binding.Enrollment
	ss.id = rand.Text()
	ss.deviceID = hello.GetDeviceId()
	ss.ticket, ss.hasTicket = ticketOf(hello.GetReservation(), s.cfg.ID)
	ss.lastRecv.Store(time.Now().UnixNano())
	// Welcome goes first in the queue, before the session is visible to
	// Deliver.
	ss.queue <- &executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Welcome{Welcome: &executorv1.Welcome{
		SessionId:         ss.id,
		ExecutorId:        s.cfg.ID,
		GroupId:           s.cfg.GroupID,
		HeartbeatInterval: durationpb.New(s.cfg.PingInterval),
	}}}
	replaced, err := s.admit(ss)
	if err != nil {
		return false, err
	}
	defer s.leave(ss)
	close(ss.admitted)
	log := s.log.With("device", ss.deviceID, "session", ss.id)
	if replaced != nil {
		log.Info("stream replaced an older one of the same device", "old_session", replaced.id)
	} else {
		log.Debug("stream admitted")
	}
	if s.queue != nil {
		// The Welcome is queued already: queued messages follow it. The
		// drain stops when the session ends (it waits on ss.done) and its
		// registry calls when the handler returns.
		qctx, stopQueue := context.WithCancel(ctx)
		defer stopQueue()
		s.group.Go(func() error {
			s.drainQueue(qctx, ss, log)
			return nil
		})
	}

	err = s.send(stream, ss)
	log.Debug("stream closed", "err", err)
	return true, err
}

// awaitHello waits for the first frame, at most HelloTimeout, and checks
// that it is a Hello.
func (s *Server) awaitHello(ctx context.Context, first <-chan recvResult) (*executorv1.Hello, error) {
	t := time.NewTimer(s.cfg.HelloTimeout)
	defer t.Stop()
	var r recvResult
	select {
	case r = <-first:
	case <-t.C:
		return nil, streamErrorf(errNoHello, "no Hello within %v", s.cfg.HelloTimeout)
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	if errors.Is(r.err, io.EOF) {
		return nil, streamErrorf(errNotHello, "first frame must be Hello; the stream ended before one")
	}
	if r.err != nil {
		return nil, r.err
	}
	hello := r.req.GetHello()
	if hello == nil {
		return nil, streamErrorf(errNotHello, "first frame must be Hello")
	}
	return hello, nil
}

// verify checks hello's token against its device and this executor's group,
// and returns its claims.
func (s *Server) verify(hello *executorv1.Hello) (token.Claims, error) {
	claims, err := s.verifier.Verify(hello.GetToken())
	if err != nil {
		return claims, err
	}
	if claims.DeviceID != hello.GetDeviceId() {
		return claims, streamErrorf(errWrongDevice, "token was minted for another device")
	}
	if claims.GroupID != s.cfg.GroupID {
		return claims, streamErrorf(errWrongGroup, "token is for group %s, this executor serves group %s", claims.GroupID, s.cfg.GroupID)
	}
	if claims.Weight <= 0 {
		claims.Weight = 1
	}
	return claims, nil
}

// send is the stream's send loop, on the handler goroutine: queued frames,
// a Ping every PingInterval, and the Goodbye when the session closes. It
// closes a session whose device has been silent for PingMisses intervals.
// It returns the session's close reason.
func (s *Server) send(stream connectStream, ss *session) error {
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	silence := time.Duration(s.cfg.PingMisses) * s.cfg.PingInterval
	var nonce uint64
	for {
		select {
		case f := <-ss.queue:
			if err := stream.Send(f); err != nil {
				ss.close(closeReason{err: err}, 0)
			} else {
				ss.traffic.countSent(f)
			}
		case now := <-ping.C:
			if quiet := now.Sub(time.Unix(0, ss.lastRecv.Load())); quiet >= silence {
				msg := fmt.Sprintf("nothing received from the device for %v (%d pings of %v)", quiet.Round(time.Millisecond), s.cfg.PingMisses, s.cfg.PingInterval)
				if ss.close(closeReason{
					err:     streamErrorf(errSilent, "%s", msg),
					goodbye: &executorv1.Goodbye{Reason: executorv1.GoodbyeReason_GOODBYE_REASON_TIMEOUT, Message: msg},
				}, closeGrace) {
					s.stats.timeouts.Add(1)
				}
				continue
			}
			nonce++
			if err := stream.Send(&executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Ping{Ping: &executorv1.Ping{Nonce: nonce}}}); err != nil {
				ss.close(closeReason{err: err}, 0)
			}
		case <-ss.done:
			r := ss.reason
			if r.goodbye != nil {
				// Best effort: the device may be gone already.
				_ = stream.Send(&executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Goodbye{Goodbye: r.goodbye}})
			}
			ss.cut.Stop()
			if errors.Is(r.err, ErrSendQueueFull) {
				s.stats.stuck.Add(1)
			}
			return r.err
		}
	}
}

// receive is the stream's receive loop. It hands the first frame to the
// handler, waits for the session to be admitted, then reads Acks, Replies,
// Pongs and Publishes until the stream ends. It ends by itself once the
// handler has returned, since gRPC then finishes the stream.
func (s *Server) receive(stream connectStream, ss *session, first chan<- recvResult) {
	req, err := stream.Recv()
	first <- recvResult{req: req, err: err}
	if err != nil {
		return
	}
	select {
	case <-ss.admitted:
	case <-stream.Context().Done():
		return
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			// The device closed its side: a clean end.
			ss.close(closeReason{}, closeGrace)
			return
		}
		if err != nil {
			ss.close(closeReason{err: err}, closeGrace)
			return
		}
		ss.lastRecv.Store(time.Now().UnixNano())
		s.stats.frames.Add(1)
		if err := s.handle(ss, req); err != nil {
			ss.close(closeReason{err: err}, closeGrace)
			return
		}
	}
}

// handle acts on one frame received after the Hello.
func (s *Server) handle(ss *session, req *executorv1.ConnectRequest) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("executor hook panicked", "device", ss.deviceID, "panic", fmt.Sprint(p))
			err = errHookPanic
		}
	}()
	switch f := req.GetFrame().(type) {
	case *executorv1.ConnectRequest_Ack:
		ss.resolve(f.Ack.GetMessageId(), nil)
		if h := s.cfg.Hooks.OnAck; h != nil {
			h(ss.deviceID, f.Ack.GetMessageId())
		}
	case *executorv1.ConnectRequest_Reply:
		// A Reply acknowledges its message too.
		ss.resolve(f.Reply.GetMessageId(), f.Reply)
		if h := s.cfg.Hooks.OnAck; h != nil {
			h(ss.deviceID, f.Reply.GetMessageId())
		}
	case *executorv1.ConnectRequest_Publish:
		if why, err := checkPublish(f.Publish); err != nil {
			return s.refusePublish(ss, why, err)
		}
		ss.traffic.countPublish(f.Publish)
		s.publish(ss.deviceID, f.Publish)
	case *executorv1.ConnectRequest_Hello:
		return streamErrorf(errProtocol, "Hello sent twice on one stream")
	case *executorv1.ConnectRequest_Pong:
		// Liveness only: lastRecv was updated.
	default:
		// A frame this executor does not know (from a newer device) still
		// proves the device alive.
	}
	return nil
}
