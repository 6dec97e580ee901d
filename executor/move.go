package executor

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// Move asks a connected device to move to the request's destination: it
// queues a Redirect{REBALANCE} carrying it on the device's stream. The
// device connects there without calling Assign, and closes its stream here
// once the new one is welcomed. Move does not wait for that: the rebalancer
// watches the device's presence.
func (svc internalService) Move(_ context.Context, req *executorv1.MoveRequest) (*executorv1.MoveResponse, error) {
	s := svc.s
	dest := req.GetDestination()
	switch {
	case req.GetDeviceId() == "":
		return nil, status.Error(codes.InvalidArgument, "device_id is required")
	case dest.GetGroupId() == "":
		return nil, status.Error(codes.InvalidArgument, "destination.group_id is required")
	case len(dest.GetEndpoints()) == 0:
		return nil, status.Error(codes.InvalidArgument, "destination.endpoints: at least one is required")
	case dest.GetToken() == "":
		return nil, status.Error(codes.InvalidArgument, "destination.token is required")
	case req.GetMaxDelay().AsDuration() < 0:
		return nil, status.Error(codes.InvalidArgument, "max_delay must not be negative")
	}
	for i, ep := range dest.GetEndpoints() {
		if ep.GetAddress() == "" {
			return nil, status.Errorf(codes.InvalidArgument, "destination.endpoints[%d].address is required", i)
		}
	}
	s.mu.Lock()
	ss := s.sessions[req.GetDeviceId()]
	s.mu.Unlock()
	if ss == nil {
		return nil, status.Errorf(codes.NotFound, "device %s is not connected to executor %s", req.GetDeviceId(), s.cfg.ID)
	}
	msg := req.GetMessage()
	if msg == "" {
		msg = fmt.Sprintf("moving to group %s", dest.GetGroupId())
	}
	r := &executorv1.Redirect{
		Reason:      executorv1.RedirectReason_REDIRECT_REASON_REBALANCE,
		Message:     msg,
		Destination: dest,
		MaxDelay:    req.GetMaxDelay(),
	}
	err := ss.enqueue(&executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Redirect{Redirect: r}})
	switch {
	case err == nil:
		s.log.Debug("device asked to move", "device", req.GetDeviceId(), "session", ss.id, "to_group", dest.GetGroupId())
		return &executorv1.MoveResponse{SessionId: ss.id}, nil
	case errors.Is(err, ErrNotConnected):
		return nil, status.Errorf(codes.NotFound, "device %s is not connected to executor %s", req.GetDeviceId(), s.cfg.ID)
	case errors.Is(err, ErrSendQueueFull):
		return nil, status.Errorf(codes.ResourceExhausted, "device %s: send queue full (%d frames): device not reading; stream closed", req.GetDeviceId(), s.cfg.SendQueue)
	}
	return nil, status.Error(codes.Internal, "internal error")
}
