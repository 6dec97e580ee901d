package device

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
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
	if err := m.Ack(t.Context()); err == nil {
		t.Errorf("Ack() on a Message not from a Device = nil, want an error")
	}
	s := &stream{done: closedChan(), sendq: make(chan *sendReq)}
	m = Message{ID: "m", s: s}
	if err := m.Ack(t.Context()); !errors.Is(err, ErrStreamClosed) {
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
	if err := m.Reply(t.Context(), []byte("x"), "text/plain"); err == nil {
		t.Errorf("Reply() on a Message not from a Device = nil, want an error")
	}
	var nilMsg *Message
	if err := nilMsg.ReplyError(t.Context(), "boom"); err == nil {
		t.Errorf("ReplyError() on a nil Message = nil, want an error")
	}
	s := &stream{done: closedChan(), sendq: make(chan *sendReq)}
	m = Message{ID: "m", ExpectsReply: true, s: s}
	if err := m.Reply(t.Context(), nil, ""); !errors.Is(err, ErrStreamClosed) {
		t.Errorf("Reply() on a closed stream = %v, want ErrStreamClosed", err)
	}
	if err := m.ReplyError(t.Context(), ""); !errors.Is(err, ErrStreamClosed) {
		t.Errorf("ReplyError() on a closed stream = %v, want ErrStreamClosed", err)
	}
}

func TestReplyErrorDefaultMessage(t *testing.T) {
	sendq := make(chan *sendReq, 1)
	s := &stream{done: make(chan struct{}), sendq: sendq}
	m := Message{ID: "m", s: s}
	errc := make(chan error, 1)
	go func() { errc <- m.ReplyError(t.Context(), "") }()
	r := recv(t, sendq, "the Reply frame")
	r.res <- nil
	if err := recv(t, errc, "ReplyError's result"); err != nil {
		t.Fatalf("ReplyError() = %v", err)
	}
	if got := r.frame.GetReply(); got.GetMessageId() != "m" || got.GetError() != "device reported an error" {
		t.Errorf("frame = %v, want a Reply to m with the default error", got)
	}
}

// TestAnswerContext checks that Ack, Reply and ReplyError honour their
// context while they wait for the stream's send queue: they return the
// context's error, and a frame still queued is withdrawn.
func TestAnswerContext(t *testing.T) {
	ops := []struct {
		name string
		call func(ctx context.Context, m *Message) error
	}{
		{"Ack", func(ctx context.Context, m *Message) error { return m.Ack(ctx) }},
		{"Reply", func(ctx context.Context, m *Message) error { return m.Reply(ctx, []byte("a"), "text/plain") }},
		{"ReplyError", func(ctx context.Context, m *Message) error { return m.ReplyError(ctx, "no") }},
	}
	cases := []struct {
		name string
		// when is where the call is when ctx ends: "before" it starts,
		// "full" waiting for a full queue, "queued" (the frame waits in
		// the queue) or "writing" (the send loop took the frame).
		when string
		// timeout ends ctx with a deadline instead of cancel.
		timeout time.Duration
		wantErr error
	}{
		{name: "context done before the call", when: "before", wantErr: context.Canceled},
		{name: "cancelled while the queue is full", when: "full", wantErr: context.Canceled},
		{name: "deadline passes while the queue is full", when: "full", timeout: time.Millisecond, wantErr: context.DeadlineExceeded},
		{name: "cancelled while queued: withdrawn", when: "queued", wantErr: context.Canceled},
		{name: "cancelled while being written", when: "writing", wantErr: context.Canceled},
	}
	for _, op := range ops {
		for _, tc := range cases {
			t.Run(op.name+"/"+tc.name, func(t *testing.T) {
				capacity := 1
				if tc.when == "full" {
					capacity = 0 // nobody reads it
				}
				sendq := make(chan *sendReq, capacity)
				s := &stream{done: make(chan struct{}), sendq: sendq}
				m := &Message{ID: "m", ExpectsReply: true, s: s}
				ctx, cancel := context.WithCancel(t.Context())
				if tc.timeout > 0 {
					ctx, cancel = context.WithTimeout(t.Context(), tc.timeout)
				}
				defer cancel()

				errc := make(chan error, 1)
				var r *sendReq
				switch tc.when {
				case "before":
					cancel()
					errc <- op.call(ctx, m)
				case "full":
					go func() { errc <- op.call(ctx, m) }()
					if tc.timeout == 0 {
						cancel()
					}
				case "queued", "writing":
					go func() { errc <- op.call(ctx, m) }()
					r = recv(t, sendq, "the queued frame")
					if tc.when == "writing" && !r.take() {
						t.Fatal("take() of a queued frame = false, want true")
					}
					cancel()
				}
				err := recv(t, errc, op.name+"'s result")
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("%s() = %v, want an error wrapping %v", op.name, err, tc.wantErr)
				}
				if r == nil {
					select {
					case r = <-sendq:
						t.Errorf("a frame was queued: %v", r.frame)
					default:
					}
					return
				}
				if r.take() {
					t.Errorf("take() after %s returned = true, want false (withdrawn or taken already)", op.name)
				}
				want := reqWithdrawn
				if tc.when == "writing" {
					want = reqTaken
				}
				if got := r.state.Load(); got != want {
					t.Errorf("frame state = %d, want %d", got, want)
				}
			})
		}
	}
}

// fakeClientStream records what the send loop writes.
type fakeClientStream struct {
	grpc.BidiStreamingClient[executorv1.ConnectRequest, executorv1.ConnectResponse]
	sent chan *executorv1.ConnectRequest
}

func (f *fakeClientStream) Send(r *executorv1.ConnectRequest) error {
	f.sent <- r
	return nil
}

// TestSendLoopSkipsWithdrawn checks that the send loop does not write a
// frame whose sender withdrew it.
func TestSendLoopSkipsWithdrawn(t *testing.T) {
	cs := &fakeClientStream{sent: make(chan *executorv1.ConnectRequest, 2)}
	s := &stream{cs: cs, done: make(chan struct{}), sendq: make(chan *sendReq, 2)}
	withdrawn := &sendReq{frame: ackFrame("withdrawn"), res: make(chan error, 1)}
	if !withdrawn.withdraw() {
		t.Fatal("withdraw() of a queued frame = false, want true")
	}
	kept := &sendReq{frame: ackFrame("kept"), res: make(chan error, 1)}
	s.sendq <- withdrawn
	s.sendq <- kept
	ctx, cancel := context.WithCancel(t.Context())
	s.wg.Add(1)
	go s.sendLoop(ctx)
	defer func() {
		cancel()
		s.wg.Wait()
	}()
	if got := recv(t, cs.sent, "a written frame").GetAck().GetMessageId(); got != "kept" {
		t.Errorf("first frame written = ack of %q, want kept", got)
	}
	if err := recv(t, kept.res, "the kept frame's result"); err != nil {
		t.Errorf("result of the kept frame = %v, want nil", err)
	}
	if len(withdrawn.res) != 0 {
		t.Errorf("the withdrawn frame got a result")
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
