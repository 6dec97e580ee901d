package executor

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

func TestHeartbeatWheel(t *testing.T) {
	tests := []struct {
		interval time.Duration
		slots    int
		tick     time.Duration
	}{
		{20 * time.Second, maxWheelSlots, 20 * time.Second / maxWheelSlots},
		{time.Second, 20, 50 * time.Millisecond},
		{10 * time.Millisecond, 1, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		h := newHeartbeat(tt.interval)
		if len(h.slots) != tt.slots || h.tick(tt.interval) != tt.tick {
			t.Errorf("interval %v: %d slots, tick %v; want %d, %v", tt.interval, len(h.slots), h.tick(tt.interval), tt.slots, tt.tick)
		}
	}

	h := newHeartbeat(4 * wheelTick) // 4 slots
	a, b, c := &session{id: "a"}, &session{id: "b"}, &session{id: "c"}
	h.add(a) // joins the slot visited last: visited after the 3 others
	h.add(b)
	var buf []*session
	ids := func(ss []*session) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.id)
		}
		return out
	}
	for i := range 3 {
		if buf = h.due(buf); len(buf) != 0 {
			t.Fatalf("tick %d visits %v; want nobody before a full interval", i, ids(buf))
		}
	}
	h.add(c) // the wheel moved: c's first visit is 4 ticks from now
	if buf = h.due(buf); !slices.Equal(ids(buf), []string{"a", "b"}) {
		t.Fatalf("tick 4 visits %v; want a, b", ids(buf))
	}
	h.remove(a)
	h.remove(a) // twice: harmless
	for i := range 3 {
		buf = h.due(buf)
		if want := []string(nil); i == 2 {
			if !slices.Equal(ids(buf), []string{"c"}) {
				t.Fatalf("tick %d visits %v; want c", 5+i, ids(buf))
			}
		} else if !slices.Equal(ids(buf), want) {
			t.Fatalf("tick %d visits %v; want nobody", 5+i, ids(buf))
		}
	}
	if buf = h.due(buf); !slices.Equal(ids(buf), []string{"b"}) {
		t.Fatalf("tick 8 visits %v; want b alone once a left", ids(buf))
	}
}

// blockedStream is a Connect stream whose Send blocks until its status is
// written, as gRPC's does on a device that does not read.
type blockedStream struct {
	connectStream
	entered chan struct{}
	ended   chan struct{}
	st      chan *status.Status
	once    sync.Once
}

func newBlockedStream() *blockedStream {
	return &blockedStream{entered: make(chan struct{}, 1), ended: make(chan struct{}), st: make(chan *status.Status, 1)}
}

func (b *blockedStream) Send(*executorv1.ConnectResponse) error {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-b.ended
	return errors.New("stream ended")
}

// WriteStatus keeps the first status, as gRPC does.
func (b *blockedStream) WriteStatus(st *status.Status) error {
	b.once.Do(func() {
		b.st <- st
		close(b.ended)
	})
	return nil
}

func TestBeatCutsBlockedSend(t *testing.T) {
	s := &Server{cfg: DefaultConfig()}
	st := newBlockedStream()
	ss := newSession(s, st, st, 8)
	ss.lastRecv.Store(time.Now().UnixNano()) // not silent: the device sends
	if err := ss.enqueue(&executorv1.ConnectResponse{}); err != nil {
		t.Fatal(err)
	}
	// The handler's first send, which blocks: aside.
	go ss.sendQueued()
	select {
	case <-st.entered:
	case <-time.After(time.Minute):
		t.Fatal("the sender never sent")
	}
	silence := time.Duration(s.cfg.PingMisses) * s.cfg.PingInterval
	start := time.Unix(0, ss.sendStart.Load())
	s.beat(ss, start.Add(silence/2))
	if ss.closed() {
		t.Fatal("a Send blocked for half the silence was cut")
	}
	s.beat(ss, start.Add(silence))
	if !ss.closed() {
		t.Fatal("a Send blocked for PingMisses intervals was not cut")
	}
	select {
	case got := <-st.st:
		if got.Code() != codes.ResourceExhausted {
			t.Errorf("status = %v; want ResourceExhausted", got)
		}
	case <-time.After(time.Minute):
		t.Fatal("no status written")
	}
	<-ss.finished
	if n := s.stats.stuck.Load(); n != 1 {
		t.Errorf("stuck = %d; want 1", n)
	}
}
