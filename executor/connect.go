package executor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	// A missing Hello was counted when its timer ended the stream.
	if !admitted && !errors.Is(err, errNoHello) {
		svc.s.stats.refuse(status.Code(st))
	}
	return st
}

// errNoStatusWriter means gRPC's server transport stream no longer offers
// WriteStatus, which the executor needs to end a stream from another
// goroutine than its handler's (see sender.go): a bug, found by the tests
// on a gRPC upgrade.
var errNoStatusWriter = errors.New("executor: the gRPC transport stream cannot be ended from another goroutine")

// connect serves one stream on its handler goroutine, which is also the
// stream's only receiver: accept with a deadline, verify, register, send
// the Welcome, then receive until the session ends. It reports whether the
// stream was admitted, and the error that ended it (nil for a clean end).
func (s *Server) connect(stream connectStream) (bool, error) {
	ctx := stream.Context()
	sw := streamStatus(ctx)
	if sw == nil {
		return false, errNoStatusWriter
	}
	hello, err := s.awaitHello(stream, sw)
	if err != nil {
		return false, err
	}
	claims, err := s.verifyAside(hello)
	if err != nil {
		s.refusedToken(ctx, hello.GetDeviceId(), err)
		return false, err
	}
	if err := checkBinding(ctx, claims); err != nil {
		return false, err
	}
	ss := newSession(s, stream, sw, s.cfg.SendQueue)
	ss.weight = claims.Weight
	ss.enrollment = claims.Binding.Enrollment
	ss.id = rand.Text()
	ss.deviceID = hello.GetDeviceId()
	ss.ticket, ss.hasTicket = ticketOf(hello.GetReservation(), s.cfg.ID)
	ss.lastRecv.Store(time.Now().UnixNano())
	// Welcome goes first in the queue, before the session is visible to
	// Deliver; the handler owns the sender until it is out.
	ss.queue = append(ss.queue, &executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Welcome{Welcome: &executorv1.Welcome{
		SessionId:         ss.id,
		ExecutorId:        s.cfg.ID,
		GroupId:           s.cfg.GroupID,
		HeartbeatInterval: durationpb.New(s.cfg.PingInterval),
	}}})
	replaced, err := s.admit(ss)
	if err != nil {
		return false, err
	}
	defer s.leave(ss)
	if replaced != nil {
		s.log.Info("stream replaced an older one of the same device", "device", ss.deviceID, "session", ss.id, "old_session", replaced.id)
	} else {
		s.log.Debug("stream admitted", "device", ss.deviceID, "session", ss.id)
	}
	if s.queue != nil {
		// The Welcome is queued already: queued messages follow it. The
		// drain stops when the session ends (it waits on ss.done) and its
		// registry calls when the handler returns.
		// Not a child of the stream's context, which would hold it (and
		// a map of children) for the stream's whole life, nor held by
		// this handler: the session holds its cancel while the drain
		// runs and calls it when it closes (its registry calls end with
		// the session); the drain releases it when it ends.
		qctx, stopQueue := context.WithCancel(context.WithoutCancel(ctx))
		ss.setStopDrain(stopQueue)
		s.group.Go(func() error {
			defer func() {
				ss.setStopDrain(nil)
				stopQueue()
			}()
			s.drainQueue(qctx, ss, s.log.With("device", ss.deviceID, "session", ss.id))
			return nil
		})
	}
	// The Welcome and what was queued behind it, then the sender is given
	// up: enqueue starts one when needed.
	ss.sendQueued()
	err = ss.end(s.receive(stream, ss))
	s.log.Debug("stream closed", "device", ss.deviceID, "session", ss.id, "err", err)
	return true, err
}

// awaitHello receives the first frame, for at most HelloTimeout (then the
// stream is ended with sw, which ends the Recv), and checks that it is a
// Hello.
func (s *Server) awaitHello(stream connectStream, sw statusWriter) (*executorv1.Hello, error) {
	late := func() error { return streamErrorf(errNoHello, "no Hello within %v", s.cfg.HelloTimeout) }
	t := time.AfterFunc(s.cfg.HelloTimeout, func() {
		// Counted before the device can see the status.
		s.stats.refuse(codes.DeadlineExceeded)
		s.writeStatus(sw, late())
	})
	req, err := stream.Recv()
	if !t.Stop() {
		return nil, late()
	}
	if errors.Is(err, io.EOF) {
		return nil, streamErrorf(errNotHello, "first frame must be Hello; the stream ended before one")
	}
	if err != nil {
		return nil, err
	}
	hello := req.GetHello()
	if hello == nil {
		return nil, streamErrorf(errNotHello, "first frame must be Hello")
	}
	return hello, nil
}

// verifyAside is verify on a goroutine of its own, which ends with it.
// Checking a signature takes several KiB of stack; on the handler
// goroutine, which then holds the stream for hours, that stack would stay
// grown (the runtime halves a stack at most once per GC cycle), and idle
// streams would cost twice bare grpc-go's stack (docs/performance.md).
func (s *Server) verifyAside(hello *executorv1.Hello) (token.Claims, error) {
	var (
		claims token.Claims
		err    error
	)
	done := make(chan struct{})
	s.spawn(func() {
		defer close(done)
		claims, err = s.verify(hello)
	})
	<-done
	return claims, err
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

// receive is the stream's receive loop, on the handler goroutine: Acks,
// Replies, Pongs and Publishes until the stream ends. It returns why: a
// clean end when the device closed its side, the error otherwise (a closed
// session's stream is ended by its sender, which ends Recv).
func (s *Server) receive(stream connectStream, ss *session) closeReason {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			// The device closed its side: a clean end.
			return closeReason{}
		}
		if err != nil {
			return closeReason{err: err}
		}
		ss.lastRecv.Store(time.Now().UnixNano())
		s.stats.frames.Add(1)
		if err := s.handle(ss, req); err != nil {
			return closeReason{err: err}
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
