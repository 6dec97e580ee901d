package executor_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// fakeQueue is an in-memory executor.Queue.
type fakeQueue struct {
	mu       sync.Mutex
	msgs     map[string][]registry.QueuedMessage // by device, in seq order
	dequeued []int64                             // seqs, in call order
	reads    int
	// failReads fails that many Queue calls first; failDequeues the same
	// for Dequeue.
	failReads, failDequeues int
}

var _ executor.Queue = (*fakeQueue)(nil)

func newFakeQueue() *fakeQueue { return &fakeQueue{msgs: map[string][]registry.QueuedMessage{}} }

// add queues n messages for device with the next seqs; expired picks the
// seqs that have expired already.
func (q *fakeQueue) add(device string, n int, expired ...int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	for range n {
		seq := int64(len(q.msgs[device]) + 1)
		m := registry.QueuedMessage{
			ID: fmt.Sprintf("q%d", seq), DeviceID: device, Seq: seq,
			Payload: []byte(fmt.Sprint("payload ", seq)), ContentType: "text/plain",
			EnqueuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour),
		}
		if slices.Contains(expired, seq) {
			m.ExpiresAt = now.Add(-time.Second)
		}
		q.msgs[device] = append(q.msgs[device], m)
	}
}

func (q *fakeQueue) Queue(_ context.Context, device string, limit int64) ([]registry.QueuedMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.reads++
	if q.failReads > 0 {
		q.failReads--
		return nil, errors.New("etcd unavailable")
	}
	ms := q.msgs[device]
	if limit > 0 && int64(len(ms)) > limit {
		ms = ms[:limit]
	}
	return slices.Clone(ms), nil
}

func (q *fakeQueue) Dequeue(_ context.Context, device string, seq int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failDequeues > 0 {
		q.failDequeues--
		return errors.New("etcd unavailable")
	}
	q.dequeued = append(q.dequeued, seq)
	q.msgs[device] = slices.DeleteFunc(q.msgs[device], func(m registry.QueuedMessage) bool { return m.Seq == seq })
	return nil
}

// readCount returns how many times the queue was read.
func (q *fakeQueue) readCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.reads
}

// state returns the seqs still queued for device and the seqs dequeued.
func (q *fakeQueue) state(device string) (queued, dequeued []int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range q.msgs[device] {
		queued = append(queued, m.Seq)
	}
	return queued, slices.Clone(q.dequeued)
}

func seqRange(from, to int64, skip ...int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		if !slices.Contains(skip, s) {
			out = append(out, s)
		}
	}
	return out
}

func TestQueueDrainedInOrderOnConnect(t *testing.T) {
	q := newFakeQueue()
	// More than one page, with expired messages on both.
	const n = 70
	expired := []int64{5, 66}
	q.add("d1", n, expired...)
	q.failReads, q.failDequeues = 1, 1 // etcd hiccups: retried
	h := startWith(t, nil, executor.WithQueue(q))
	d, _ := h.connect(t, "d1")

	var got []int64
	for range n - len(expired) {
		m := d.message(t)
		var seq int64
		if _, err := fmt.Sscanf(m.GetMessageId(), "q%d", &seq); err != nil {
			t.Fatalf("message id %q", m.GetMessageId())
		}
		if want := fmt.Sprint("payload ", seq); string(m.GetPayload()) != want || m.GetContentType() != "text/plain" || m.GetSentAt() == nil {
			t.Errorf("message %s = %v; want payload %q, text/plain and sent_at", m.GetMessageId(), m, want)
		}
		// One at a time: everything before it was acked and dequeued
		// (expired ones dequeued unsent) before it was sent.
		_, dequeued := q.state("d1")
		if want := seqRange(1, seq-1); !sameSet(dequeued, want) {
			t.Fatalf("when q%d arrived, dequeued %v; want %v", seq, dequeued, want)
		}
		got = append(got, seq)
		d.ack(t, m.GetMessageId())
	}
	if want := seqRange(1, n, expired...); !slices.Equal(got, want) {
		t.Errorf("device got %v; want %v", got, want)
	}
	testutil.WaitFor(t, waitTimeout, "the queue empty", func() bool {
		queued, _ := q.state("d1")
		return len(queued) == 0
	})
	testutil.WaitFor(t, waitTimeout, "every queued message counted", func() bool {
		st := h.srv.Stats()
		return st.QueueDelivered == n-uint64(len(expired)) && st.QueueExpired == uint64(len(expired))
	})
	if _, dequeued := q.state("d1"); !slices.Equal(dequeued, seqRange(1, n)) {
		t.Errorf("dequeued %v; want 1..%d in order", dequeued, n)
	}
}

// sameSet compares as sets (a retried Dequeue does not repeat a seq here,
// but an expired one is removed before the message after it is sent).
func sameSet(a, b []int64) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestQueueUnackedMessagesStay(t *testing.T) {
	q := newFakeQueue()
	q.add("d1", 3)
	h := startWith(t, nil, executor.WithQueue(q))
	d, _ := h.connect(t, "d1")
	if id := d.message(t).GetMessageId(); id != "q1" {
		t.Fatalf("first message %s; want q1", id)
	}
	d.leave(t) // without acking
	if err := d.closed(t); err != nil {
		t.Fatalf("stream ended with %v", err)
	}
	testutil.WaitFor(t, waitTimeout, "no delivery waiting", func() bool { return h.srv.Stats().Delivering == 0 })
	if queued, dequeued := q.state("d1"); !slices.Equal(queued, []int64{1, 2, 3}) || len(dequeued) != 0 {
		t.Fatalf("after leaving without an ack: queued %v, dequeued %v; want all queued", queued, dequeued)
	}

	// The next stream gets them again, from the first.
	d2, _ := h.connect(t, "d1")
	for _, want := range []string{"q1", "q2", "q3"} {
		m := d2.message(t)
		if m.GetMessageId() != want {
			t.Fatalf("got %s; want %s", m.GetMessageId(), want)
		}
		d2.ack(t, want)
	}
	testutil.WaitFor(t, waitTimeout, "the queue empty", func() bool {
		queued, _ := q.state("d1")
		return len(queued) == 0
	})
}

func TestQueueOfOtherDevicesUntouched(t *testing.T) {
	q := newFakeQueue()
	q.add("other", 2)
	h := startWith(t, nil, executor.WithQueue(q))
	d, _ := h.connect(t, "d1")
	// d1 has nothing queued: a delivery is the first message it gets.
	res := h.deliverAsync(h.serviceCtx(t), &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "live"}})
	if id := d.message(t).GetMessageId(); id != "live" {
		t.Fatalf("d1 got %s; want live", id)
	}
	d.ack(t, "live")
	if r := result(t, res); r.err != nil {
		t.Fatal(r.err)
	}
	if queued, dequeued := q.state("other"); len(queued) != 2 || len(dequeued) != 0 {
		t.Errorf("other's queue: %v, dequeued %v; want untouched", queued, dequeued)
	}
}

// laggingPresence is a Queue whose presence records become visible late,
// as the registry's do: the first reads find nothing. On the first read a
// message is stored, as a control plane does that then finds no presence
// and leaves the message to the drain.
type laggingPresence struct {
	*fakeQueue
	reg   atomic.Pointer[fakeRegistrar]
	lag   int
	calls atomic.Int32
}

func (q *laggingPresence) Presence(_ context.Context, device string) (registry.Presence, error) {
	n := int(q.calls.Add(1))
	if n == 1 {
		q.add(device, 1)
	}
	if n <= q.lag {
		return registry.Presence{}, registry.ErrNotFound
	}
	if p, ok := q.reg.Load().presenceOf(device); ok {
		return p, nil
	}
	return registry.Presence{}, registry.ErrNotFound
}

func TestQueueReadAgainOncePresenceVisible(t *testing.T) {
	q := &laggingPresence{fakeQueue: newFakeQueue(), lag: 2}
	h := startWith(t, nil, executor.WithQueue(q))
	q.reg.Store(h.reg)
	d, _ := h.connect(t, "d1")
	// The drain reads the queue once the presence is visible: the message
	// stored while it was not comes.
	m := d.message(t)
	if m.GetMessageId() != "q1" {
		t.Fatalf("got %s; want q1", m.GetMessageId())
	}
	d.ack(t, "q1")
	testutil.WaitFor(t, waitTimeout, "the queue empty", func() bool {
		queued, _ := q.state("d1")
		return len(queued) == 0
	})
	if n := q.calls.Load(); n != 3 {
		t.Errorf("presence read %d times; want 3 (two misses, then the session's record)", n)
	}
}

// notifyingRegistrar is a fake Registrar that tells when a presence is
// written (as *registry.Registration does): written is closed by the test.
type notifyingRegistrar struct {
	*fakeRegistrar
	written chan struct{}
	asked   chan string // the sessions asked about
}

func (r *notifyingRegistrar) PresenceWritten(deviceID, sessionID string) (<-chan struct{}, bool) {
	p, ok := r.presenceOf(deviceID)
	if !ok || p.SessionID != sessionID {
		return nil, false
	}
	r.asked <- sessionID
	return r.written, true
}

// TestQueueWaitsForPresenceWritten: with a Registrar that tells when the
// presence is written, the drain reads the queue only then, and never
// polls the presence record.
func TestQueueWaitsForPresenceWritten(t *testing.T) {
	q := &laggingPresence{fakeQueue: newFakeQueue()}
	nr := &notifyingRegistrar{written: make(chan struct{}), asked: make(chan string, 1)}
	h := startWrapped(t, func(f *fakeRegistrar) executor.Registrar {
		nr.fakeRegistrar = f
		return nr
	}, nil, executor.WithQueue(q))
	q.reg.Store(h.reg)
	q.add("d1", 1)
	d, w := h.connect(t, "d1")
	select {
	case s := <-nr.asked:
		if s != w.GetSessionId() {
			t.Fatalf("asked about session %s; want %s", s, w.GetSessionId())
		}
	case <-time.After(waitTimeout):
		t.Fatal("the drain never asked whether the presence was written")
	}
	// The drain waits on written: nothing was read yet.
	if queued, _ := q.state("d1"); len(queued) != 1 || q.readCount() != 0 {
		t.Fatalf("before the presence is written: %d queue reads, %d queued; want 0 reads, 1 queued", q.readCount(), len(queued))
	}
	close(nr.written)
	if m := d.message(t); m.GetMessageId() != "q1" {
		t.Fatalf("got %s; want q1", m.GetMessageId())
	}
	d.ack(t, "q1")
	testutil.WaitFor(t, waitTimeout, "the queue empty", func() bool {
		queued, _ := q.state("d1")
		return len(queued) == 0
	})
	if n := q.calls.Load(); n != 0 {
		t.Errorf("presence record read %d times; want none (the Registrar told)", n)
	}
}

// countingRegistrar is a notifyingRegistrar that also tells how many
// messages were queued when a presence was written (as
// *registry.Registration does): queued[device], once written is closed.
type countingRegistrar struct {
	*notifyingRegistrar
	queued map[string]int64
}

func (r *countingRegistrar) QueuedAtPresence(deviceID, sessionID string) (int64, bool) {
	select {
	case <-r.written:
	default:
		return 0, false
	}
	p, ok := r.presenceOf(deviceID)
	if !ok || p.SessionID != sessionID {
		return 0, false
	}
	return r.queued[deviceID], true
}

// TestQueueReadOnlyWhenCounted: a Registrar that counted the device's
// queue when the presence was written spares the read of an empty queue;
// a device whose queue was counted non-empty has it read and delivered.
func TestQueueReadOnlyWhenCounted(t *testing.T) {
	q := newFakeQueue()
	cr := &countingRegistrar{
		notifyingRegistrar: &notifyingRegistrar{written: make(chan struct{}), asked: make(chan string, 2)},
		queued:             map[string]int64{"d1": 1},
	}
	close(cr.written)
	h := startWrapped(t, func(f *fakeRegistrar) executor.Registrar {
		cr.fakeRegistrar = f
		return cr
	}, nil, executor.WithQueue(q))
	q.add("d1", 1)
	d1, _ := h.connect(t, "d1")
	if m := d1.message(t); m.GetMessageId() != "q1" {
		t.Fatalf("d1 got %s; want q1", m.GetMessageId())
	}
	d1.ack(t, "q1")
	testutil.WaitFor(t, waitTimeout, "d1's queue empty", func() bool {
		queued, _ := q.state("d1")
		return len(queued) == 0
	})
	reads := q.readCount()
	h.connect(t, "d2")
	testutil.WaitFor(t, waitTimeout, "d2's queue read spared", func() bool { return h.srv.Stats().QueueReadsSpared == 1 })
	if n := q.readCount(); n != reads {
		t.Errorf("queue read %d times for d2, counted empty; want none", n-reads)
	}
}
