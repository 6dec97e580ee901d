package executor

import (
	"context"
	"testing"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

func TestSessionWaiters(t *testing.T) {
	s := &Server{}
	waiting := &s.stats.waiting
	ss := newSession(s, nil, nil, 1)
	ack1 := ss.await("m1", false)
	ack2 := ss.await("m1", false) // two deliveries of one message
	call := ss.await("m1", true)
	other := ss.await("m2", false)
	if n := waiting.Load(); n != 4 {
		t.Fatalf("waiting = %d; want 4", n)
	}

	ss.resolve("m1", nil) // an Ack: the plain waiters only
	for _, w := range []*waiter{ack1, ack2} {
		select {
		case r := <-w.done:
			if r != nil {
				t.Errorf("ack waiter got %v; want nil", r)
			}
		default:
			t.Error("ack waiter not resolved by the Ack")
		}
	}
	select {
	case <-call.done:
		t.Error("a waiter for a Reply was resolved by an Ack")
	default:
	}
	reply := &executorv1.Reply{MessageId: "m1", Payload: []byte("x")}
	ss.resolve("m1", reply)
	if r := <-call.done; r != reply {
		t.Errorf("call waiter got %v; want %v", r, reply)
	}
	ss.resolve("m1", reply) // nobody waits any more: a no-op

	// forget after resolve is harmless; forget before resolve removes.
	ss.forget("m1", ack1)
	ss.forget("m1", call)
	ss.forget("m2", other)
	ss.resolve("m2", nil)
	select {
	case <-other.done:
		t.Error("a forgotten waiter was resolved")
	default:
	}
	if n := waiting.Load(); n != 0 || len(ss.waiters) != 0 {
		t.Errorf("waiting = %d, waiters = %v; want none", n, ss.waiters)
	}
}

func TestDeliverWaitOnClosedSession(t *testing.T) {
	s := &Server{}
	waiting := &s.stats.waiting
	ss := newSession(s, nil, nil, 1)
	ss.markClosed(closeReason{}, 0)
	if _, err := s.deliverWait(context.Background(), ss, &executorv1.Message{MessageId: "m1"}); err != ErrNotConnected {
		t.Errorf("deliverWait on a closed session = %v; want ErrNotConnected", err)
	}
	if n := waiting.Load(); n != 0 {
		t.Errorf("waiting = %d; want 0", n)
	}
}
