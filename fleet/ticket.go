package fleet

import (
	"errors"
	"strconv"
	"strings"
)

// MaxAdmittedReplicas bounds the replicas an executor's record reports
// reservations of (Executor.Admitted).
const MaxAdmittedReplicas = 64

// Ticket names one reservation: control plane replica Replica sent a device
// to executor Executor, as its Seq-th reservation. Sequence numbers of a
// replica only grow (they start at the replica's start time in
// nanoseconds), so an executor that reports the highest one it admitted
// says, in one number, which of that replica's reservations its count
// includes.
//
// The ticket travels in the Assign answer (Destination.reservation) and
// back in the device's Hello. It is not signed: a device that forges one
// can only make a replica stop counting reservations on the executor the
// device connected to, which leaves it as if reservations did not exist
// there until the next count (see docs/design.md, "Reservations").
type Ticket struct {
	// Replica is the control plane replica that made the reservation.
	Replica string
	// Executor is the executor the reservation was made on.
	Executor string
	// Seq is the reservation's sequence number in the replica.
	Seq uint64
}

// String encodes t as "<replica>/<executor>/<seq>".
func (t Ticket) String() string {
	return t.Replica + "/" + t.Executor + "/" + strconv.FormatUint(t.Seq, 10)
}

// ErrBadTicket means a reservation ticket is malformed.
var ErrBadTicket = errors.New("malformed reservation ticket")

// ParseTicket decodes a ticket written by Ticket.String.
func ParseTicket(s string) (Ticket, error) {
	replica, rest, ok := strings.Cut(s, "/")
	if !ok {
		return Ticket{}, ErrBadTicket
	}
	exec, seq, ok := strings.Cut(rest, "/")
	if !ok || !ValidID(replica) || !ValidID(exec) {
		return Ticket{}, ErrBadTicket
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || n == 0 {
		return Ticket{}, ErrBadTicket
	}
	return Ticket{Replica: replica, Executor: exec, Seq: n}, nil
}
