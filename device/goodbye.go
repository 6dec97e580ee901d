package device

import (
	"fmt"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// GoodbyeReason is why an executor closed a stream on purpose.
type GoodbyeReason int

// The reasons an executor gives in a Goodbye.
const (
	// GoodbyeUnknown: the executor gave no reason, or one this SDK does
	// not know.
	GoodbyeUnknown GoodbyeReason = iota
	// GoodbyeReplaced: a newer stream of the same device replaced this one.
	GoodbyeReplaced
	// GoodbyeShutdown: the executor is stopping.
	GoodbyeShutdown
	// GoodbyeTimeout: the device missed too many pings.
	GoodbyeTimeout
	// GoodbyeRevoked: the device was revoked or its enrollment disabled;
	// Assign refuses it until an operator lifts that.
	GoodbyeRevoked
)

// String returns the lower-case name of r.
func (r GoodbyeReason) String() string {
	switch r {
	case GoodbyeUnknown:
		return "unknown"
	case GoodbyeReplaced:
		return "replaced"
	case GoodbyeShutdown:
		return "shutdown"
	case GoodbyeTimeout:
		return "timeout"
	case GoodbyeRevoked:
		return "revoked"
	default:
		return fmt.Sprintf("GoodbyeReason(%d)", int(r))
	}
}

// GoodbyeError reports that an executor closed the stream on purpose with a
// Goodbye frame. It reaches the application as StateChange.Err.
type GoodbyeError struct {
	// Reason is the executor's reason.
	Reason GoodbyeReason
	// Message is the executor's human-readable detail.
	Message string
}

// Error implements error.
func (e *GoodbyeError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("device: goodbye from executor: %s", e.Reason)
	}
	return fmt.Sprintf("device: goodbye from executor: %s: %s", e.Reason, e.Message)
}

// goodbyeError converts a Goodbye frame.
func goodbyeError(g *executorv1.Goodbye) *GoodbyeError {
	return &GoodbyeError{Reason: goodbyeReason(g.GetReason()), Message: g.GetMessage()}
}

// goodbyeReason converts the wire reason.
func goodbyeReason(r executorv1.GoodbyeReason) GoodbyeReason {
	switch r {
	case executorv1.GoodbyeReason_GOODBYE_REASON_REPLACED:
		return GoodbyeReplaced
	case executorv1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN:
		return GoodbyeShutdown
	case executorv1.GoodbyeReason_GOODBYE_REASON_TIMEOUT:
		return GoodbyeTimeout
	case executorv1.GoodbyeReason_GOODBYE_REASON_REVOKED:
		return GoodbyeRevoked
	default:
		return GoodbyeUnknown
	}
}
