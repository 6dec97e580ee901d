package executor

import (
	"context"
	"fmt"
	"sync"
	"time"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// Heartbeats: one goroutine per executor, not a ticker per stream. The
// sessions sit in a wheel of slots; each tick (PingInterval / slots) visits
// the next slot, so every session is visited once per PingInterval, and a
// session joins the slot visited last, so its first visit comes one
// PingInterval after its admission, as a per-stream ticker's would. A visit
// closes a session silent for PingMisses intervals with Goodbye{TIMEOUT},
// cuts one whose Send has been blocked as long (a device that sends but
// does not read), and otherwise queues a Ping.

// wheelTick is the shortest tick of the wheel: a short PingInterval gets
// fewer slots.
const wheelTick = 50 * time.Millisecond

// maxWheelSlots bounds the slots: at the default 20s interval a tick every
// 312ms pings 1/64 of the streams.
const maxWheelSlots = 64

// heartbeat is the wheel of sessions to ping.
type heartbeat struct {
	mu    sync.Mutex
	slots [][]*session
	// next is the slot the next tick visits.
	next int
}

// newHeartbeat returns a wheel for interval.
func newHeartbeat(interval time.Duration) *heartbeat {
	n := int(min(max(interval/wheelTick, 1), maxWheelSlots))
	return &heartbeat{slots: make([][]*session, n)}
}

// tick is the wheel's period for interval.
func (h *heartbeat) tick(interval time.Duration) time.Duration {
	return interval / time.Duration(len(h.slots))
}

// add puts ss in the slot visited last.
func (h *heartbeat) add(ss *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	slot := (h.next + len(h.slots) - 1) % len(h.slots)
	ss.slot, ss.pos = slot, len(h.slots[slot])
	h.slots[slot] = append(h.slots[slot], ss)
}

// remove takes ss out of the wheel.
func (h *heartbeat) remove(ss *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.slots[ss.slot]
	if ss.pos >= len(s) || s[ss.pos] != ss {
		return
	}
	last := len(s) - 1
	s[ss.pos] = s[last]
	s[ss.pos].pos = ss.pos
	s[last] = nil
	h.slots[ss.slot] = s[:last]
}

// due returns, in buf, the sessions of the next slot, and moves on.
func (h *heartbeat) due(buf []*session) []*session {
	h.mu.Lock()
	defer h.mu.Unlock()
	buf = append(buf[:0], h.slots[h.next]...)
	h.next = (h.next + 1) % len(h.slots)
	return buf
}

// runHeartbeat visits the wheel until ctx ends.
func (s *Server) runHeartbeat(ctx context.Context) {
	t := time.NewTicker(s.beats.tick(s.cfg.PingInterval))
	defer t.Stop()
	var buf []*session
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			buf = s.beats.due(buf)
			for _, ss := range buf {
				s.beat(ss, now)
			}
			clear(buf)
		}
	}
}

// beat is one visit of ss at now.
func (s *Server) beat(ss *session, now time.Time) {
	if ss.closed() {
		return
	}
	silence := time.Duration(s.cfg.PingMisses) * s.cfg.PingInterval
	if start := ss.sendStart.Load(); start != 0 {
		if blocked := now.Sub(time.Unix(0, start)); blocked >= silence {
			err := streamErrorf(ErrSendQueueFull, "a send blocked for %v: device not reading; stream closed", blocked.Round(time.Millisecond))
			ss.close(closeReason{err: err}, 0)
			return
		}
	}
	if quiet := now.Sub(time.Unix(0, ss.lastRecv.Load())); quiet >= silence {
		msg := fmt.Sprintf("nothing received from the device for %v (%d pings of %v)", quiet.Round(time.Millisecond), s.cfg.PingMisses, s.cfg.PingInterval)
		// Counted before the sender runs, so that whoever sees the stream
		// end sees it counted.
		if ss.markClosed(closeReason{
			err:     streamErrorf(errSilent, "%s", msg),
			goodbye: &executorv1.Goodbye{Reason: executorv1.GoodbyeReason_GOODBYE_REASON_TIMEOUT, Message: msg},
		}, closeGrace) {
			s.stats.timeouts.Add(1)
			ss.wake()
		}
		return
	}
	ss.nonce++
	// A full queue closes the stream (enqueue's overflow policy).
	_ = ss.enqueue(&executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Ping{Ping: &executorv1.Ping{Nonce: ss.nonce}}})
}
