package device

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// dedupeWindow is how many recent message ids a Device remembers to drop
// redeliveries.
const dedupeWindow = 1024

// Message is a message from a service, delivered through Device.Messages.
type Message struct {
	// ID is the message's unique id.
	ID string
	// Payload is the opaque payload.
	Payload []byte
	// ContentType is the payload's MIME type.
	ContentType string
	// SentAt is when the service sent the message (zero if unknown).
	SentAt time.Time
	// ExpectsReply is set for a request (MessagingService.Call): the
	// service waits for the answer given with [Message.Reply] or
	// [Message.ReplyError], which also acknowledges the message. An Ack
	// alone does not answer it; the caller then waits until its deadline.
	//
	// The Device delivers each message id once: should a request come
	// again (a redelivery of the same id), the duplicate is acked without
	// being delivered, as for any message, and so is not answered a second
	// time.
	ExpectsReply bool

	s        *stream
	span     trace.Span // nil: the Device does not trace
	spanOnce sync.Once
}

// Ack acknowledges the message on the stream that delivered it, so that the
// executor stops redelivering it. It blocks until the frame is handed to the
// transport, the stream ends or ctx is done. When that stream is gone it
// returns an error wrapping [ErrStreamClosed]: the executor will redeliver
// the message on the next stream, where the Device acks it again by itself
// (the application has already seen it, so it is not delivered a second
// time).
//
// When ctx is cancelled or its deadline passes first, Ack returns an error
// wrapping ctx's error (context.Canceled or context.DeadlineExceeded). An
// ack still waiting in the stream's send queue is then withdrawn and never
// sent; only one the stream was already writing may reach the executor. A
// ctx already done sends nothing. An ack not sent leaves the message
// unacknowledged: an ONLINE_ONLY Send waits for it until its deadline, and a
// queued message stays queued and comes again (the Device then acks the copy
// itself without handing it over). Ack may be called again with a live
// context to acknowledge it after all.
func (m *Message) Ack(ctx context.Context) error {
	if m == nil || m.s == nil {
		return errors.New("device: ack: message was not delivered by a Device")
	}
	if err := m.s.send(ctx, ackFrame(m.ID)); err != nil {
		return fmt.Errorf("device: ack %s: %w", m.ID, err)
	}
	m.endSpan(nil)
	return nil
}

// Reply answers the message (a request, see ExpectsReply) with payload of
// the MIME type contentType, on the stream that delivered it; the answer
// also acknowledges the message, so Ack is not needed. It blocks like Ack
// and, like Ack, returns an error wrapping [ErrStreamClosed] when that
// stream is gone: the answer is lost, and the caller gets an error or
// times out. Reply may be used on any message (it acknowledges it); only
// the first answer to a request counts.
//
// ctx bounds the wait as for Ack: when it ends first, Reply returns an error
// wrapping ctx's error and the answer is withdrawn unless the stream was
// already writing it. An answer withdrawn was not given: Reply (or
// ReplyError) may be called again while the caller still waits.
func (m *Message) Reply(ctx context.Context, payload []byte, contentType string) error {
	return m.reply(ctx, &executorv1.Reply{MessageId: m.id(), Payload: payload, ContentType: contentType})
}

// ReplyError answers the message with an error: the caller gets msg as the
// error's message (MessagingService.Call fails with ABORTED). It behaves as
// Reply otherwise, ctx included. An empty msg is sent as "device reported an
// error".
func (m *Message) ReplyError(ctx context.Context, msg string) error {
	if msg == "" {
		msg = "device reported an error"
	}
	return m.reply(ctx, &executorv1.Reply{MessageId: m.id(), Error: msg})
}

func (m *Message) id() string {
	if m == nil {
		return ""
	}
	return m.ID
}

func (m *Message) reply(ctx context.Context, r *executorv1.Reply) error {
	if m == nil || m.s == nil {
		return errors.New("device: reply: message was not delivered by a Device")
	}
	frame := &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Reply{Reply: r}}
	if err := m.s.send(ctx, frame); err != nil {
		return fmt.Errorf("device: reply to %s: %w", m.ID, err)
	}
	m.endSpan(nil)
	return nil
}

func ackFrame(id string) *executorv1.ConnectRequest {
	return &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Ack{
		Ack: &executorv1.Ack{MessageId: id},
	}}
}

// dedupe remembers the last n message ids handed to the application. It is
// shared by every stream of a Device (a redirected or reconnected stream gets
// redeliveries) and safe for concurrent use.
type dedupe struct {
	mu   sync.Mutex
	n    int
	seq  uint64
	ids  map[string]uint64 // id → sequence number of its ring slot
	ring []ringSlot
	next int
	// handing are the ids being handed to the application by one stream,
	// not yet taken: a copy of one that arrives on another stream waits
	// for the outcome, since the first may still be abandoned.
	handing map[string]chan struct{}
}

type ringSlot struct {
	id  string
	seq uint64
}

func newDedupe(n int) *dedupe {
	return &dedupe{n: n, ids: make(map[string]uint64, n), ring: make([]ringSlot, n), handing: map[string]chan struct{}{}}
}

// begin starts handing id to the application. It returns fresh when id is
// new: the caller hands it over and calls end. It returns wait (not nil)
// when another stream is handing the same id over right now: the caller
// waits on it and calls begin again. Otherwise id was handed over already.
func (d *dedupe) begin(id string) (fresh bool, wait <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ch, ok := d.handing[id]; ok {
		return false, ch
	}
	if _, ok := d.ids[id]; ok {
		return false, nil
	}
	d.addLocked(id)
	d.handing[id] = make(chan struct{})
	return true, nil
}

// end finishes what begin started: taken says whether the application got
// the message; if not, id is forgotten so that a redelivery is handed over.
func (d *dedupe) end(id string, taken bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ch, ok := d.handing[id]; ok {
		close(ch)
		delete(d.handing, id)
	}
	if !taken {
		delete(d.ids, id)
	}
}

// add records id and reports whether it is new. The oldest id is forgotten
// once n ids are remembered.
func (d *dedupe) add(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.ids[id]; ok {
		return false
	}
	d.addLocked(id)
	return true
}

func (d *dedupe) addLocked(id string) {
	old := d.ring[d.next]
	if old.id != "" && d.ids[old.id] == old.seq {
		delete(d.ids, old.id)
	}
	d.seq++
	d.ring[d.next] = ringSlot{id: id, seq: d.seq}
	d.ids[id] = d.seq
	d.next = (d.next + 1) % d.n
}

// remove forgets id, for a message whose delivery was abandoned.
func (d *dedupe) remove(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.ids, id)
}
