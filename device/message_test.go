package device

import (
	"errors"
	"fmt"
	"testing"
)

func TestDedupe(t *testing.T) {
	d := newDedupe(3)
	steps := []struct {
		op   string // "add" or "remove"
		id   string
		want bool // for add: is it new
	}{
		{"add", "a", true},
		{"add", "a", false},
		{"add", "b", true},
		{"add", "c", true},
		{"add", "b", false},
		{"add", "d", true}, // evicts a
		{"add", "a", true}, // a was forgotten; evicts b
		{"add", "b", true},
		{"remove", "d", false},
		{"add", "d", true},  // abandoned delivery: accepted again
		{"add", "c", true},  // c was evicted by b
		{"add", "d", false}, // the re-added d survives its old slot's eviction
	}
	for i, s := range steps {
		switch s.op {
		case "add":
			if got := d.add(s.id); got != s.want {
				t.Errorf("step %d: add(%q) = %v, want %v", i, s.id, got, s.want)
			}
		case "remove":
			d.remove(s.id)
		}
	}
}

func TestDedupeWindowSize(t *testing.T) {
	d := newDedupe(dedupeWindow)
	for i := range dedupeWindow {
		d.add(fmt.Sprint(i))
	}
	if d.add("0") {
		t.Fatalf("id 0 forgotten within the window of %d", dedupeWindow)
	}
	d.add("new") // the window is full: the oldest id, 0, is forgotten
	if !d.add("0") {
		t.Errorf("id 0 still remembered after %d newer ids", dedupeWindow)
	}
	if d.add("2") {
		t.Errorf("id 2 forgotten while within the window")
	}
}

func TestAckWithoutStream(t *testing.T) {
	var m Message
	if err := m.Ack(); err == nil {
		t.Errorf("Ack() on a Message not from a Device = nil, want an error")
	}
	s := &stream{done: closedChan(), sendq: make(chan sendReq)}
	m = Message{ID: "m", s: s}
	if err := m.Ack(); !errors.Is(err, ErrStreamClosed) {
		t.Errorf("Ack() on a closed stream = %v, want ErrStreamClosed", err)
	}
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func TestReplyWithoutStream(t *testing.T) {
	var m Message
	if err := m.Reply([]byte("x"), "text/plain"); err == nil {
		t.Errorf("Reply() on a Message not from a Device = nil, want an error")
	}
	var nilMsg *Message
	if err := nilMsg.ReplyError("boom"); err == nil {
		t.Errorf("ReplyError() on a nil Message = nil, want an error")
	}
	s := &stream{done: closedChan(), sendq: make(chan sendReq)}
	m = Message{ID: "m", ExpectsReply: true, s: s}
	if err := m.Reply(nil, ""); !errors.Is(err, ErrStreamClosed) {
		t.Errorf("Reply() on a closed stream = %v, want ErrStreamClosed", err)
	}
	if err := m.ReplyError(""); !errors.Is(err, ErrStreamClosed) {
		t.Errorf("ReplyError() on a closed stream = %v, want ErrStreamClosed", err)
	}
}

func TestReplyErrorDefaultMessage(t *testing.T) {
	sendq := make(chan sendReq, 1)
	s := &stream{done: make(chan struct{}), sendq: sendq}
	m := Message{ID: "m", s: s}
	errc := make(chan error, 1)
	go func() { errc <- m.ReplyError("") }()
	r := recv(t, sendq, "the Reply frame")
	r.res <- nil
	if err := recv(t, errc, "ReplyError's result"); err != nil {
		t.Fatalf("ReplyError() = %v", err)
	}
	if got := r.frame.GetReply(); got.GetMessageId() != "m" || got.GetError() != "device reported an error" {
		t.Errorf("frame = %v, want a Reply to m with the default error", got)
	}
}

// TestDedupeHandOver checks that a copy of a message that arrives while
// another stream is still handing it to the application waits for the
// outcome: a duplicate once the first is taken, handed over if the first is
// abandoned (the device moved off that stream).
func TestDedupeHandOver(t *testing.T) {
	d := newDedupe(8)
	if fresh, wait := d.begin("m1"); !fresh || wait != nil {
		t.Fatalf("begin(m1) = %v, %v; want fresh", fresh, wait)
	}
	fresh, wait := d.begin("m1")
	if fresh || wait == nil {
		t.Fatalf("second begin(m1) while handing = %v, %v; want a wait", fresh, wait)
	}
	d.end("m1", false)
	<-wait
	if fresh, wait := d.begin("m1"); !fresh || wait != nil {
		t.Fatalf("begin(m1) after the first was abandoned = %v, %v; want fresh", fresh, wait)
	}
	d.end("m1", true)
	if fresh, wait := d.begin("m1"); fresh || wait != nil {
		t.Errorf("begin(m1) after it was taken = %v, %v; want a duplicate", fresh, wait)
	}
}
