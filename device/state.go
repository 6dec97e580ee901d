package device

import (
	"fmt"
	"time"
)

// State is where a Device is in its connection life cycle.
type State int

// The states of a Device. A Device starts Idle, cycles through Assigning,
// Connecting, Connected and Backoff, and ends Closed.
const (
	// Idle: the Device was created and its run loop has not started yet.
	Idle State = iota
	// Assigning: the Device is calling ControlPlaneService.Assign.
	Assigning
	// Connecting: the Device is opening a stream to an executor.
	Connecting
	// Connected: the Device holds a stream that an executor welcomed.
	Connected
	// Backoff: the last attempt failed; the Device waits before the next.
	Backoff
	// Closed: the Device stopped for good (Close or context cancelled).
	Closed

	numStates = int(Closed) + 1
)

// String returns the lower-case name of s.
func (s State) String() string {
	switch s {
	case Idle:
		return "idle"
	case Assigning:
		return "assigning"
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	case Backoff:
		return "backoff"
	case Closed:
		return "closed"
	default:
		return fmt.Sprintf("State(%d)", int(s))
	}
}

// StateChange describes one transition, as passed to Config.OnStateChange.
// From and To are both Connected when a redirect moved the Device to a new
// executor without a gap (make-before-break).
type StateChange struct {
	// From is the state left.
	From State
	// To is the state entered.
	To State
	// Err is why the transition happened: the failure that led to Backoff
	// (for example a *GoodbyeError or a gRPC status), or, for Closed,
	// ErrClosed after Device.Close or the cause of the Connect context's
	// cancellation. Nil otherwise.
	Err error
	// GroupID is the group the transition is about: the group connected to,
	// being connected to, or just lost. Empty when unknown.
	GroupID string
	// ExecutorID is the executor connected to or just lost. Empty when
	// unknown.
	ExecutorID string
	// Address is the executor's address, like ExecutorID.
	Address string
	// At is when the transition happened.
	At time.Time
}

// SessionInfo describes the stream a Device holds. It is the zero value when
// the Device is not connected.
type SessionInfo struct {
	// GroupID is the processing group of the executor.
	GroupID string
	// Label is the label the control plane assigned the device under.
	Label string
	// ExecutorID is the executor that holds the stream.
	ExecutorID string
	// Address is the executor's address.
	Address string
	// SessionID identifies the stream (from the executor's Welcome).
	SessionID string
	// HeartbeatInterval is how often the executor said it pings.
	HeartbeatInterval time.Duration
	// ConnectedSince is when the executor welcomed the stream.
	ConnectedSince time.Time
}

// Stats are counters of what a Device has done since Connect.
type Stats struct {
	// Assigns counts Assign calls made.
	Assigns uint64
	// Connects counts streams an executor welcomed.
	Connects uint64
	// Redirects counts Redirect frames received.
	Redirects uint64
	// Failures counts failed attempts: failed Assign calls, streams that
	// could not be opened on an endpoint, and established streams that
	// ended (error, Goodbye or silence).
	Failures uint64
	// Duplicates counts messages dropped as duplicates (and acked again).
	Duplicates uint64
}
