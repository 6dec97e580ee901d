package device

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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

	s *stream
}

// Ack acknowledges the message on the stream that delivered it, so that the
// executor stops redelivering it. It blocks until the frame is handed to the
// transport or the stream ends. When that stream is gone it returns an error
// wrapping [ErrStreamClosed]: the executor will redeliver the message on the
// next stream, where the Device acks it again by itself (the application has
// already seen it, so it is not delivered a second time).
func (m *Message) Ack() error {
	if m == nil || m.s == nil {
		return errors.New("device: ack: message was not delivered by a Device")
	}
	if err := m.s.send(context.Background(), ackFrame(m.ID)); err != nil {
		return fmt.Errorf("device: ack %s: %w", m.ID, err)
	}
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
}

type ringSlot struct {
	id  string
	seq uint64
}

func newDedupe(n int) *dedupe {
	return &dedupe{n: n, ids: make(map[string]uint64, n), ring: make([]ringSlot, n)}
}

// add records id and reports whether it is new. The oldest id is forgotten
// once n ids are remembered.
func (d *dedupe) add(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.ids[id]; ok {
		return false
	}
	old := d.ring[d.next]
	if old.id != "" && d.ids[old.id] == old.seq {
		delete(d.ids, old.id)
	}
	d.seq++
	d.ring[d.next] = ringSlot{id: id, seq: d.seq}
	d.ids[id] = d.seq
	d.next = (d.next + 1) % d.n
	return true
}

// remove forgets id, for a message whose delivery was abandoned.
func (d *dedupe) remove(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.ids, id)
}
