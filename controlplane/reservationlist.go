package controlplane

import (
	"slices"
	"sort"
	"time"

	"github.com/berthproject/berth/fleet"
)

// reservation is one device sent to an executor.
type reservation struct {
	at  time.Time
	seq uint64
	w   float64
	// cum is the running sum of w of the list's entries up to and
	// including this one (gone ones too), for the time rule.
	cum float64
	// gone: admitted (a record listed it) or withdrawn.
	gone bool
}

// groupReservation is a device another replica sent to a group without a
// ticket.
type groupReservation struct {
	at time.Time
	w  float64
}

// reservationList is one executor's reservations of one replica, ascending
// by sequence number. Entries before head are dropped; entries marked gone
// wait for the next compaction. live is the weight of the entries from head
// not gone; entries numbered up to checkedTo were checked against set (the
// executor's admitted numbers last read). Every operation costs in
// proportion to what changed (new entries, new records, expired ones), not
// to the list's length, however many devices are on their way.
type reservationList struct {
	rs        []reservation
	head      int
	gone      int
	live      float64
	set       fleet.SeqSet
	checkedTo uint64
}

// insert adds x in order of its number; one the last set read lists is
// admitted already and not added.
func (l *reservationList) insert(x reservation) {
	if x.seq <= l.checkedTo && l.set.Contains(x.seq) {
		return
	}
	i := len(l.rs)
	for i > l.head && l.rs[i-1].seq > x.seq {
		i--
	}
	l.rs = slices.Insert(l.rs, i, x)
	for j := i; j < len(l.rs); j++ {
		l.rs[j].cum = l.rs[j].w
		if j > 0 {
			l.rs[j].cum += l.rs[j-1].cum
		}
	}
	l.live += x.w
}

// cancel marks the reservation numbered seq gone.
func (l *reservationList) cancel(seq uint64) {
	i := l.search(seq)
	if i < len(l.rs) && l.rs[i].seq == seq {
		l.markGone(i)
	}
}

// search returns the first index from head whose number is at least seq.
func (l *reservationList) search(seq uint64) int {
	return l.head + sort.Search(len(l.rs)-l.head, func(i int) bool { return l.rs[l.head+i].seq >= seq })
}

func (l *reservationList) markGone(i int) {
	if !l.rs[i].gone {
		l.rs[i].gone = true
		l.live -= l.rs[i].w
		l.gone++
	}
}

// expire drops the entries at the front made before old (the list is
// ascending by time too, but for learnt entries that came out of order,
// which expire once they reach the front).
func (l *reservationList) expire(old time.Time) {
	for l.head < len(l.rs) && !l.rs[l.head].at.After(old) {
		if l.rs[l.head].gone {
			l.gone--
		} else {
			l.live -= l.rs[l.head].w
		}
		l.head++
	}
}

// pending marks the reservations set lists gone, drops those made before
// old, and returns the weight of the rest: only entries not checked against
// set yet, and only those within its range, are looked at.
func (l *reservationList) pending(set fleet.SeqSet, old time.Time) float64 {
	l.expire(old)
	if !sameSet(set, l.set) {
		l.set, l.checkedTo = set, 0
	}
	if n := len(l.rs); n > l.head && l.rs[n-1].seq > l.checkedTo {
		if len(set) > 0 {
			lo, hi := max(l.checkedTo+1, set[0][0]), set[len(set)-1][1]
			for i := l.search(lo); i < n && l.rs[i].seq <= hi; i++ {
				if !l.rs[i].gone && set.Contains(l.rs[i].seq) {
					l.markGone(i)
				}
			}
		}
		l.checkedTo = l.rs[n-1].seq
	}
	l.compact()
	if l.live < 1e-9 {
		l.live = 0 // float drift of additions and subtractions
	}
	return l.live
}

// madeAfter is the weight of the reservations made after cut (the time
// rule, for executors that do not report reservations).
func (l *reservationList) madeAfter(cut time.Time) float64 {
	n := len(l.rs)
	i := l.head + sort.Search(n-l.head, func(i int) bool { return l.rs[l.head+i].at.After(cut) })
	if i >= n {
		return 0
	}
	return l.rs[n-1].cum - l.rs[i].cum + l.rs[i].w
}

// compact drops the dropped and gone entries once they are most of the
// list.
func (l *reservationList) compact() {
	if n := len(l.rs); n < 64 || l.head+l.gone < n/2 {
		return
	}
	kept := make([]reservation, 0, len(l.rs)-l.head-l.gone+16)
	sum := 0.0
	for _, x := range l.rs[l.head:] {
		if x.gone {
			continue
		}
		sum += x.w
		x.cum = sum
		kept = append(kept, x)
	}
	l.rs, l.head, l.gone, l.live = kept, 0, 0, sum
}

// newest is when the newest entry was made (zero when none).
func (l *reservationList) newest() time.Time {
	if len(l.rs) == l.head {
		return time.Time{}
	}
	return l.rs[len(l.rs)-1].at
}

// sameSet reports whether a and b are the same decoded set (not merely
// equal): a record read again needs no new check.
func sameSet(a, b fleet.SeqSet) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
