package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/berthproject/berth/token"
)

// Errors returned by Server.Deliver. Callers branch on them with errors.Is.
var (
	// ErrNotConnected means the device has no open stream on this executor.
	ErrNotConnected = errors.New("executor: device not connected")
	// ErrSendQueueFull means the device's send queue was full: the stream
	// was considered stuck and has been closed.
	ErrSendQueueFull = errors.New("executor: send queue full")
)

// Why streams are refused or closed. Each kind becomes one gRPC code in
// toStatus; the streamError that wraps it carries the message.
var (
	errNoHello     = errors.New("no Hello")
	errNotHello    = errors.New("first frame must be Hello")
	errProtocol    = errors.New("protocol violation")
	errWrongDevice = errors.New("token was minted for another device")
	errWrongGroup  = errors.New("token for another group")
	errUnbound     = errors.New("token bound to another certificate")
	errRevoked     = errors.New("identity revoked")
	errDraining    = errors.New("executor draining")
	errAtCapacity  = errors.New("executor at capacity")
	errReplaced    = errors.New("stream replaced")
	errSilent      = errors.New("device silent")
	errShutdown    = errors.New("executor shutting down")
	errHookPanic   = errors.New("hook panicked")
	errRunTwice    = errors.New("executor: Run called more than once")
)

// streamError is a refusal or a deliberate close: a kind (one of the errors
// above) and the message the device reads.
type streamError struct {
	kind error
	msg  string
}

func (e *streamError) Error() string { return e.msg }
func (e *streamError) Unwrap() error { return e.kind }

// streamErrorf returns a streamError of kind with a formatted message.
func streamErrorf(kind error, format string, args ...any) error {
	return &streamError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// toStatus maps the errors that end a Connect stream to gRPC statuses; it is
// the only place that does. retry is the hint attached to the refusals a
// device should retry later (capacity, draining).
func toStatus(err error, retry time.Duration) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	switch {
	case errors.Is(err, token.ErrMissing):
		return status.Error(codes.Unauthenticated, "assignment token missing")
	case errors.Is(err, token.ErrExpired):
		return status.Error(codes.FailedPrecondition, "assignment token expired; call Assign again")
	case errors.Is(err, token.ErrInvalid):
		detail := strings.TrimPrefix(msg, token.ErrInvalid.Error()+": ")
		return status.Error(codes.Unauthenticated, "assignment token invalid: "+detail)
	case errors.Is(err, errNoHello), errors.Is(err, errSilent):
		return status.Error(codes.DeadlineExceeded, msg)
	case errors.Is(err, errNotHello), errors.Is(err, errProtocol):
		return status.Error(codes.InvalidArgument, msg)
	case errors.Is(err, errWrongDevice), errors.Is(err, errRevoked):
		return status.Error(codes.PermissionDenied, msg)
	case errors.Is(err, errUnbound):
		return status.Error(codes.Unauthenticated, msg)
	case errors.Is(err, errWrongGroup):
		return status.Error(codes.FailedPrecondition, msg)
	case errors.Is(err, errAtCapacity):
		return withRetry(codes.ResourceExhausted, msg, retry)
	case errors.Is(err, errDraining):
		return withRetry(codes.Unavailable, msg, retry)
	case errors.Is(err, errShutdown):
		return status.Error(codes.Unavailable, msg)
	case errors.Is(err, errReplaced):
		return status.Error(codes.Aborted, msg)
	case errors.Is(err, ErrSendQueueFull):
		return status.Error(codes.ResourceExhausted, msg)
	case errors.Is(err, errHookPanic):
		return status.Error(codes.Internal, "internal error")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	// gRPC's own errors (a broken stream, a frame over the size limit)
	// already carry their status.
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, "internal error")
}

// withRetry makes a status carrying a RetryInfo detail.
func withRetry(c codes.Code, msg string, retry time.Duration) error {
	st := status.New(c, msg)
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); err == nil {
		return d.Err()
	}
	return st.Err()
}
