package executor

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/token"
)

// InternalServiceName is the name of the service control planes call on
// executors.
const InternalServiceName = "berth.executor.v1.ExecutorInternalService"

// ErrNotAcknowledged means a delivery's stream ended before the device
// acknowledged the message; it may or may not have reached the device.
var ErrNotAcknowledged = errors.New("executor: stream closed before the device acknowledged")

// isInternal selects the calls of ExecutorInternalService: only they need a
// service token. ExecutorService is authenticated by its Hello instead.
var isInternal = selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
	return c.Service == InternalServiceName
})

func (s *Server) internalUnaryAuth() grpc.UnaryServerInterceptor {
	return selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(s.authorizer()), isInternal)
}

func (s *Server) internalStreamAuth() grpc.StreamServerInterceptor {
	return selector.StreamServerInterceptor(auth.StreamServerInterceptor(s.authorize), isInternal)
}

// authorize admits a call that carries "authorization: Bearer <token>" with
// a control plane's service token: UNAUTHENTICATED without a token or with
// one that does not verify, PERMISSION_DENIED for any other valid token
// (a device's assignment token).
func (s *Server) authorize(ctx context.Context) (context.Context, error) {
	if _, _, err := s.serviceClaims(ctx); err != nil {
		return nil, err
	}
	return ctx, nil
}

// serviceClaims is authorize's check; it returns the raw token and its
// claims. A refusal is logged and counted (refusedService).
func (s *Server) serviceClaims(ctx context.Context) (string, token.Claims, error) {
	raw, c, err := s.checkServiceToken(ctx)
	if err != nil {
		s.refusedService(ctx, err)
	}
	return raw, c, err
}

// checkServiceToken is serviceClaims without the log.
func (s *Server) checkServiceToken(ctx context.Context) (string, token.Claims, error) {
	raw, err := auth.AuthFromMD(ctx, "bearer")
	if err != nil {
		return "", token.Claims{}, status.Error(codes.Unauthenticated, `service token missing: want metadata "authorization: Bearer <token>"`)
	}
	c, err := s.verifier.Verify(raw)
	switch {
	case errors.Is(err, token.ErrMissing):
		return "", c, status.Error(codes.Unauthenticated, `service token missing: want metadata "authorization: Bearer <token>"`)
	case errors.Is(err, token.ErrExpired):
		return "", c, status.Error(codes.Unauthenticated, "service token expired")
	case errors.Is(err, token.ErrInvalid):
		return "", c, status.Error(codes.Unauthenticated, "service token invalid: "+strings.TrimPrefix(err.Error(), token.ErrInvalid.Error()+": "))
	case err != nil:
		return "", c, status.Error(codes.Unauthenticated, "service token invalid")
	}
	if c.Role != token.RoleControlPlane {
		return "", c, status.Error(codes.PermissionDenied, "not a control plane's service token: only control planes may call ExecutorInternalService")
	}
	return raw, c, nil
}

// internalService implements ExecutorInternalService for a Server.
type internalService struct {
	executorv1.UnimplementedExecutorInternalServiceServer
	s *Server
}

// Deliver hands a message to a connected device and waits for its Ack (or
// Reply) within the call's deadline.
func (svc internalService) Deliver(ctx context.Context, req *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
	s := svc.s
	m := req.GetMessage()
	switch {
	case req.GetDeviceId() == "":
		return nil, status.Error(codes.InvalidArgument, "device_id is required")
	case m == nil:
		return nil, status.Error(codes.InvalidArgument, "message is required")
	case m.GetMessageId() == "":
		return nil, status.Error(codes.InvalidArgument, "message.message_id is required")
	}
	s.mu.Lock()
	ss := s.sessions[req.GetDeviceId()]
	s.mu.Unlock()
	if ss == nil {
		return nil, status.Errorf(codes.NotFound, "device %s is not connected to executor %s", req.GetDeviceId(), s.cfg.ID)
	}
	stampTrace(ctx, m)
	reply, err := s.deliverWait(ctx, ss, m)
	switch {
	case err == nil:
		return &executorv1.DeliverResponse{Reply: reply, SessionId: ss.id}, nil
	case errors.Is(err, ErrNotConnected):
		return nil, status.Errorf(codes.NotFound, "device %s is not connected to executor %s", req.GetDeviceId(), s.cfg.ID)
	case errors.Is(err, ErrSendQueueFull):
		// The stream was cut because the device does not read: say so,
		// also to deliveries that were waiting for its Ack.
		return nil, status.Errorf(codes.ResourceExhausted, "device %s: %v", req.GetDeviceId(), err)
	case errors.Is(err, ErrNotAcknowledged):
		return nil, status.Errorf(codes.Unavailable, "device %s: stream closed before the device acknowledged message %s", req.GetDeviceId(), m.GetMessageId())
	case errors.Is(err, context.DeadlineExceeded):
		what := "acknowledge"
		if m.GetExpectsReply() {
			what = "reply to"
		}
		return nil, status.Errorf(codes.DeadlineExceeded, "device %s did not %s message %s in time", req.GetDeviceId(), what, m.GetMessageId())
	case errors.Is(err, context.Canceled):
		return nil, status.Error(codes.Canceled, "delivery cancelled")
	}
	return nil, status.Error(codes.Internal, "internal error")
}

// deliverWait queues m on ss and waits until the device acknowledges it:
// its Ack, or its Reply when m expects one (a Reply is an Ack too). It
// returns the Reply (nil for an Ack), or an error wrapping ErrNotConnected
// (ss was closing), ErrSendQueueFull (ss is closed now), ErrNotAcknowledged
// (ss ended during the wait) or ctx's error. It takes ownership of m.
func (s *Server) deliverWait(ctx context.Context, ss *session, m *executorv1.Message) (*executorv1.Reply, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	id := m.GetMessageId()
	// Registered before the frame is queued, so that a fast Ack is not
	// missed.
	w := ss.await(id, m.GetExpectsReply())
	defer ss.forget(id, w)
	if err := ss.enqueue(&executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Message{Message: m}}); err != nil {
		return nil, err
	}
	select {
	case r := <-w.done:
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-ss.done:
		// An Ack read just before the end still counts.
		select {
		case r := <-w.done:
			return r, nil
		default:
		}
		if r := ss.reason.err; errors.Is(r, ErrSendQueueFull) {
			return nil, r // cut for not reading: the reason, not "closed"
		}
		return nil, ErrNotAcknowledged
	}
}

// subscriber is one Subscribe stream's buffer.
type subscriber struct {
	ch chan *executorv1.SubscribeResponse
}

// Subscribe streams every Publish received from now on, until the caller
// goes or the executor shuts down (UNAVAILABLE).
func (svc internalService) Subscribe(_ *executorv1.SubscribeRequest, stream grpc.ServerStreamingServer[executorv1.SubscribeResponse]) error {
	s := svc.s
	sub := &subscriber{ch: make(chan *executorv1.SubscribeResponse, s.cfg.SubscribeBuffer)}
	s.subMu.Lock()
	select {
	case <-s.subsClosed:
		s.subMu.Unlock()
		return status.Error(codes.Unavailable, "executor shutting down")
	default:
	}
	s.subs[sub] = struct{}{}
	s.subMu.Unlock()
	defer func() {
		s.subMu.Lock()
		delete(s.subs, sub)
		s.subMu.Unlock()
	}()
	ctx := stream.Context()
	for {
		select {
		case r := <-sub.ch:
			if err := stream.Send(r); err != nil {
				return err
			}
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.subsClosed:
			return status.Error(codes.Unavailable, "executor shutting down")
		}
	}
}

// closeSubscribers ends every Subscribe stream, and refuses new ones.
func (s *Server) closeSubscribers() {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	select {
	case <-s.subsClosed:
	default:
		close(s.subsClosed)
	}
}

// hasSubscribers reports whether any Subscribe stream is open.
func (s *Server) hasSubscribers() bool {
	s.subMu.RLock()
	defer s.subMu.RUnlock()
	return len(s.subs) > 0
}

// fanOut gives p to every subscriber without blocking: a subscriber whose
// buffer is full misses it, and the drop is counted (and logged at most
// once a second). p must not change afterwards.
func (s *Server) fanOut(deviceID string, p *executorv1.Publish) {
	r := &executorv1.SubscribeResponse{
		DeviceId:   deviceID,
		Publish:    p,
		ReceivedAt: timestamppb.Now(),
		ExecutorId: s.cfg.ID,
	}
	var dropped uint64
	s.subMu.RLock()
	for sub := range s.subs {
		select {
		case sub.ch <- r:
		default:
			dropped++
		}
	}
	s.subMu.RUnlock()
	if dropped == 0 {
		return
	}
	total := s.stats.dropped.Add(dropped)
	now := time.Now().UnixNano()
	last := s.dropLogAt.Load()
	if now-last >= int64(time.Second) && s.dropLogAt.CompareAndSwap(last, now) {
		s.log.Warn("subscriber too slow: publishes dropped", "dropped_total", total)
	}
}

// publish hands a Publish frame to the subscribers and to Hooks.OnPublish.
func (s *Server) publish(deviceID string, p *executorv1.Publish) {
	hook := s.cfg.Hooks.OnPublish
	if s.hasSubscribers() {
		shared := p
		if hook != nil {
			// The hook owns p and may change it.
			shared = proto.CloneOf(p)
		}
		s.fanOut(deviceID, shared)
	}
	if hook != nil {
		hook(deviceID, p)
	}
}
