package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxBatchPuts bounds the records of one group-committed transaction:
// etcd refuses transactions of more than 128 operations by default
// (--max-txn-ops).
const MaxBatchPuts = 128

// AssignmentBatcher writes assignment records by group commit: records
// written while a transaction is in flight wait for it and then go
// together, up to MaxBatchPuts, in the next one. Nothing waits for a timer
// (a lone write goes at once); under load one etcd round trip carries many
// records. PutAssignment returns only once its record is committed (or
// with the error of the transaction that carried it), so no acknowledged
// assignment is lost. Two writes of one device in one batch commit as the
// later one, as sequential puts would.
//
// The transaction's context is its own, bounded by the timeout: a caller
// that stops waiting returns its context's error, and its record may still
// be written (as when any put's answer is lost).
type AssignmentBatcher struct {
	r       *Registry
	timeout time.Duration

	mu         sync.Mutex
	pending    []*batchedPut
	committing bool

	batches, puts atomic.Int64
}

type batchedPut struct {
	key, value string
	done       chan error // buffered: the committer never blocks
}

// NewAssignmentBatcher returns a batcher writing through r; each
// transaction is bounded by timeout.
func (r *Registry) NewAssignmentBatcher(timeout time.Duration) *AssignmentBatcher {
	return &AssignmentBatcher{r: r, timeout: timeout}
}

// BatchStats are the batcher's counters: transactions committed or failed,
// and the records they carried.
type BatchStats struct {
	Batches, Puts int64
}

// Stats returns the counters.
func (b *AssignmentBatcher) Stats() BatchStats {
	return BatchStats{Batches: b.batches.Load(), Puts: b.puts.Load()}
}

// PutAssignment writes a device's assignment record, in the next group
// commit.
func (b *AssignmentBatcher) PutAssignment(ctx context.Context, a Assignment) error {
	if err := a.Validate(); err != nil {
		return err
	}
	v, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("registry: encode assignment of %s: %w", a.DeviceID, err)
	}
	p := &batchedPut{key: b.r.assignmentKey(a.DeviceID), value: string(v), done: make(chan error, 1)}
	b.mu.Lock()
	b.pending = append(b.pending, p)
	lead := !b.committing
	b.committing = true
	b.mu.Unlock()
	if lead {
		// In a goroutine of its own: the caller waits on its own
		// context, not on the transaction's.
		go b.commit()
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commit writes the pending records, a batch at a time, until none is
// left: one transaction in flight at a time, each carrying what came while
// the one before was in flight.
func (b *AssignmentBatcher) commit() {
	b.mu.Lock()
	n := min(len(b.pending), MaxBatchPuts)
	batch := b.pending[:n:n]
	b.pending = b.pending[n:]
	b.mu.Unlock()

	b.commitBatch(batch)

	b.mu.Lock()
	more := len(b.pending) > 0
	b.committing = more
	b.mu.Unlock()
	if more {
		b.commit()
	}
}

func (b *AssignmentBatcher) commitBatch(batch []*batchedPut) {
	// The last write of each key wins, as sequential puts would; etcd
	// refuses a key twice in one transaction.
	last := make(map[string]int, len(batch))
	for i, p := range batch {
		last[p.key] = i
	}
	ops := make([]clientv3.Op, 0, len(last))
	for i, p := range batch {
		if last[p.key] == i {
			ops = append(ops, clientv3.OpPut(p.key, p.value))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	_, err := b.r.cli.Txn(ctx).Then(ops...).Commit()
	cancel()
	if err != nil {
		err = fmt.Errorf("registry: put %d assignment records: %w", len(ops), err)
	}
	b.batches.Add(1)
	b.puts.Add(int64(len(ops)))
	for _, p := range batch {
		p.done <- err
	}
}
