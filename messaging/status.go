package messaging

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/execclient"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/registry"
)

// The statuses of MessagingService are made here and only here. None of
// them carries a raw registry or etcd error: those are logged.

// invalidArgument reports bad input.
func invalidArgument(err error) error {
	return status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), "registry: invalid value: "))
}

// offlineStatus says the device holds no stream.
func offlineStatus(device string) error {
	return status.Errorf(codes.Unavailable, "device %s is not connected", device)
}

// unknownDeviceStatus says nothing is known of a device.
func unknownDeviceStatus(device string) error {
	return status.Errorf(codes.NotFound, "device %s is unknown: not connected, no assignment record, no queued messages", device)
}

// unassignedStatus refuses to queue for a device that was never assigned.
func unassignedStatus(device string) error {
	return status.Errorf(codes.NotFound, "device %s was never assigned (no assignment record) and is not connected; nothing was queued (set allow_unassigned to queue for it anyway)", device)
}

// queueFullStatus names the queue bound that was reached.
func queueFullStatus(err error, retry time.Duration) error {
	msg := strings.TrimPrefix(err.Error(), registry.ErrQueueFull.Error()+": ")
	return rpcserver.WithRetry(codes.ResourceExhausted, "queue full: "+msg+"; nothing was stored", retry)
}

// busyStatus refuses a delivery to a device that has as many deliveries,
// or bytes, in flight from this replica as its bounds allow, with a retry
// hint in the status and in the pushback trailer.
func (m *Server) busyStatus(ctx context.Context, b *busyError) error {
	_ = grpc.SetTrailer(ctx, rpcserver.Pushback(m.retry))
	return rpcserver.WithRetry(codes.ResourceExhausted, busyMessage(b)+"; nothing was sent", m.retry)
}

// busyMessage says why b refused a delivery.
func busyMessage(b *busyError) string {
	return fmt.Sprintf("device %s is not reading fast enough: %d bytes in %d deliveries to it wait for its acknowledgement (this replica allows %d bytes and %d deliveries in flight per device)",
		b.device, b.bytes, b.count, b.maxBytes, b.maxCount)
}

// contextStatus is the status of a call that ended with its context.
func contextStatus(err error) error {
	return status.FromContextError(err).Err()
}

// registryStatus reports a registry failure without its raw error.
func (m *Server) registryStatus(ctx context.Context, err error, what string) error {
	if ctx.Err() != nil {
		return contextStatus(ctx.Err())
	}
	m.log.Warn("registry error", "what", what, "err", err)
	return rpcserver.WithRetry(codes.Unavailable, "registry unavailable: "+what, m.retry)
}

// deliverStatus maps the executor's answer to a Deliver into the caller's
// status. call says the message expected a reply.
func (m *Server) deliverStatus(err error, p registry.Presence, messageID string, call bool) error {
	verb := "acknowledge"
	if call {
		verb = "answer"
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, execclient.ErrClosed) {
			return status.Error(codes.Unavailable, "control plane stopping; retry on another replica")
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return contextStatus(err)
		}
		m.log.Warn("delivery failed", "device", p.DeviceID, "executor", p.ExecutorID, "err", err)
		return rpcserver.WithRetry(codes.Unavailable, fmt.Sprintf("executor %s holding device %s is unreachable", p.ExecutorID, p.DeviceID), m.retry)
	}
	switch st.Code() {
	case codes.NotFound:
		// The presence record was stale: the device left meanwhile.
		return offlineStatus(p.DeviceID)
	case codes.DeadlineExceeded:
		// The executor's answer, or no answer in time (a network that
		// drops packets between control plane and executor).
		return status.Errorf(codes.DeadlineExceeded, "device %s did not %s message %s in time (or executor %s did not answer in time)", p.DeviceID, verb, messageID, p.ExecutorID)
	case codes.Canceled:
		return status.Error(codes.Canceled, "the call was cancelled")
	case codes.ResourceExhausted:
		// The executor says why: the device does not read (its stream was
		// cut, or its send queue is full).
		return rpcserver.WithRetry(codes.ResourceExhausted, fmt.Sprintf("executor %s: %s", p.ExecutorID, st.Message()), m.retry)
	case codes.Unauthenticated, codes.PermissionDenied:
		m.log.Error("executor refused the service token; do executors verify with this control plane's public key?",
			"executor", p.ExecutorID, "code", st.Code(), "err", st.Message())
		return status.Errorf(codes.Internal, "executor %s refused this control plane's credentials", p.ExecutorID)
	case codes.Unimplemented:
		// An older executor, or a device port that refuses control
		// planes (the executor serves them on its internal address).
		m.log.Warn("executor does not serve delivery where it was called", "executor", p.ExecutorID, "address", p.ControlAddress(), "err", st.Message())
		return status.Errorf(codes.Unavailable, "executor %s does not deliver messages at the address it was called at (an older version, or a port that does not serve control planes?)", p.ExecutorID)
	case codes.Unavailable:
		return rpcserver.WithRetry(codes.Unavailable, fmt.Sprintf("executor %s holding device %s is unreachable", p.ExecutorID, p.DeviceID), m.retry)
	default:
		m.log.Warn("delivery failed", "device", p.DeviceID, "executor", p.ExecutorID, "code", st.Code(), "err", st.Message())
		return rpcserver.WithRetry(codes.Unavailable, fmt.Sprintf("delivery to device %s failed at executor %s (%s)", p.DeviceID, p.ExecutorID, st.Code()), m.retry)
	}
}

// noReplyStatus says an executor answered a Call without the reply.
func noReplyStatus(device, executorID string) error {
	return status.Errorf(codes.Internal, "executor %s returned no reply from device %s", executorID, device)
}

// replyErrorStatus carries the device's error message.
func replyErrorStatus(device, msg string) error {
	if len(msg) > maxReplyErrorLen {
		msg = msg[:maxReplyErrorLen]
		for !utf8.ValidString(msg) {
			msg = msg[:len(msg)-1]
		}
		msg += "…"
	}
	return status.Errorf(codes.Aborted, "device %s: %s", device, msg)
}

// stoppingStatus ends subscriptions when the control plane stops.
func stoppingStatus() error {
	return status.Error(codes.Unavailable, "control plane stopping; subscribe again")
}

// statusMessage is err's status message.
func statusMessage(err error) string { return status.Convert(err).Message() }
