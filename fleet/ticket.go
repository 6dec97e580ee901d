package fleet

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// MaxAdmittedReplicas bounds the replicas an executor's record reports
// reservations of (Executor.Admitted).
const MaxAdmittedReplicas = 64

// MaxAdmittedRanges bounds the ranges of one replica in an executor's
// record (Executor.Admitted).
const MaxAdmittedRanges = 128

// SeqSet is a set of reservation sequence numbers: ascending, disjoint,
// inclusive ranges [lo, hi], encoded in JSON as [[lo,hi],…].
type SeqSet [][2]uint64

// Contains reports whether n is in s.
func (s SeqSet) Contains(n uint64) bool {
	i := sort.Search(len(s), func(i int) bool { return s[i][1] >= n })
	return i < len(s) && s[i][0] <= n
}

// Validate checks that s is ascending, disjoint and within
// MaxAdmittedRanges.
func (s SeqSet) Validate() error {
	if len(s) > MaxAdmittedRanges {
		return fmt.Errorf("%d ranges; at most %d", len(s), MaxAdmittedRanges)
	}
	for i, r := range s {
		if r[0] > r[1] || i > 0 && r[0] <= s[i-1][1] {
			return fmt.Errorf("range %d %v: want ascending, disjoint ranges", i, r)
		}
	}
	return nil
}

// Ticket names one reservation: control plane replica Replica sent a device
// to executor Executor, as its Seq-th reservation on that executor. A
// replica numbers its reservations on each executor in order, from its
// start time in nanoseconds (so that a restarted replica keeping its id
// never reuses a number), so the numbers an executor admitted form a few
// ranges, which its record reports (Executor.Admitted) together with the
// count that includes them.
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
	var buf [96]byte
	b := append(append(append(append(buf[:0], t.Replica...), '/'), t.Executor...), '/')
	return string(strconv.AppendUint(b, t.Seq, 10))
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
