package registry

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Queue keys:
//
//	<prefix>/queue/<device>/<seq, 20 digits>   QueuedMessage
//	<prefix>/queueseq/<device>                 next sequence number
//	<prefix>/idem/<device>/<key>               IdempotencyRecord
const (
	queueDir    = "/queue/"
	queueSeqDir = "/queueseq/"
	idemDir     = "/idem/"
)

// ErrQueueFull means a queue bound was reached; nothing was stored.
var ErrQueueFull = errors.New("registry: queue full")

// QueuedMessage is a message waiting for a device, stored until the device
// acknowledged it or it expired.
type QueuedMessage struct {
	// ID is the message id the device sees.
	ID string `json:"id"`
	// DeviceID is the recipient.
	DeviceID string `json:"device"`
	// Seq orders the device's messages.
	Seq int64 `json:"seq"`
	// Payload and ContentType are the message.
	Payload     []byte `json:"payload"`
	ContentType string `json:"content_type,omitempty"`
	// EnqueuedAt and ExpiresAt bound its life.
	EnqueuedAt time.Time `json:"enqueued_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	// IdempotencyKey is the sender's key, if any.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// IdempotencyRecord remembers a Send's key until its message expires.
type IdempotencyRecord struct {
	// MessageID is the message the key produced.
	MessageID string `json:"message_id"`
	// Seq is its queue sequence number (0 when it was not queued).
	Seq int64 `json:"seq"`
	// ExpiresAt is when the record may go.
	ExpiresAt time.Time `json:"expires_at"`
	// Delivered tells that the device acknowledged the message (an
	// ONLINE_ONLY Send); until then a retry delivers it again.
	Delivered bool `json:"delivered,omitempty"`
}

// QueueLimits bound the queues.
type QueueLimits struct {
	// PerDevice bounds the messages waiting for one device.
	PerDevice int64
	// Total bounds the messages waiting for all devices.
	Total int64
}

func (r *Registry) queuePrefix(device string) string { return r.prefix + queueDir + device + "/" }
func (r *Registry) queueKey(device string, seq int64) string {
	return fmt.Sprintf("%s%020d", r.queuePrefix(device), seq)
}
func (r *Registry) idemKey(device, key string) string { return r.prefix + idemDir + device + "/" + key }

// NewMessageID returns a random message id.
func NewMessageID() string { return rand.Text() }

// Enqueue stores m at the end of its device's queue, within limits. With an
// idempotency key already used for this device, it stores nothing and
// returns the first message's id and sequence with dup set. It returns the
// stored message (ID and Seq filled in).
func (r *Registry) Enqueue(ctx context.Context, m QueuedMessage, limits QueueLimits) (stored QueuedMessage, dup bool, err error) {
	if !ValidID(m.DeviceID) {
		return m, false, fmt.Errorf("%w: device id %q", ErrInvalid, m.DeviceID)
	}
	if m.IdempotencyKey != "" && !ValidID(m.IdempotencyKey) {
		return m, false, fmt.Errorf("%w: idempotency key %q: want 1-128 of [A-Za-z0-9._:@-]", ErrInvalid, m.IdempotencyKey)
	}
	if m.ID == "" {
		m.ID = NewMessageID()
	}
	if m.IdempotencyKey != "" {
		if rec, ok, err := r.idempotency(ctx, m.DeviceID, m.IdempotencyKey); err != nil || ok {
			if ok {
				m.ID, m.Seq = rec.MessageID, rec.Seq
			}
			return m, ok, err
		}
	}
	n, err := r.QueueLen(ctx, m.DeviceID)
	if err != nil {
		return m, false, err
	}
	if limits.PerDevice > 0 && n >= limits.PerDevice {
		return m, false, fmt.Errorf("%w: device %s has %d messages waiting (at most %d)", ErrQueueFull, m.DeviceID, n, limits.PerDevice)
	}
	if limits.Total > 0 {
		total, err := r.totalQueued(ctx)
		if err != nil {
			return m, false, err
		}
		if total >= limits.Total {
			return m, false, fmt.Errorf("%w: %d messages waiting in all (at most %d)", ErrQueueFull, total, limits.Total)
		}
	}
	seqKey := r.prefix + queueSeqDir + m.DeviceID
	for attempt := 0; ; attempt++ {
		resp, err := r.cli.Get(ctx, seqKey)
		if err != nil {
			return m, false, fmt.Errorf("registry: read queue sequence: %w", err)
		}
		var next int64 = 1
		var rev int64
		if len(resp.Kvs) > 0 {
			rev = resp.Kvs[0].ModRevision
			if next, err = strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64); err != nil {
				return m, false, fmt.Errorf("registry: queue sequence of %s: %w", m.DeviceID, err)
			}
		}
		m.Seq = next
		b, err := json.Marshal(m)
		if err != nil {
			return m, false, fmt.Errorf("registry: encode message: %w", err)
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(seqKey), "=", rev)}
		ops := []clientv3.Op{
			clientv3.OpPut(seqKey, strconv.FormatInt(next+1, 10)),
			clientv3.OpPut(r.queueKey(m.DeviceID, next), string(b)),
		}
		if m.IdempotencyKey != "" {
			ik := r.idemKey(m.DeviceID, m.IdempotencyKey)
			ib, _ := json.Marshal(IdempotencyRecord{MessageID: m.ID, Seq: next, ExpiresAt: m.ExpiresAt})
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(ik), "=", 0))
			ops = append(ops, clientv3.OpPut(ik, string(ib)))
		}
		tr, err := r.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return m, false, fmt.Errorf("registry: enqueue: %w", err)
		}
		if tr.Succeeded {
			r.queued.add(1)
			return m, false, nil
		}
		// Lost a race: another Send moved the sequence, or used the key.
		if m.IdempotencyKey != "" {
			if rec, ok, err := r.idempotency(ctx, m.DeviceID, m.IdempotencyKey); err != nil || ok {
				if ok {
					m.ID, m.Seq = rec.MessageID, rec.Seq
				}
				return m, ok, err
			}
		}
		if attempt >= 16 {
			return m, false, fmt.Errorf("%w: queue of %s", ErrConflict, m.DeviceID)
		}
	}
}

// RememberIdempotency records key → id for a message that was not queued
// (delivered at once), so that a retry does not deliver it again. It
// reports false when the key was already used, and returns that record.
func (r *Registry) RememberIdempotency(ctx context.Context, device, key string, rec IdempotencyRecord) (IdempotencyRecord, bool, error) {
	if !ValidID(key) {
		return rec, false, fmt.Errorf("%w: idempotency key %q", ErrInvalid, key)
	}
	ik := r.idemKey(device, key)
	b, _ := json.Marshal(rec)
	tr, err := r.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(ik), "=", 0)).
		Then(clientv3.OpPut(ik, string(b))).Else(clientv3.OpGet(ik)).Commit()
	if err != nil {
		return rec, false, fmt.Errorf("registry: idempotency: %w", err)
	}
	if tr.Succeeded {
		return rec, true, nil
	}
	var old IdempotencyRecord
	if kvs := tr.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		_ = json.Unmarshal(kvs[0].Value, &old)
	}
	return old, false, nil
}

// MarkDelivered records that the message of a key was acknowledged by the
// device, so that a retry answers without delivering again.
func (r *Registry) MarkDelivered(ctx context.Context, device, key string, rec IdempotencyRecord) error {
	if !ValidID(key) {
		return fmt.Errorf("%w: idempotency key %q", ErrInvalid, key)
	}
	rec.Delivered = true
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("registry: encode idempotency record: %w", err)
	}
	if _, err := r.cli.Put(ctx, r.idemKey(device, key), string(b)); err != nil {
		return fmt.Errorf("registry: idempotency: %w", err)
	}
	return nil
}

// Idempotency reads the record of a key, if any.
func (r *Registry) idempotency(ctx context.Context, device, key string) (IdempotencyRecord, bool, error) {
	var rec IdempotencyRecord
	err := r.getJSON(ctx, r.idemKey(device, key), &rec)
	if errors.Is(err, ErrNotFound) {
		return rec, false, nil
	}
	return rec, err == nil, err
}

// Queue returns a device's waiting messages in order, up to limit (0: all).
func (r *Registry) Queue(ctx context.Context, device string, limit int64) ([]QueuedMessage, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(limit))
	}
	resp, err := r.cli.Get(ctx, r.queuePrefix(device), opts...)
	if err != nil {
		return nil, fmt.Errorf("registry: read queue of %s: %w", device, err)
	}
	out := make([]QueuedMessage, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var m QueuedMessage
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return nil, fmt.Errorf("registry: decode %s: %w", kv.Key, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// QueueLen counts a device's waiting messages.
func (r *Registry) QueueLen(ctx context.Context, device string) (int64, error) {
	resp, err := r.cli.Get(ctx, r.queuePrefix(device), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("registry: count queue of %s: %w", device, err)
	}
	return resp.Count, nil
}

// Dequeue removes an acknowledged message. It is not an error if it is
// already gone (another acknowledgement removed it).
func (r *Registry) Dequeue(ctx context.Context, device string, seq int64) error {
	if _, err := r.cli.Delete(ctx, r.queueKey(device, seq)); err != nil {
		return fmt.Errorf("registry: dequeue %s/%d: %w", device, seq, err)
	}
	return nil
}

// SweepExpired deletes queued messages and idempotency records whose time
// is past now, and returns how many messages it removed.
func (r *Registry) SweepExpired(ctx context.Context, now time.Time) (int, error) {
	var dels []string
	n := 0
	collect := func(isMsg bool) func(kv *mvccpb.KeyValue) error {
		return func(kv *mvccpb.KeyValue) error {
			var v struct {
				ExpiresAt time.Time `json:"expires_at"`
			}
			if err := json.Unmarshal(kv.Value, &v); err == nil && !v.ExpiresAt.IsZero() && v.ExpiresAt.Before(now) {
				dels = append(dels, string(kv.Key))
				if isMsg {
					n++
				}
			}
			return nil
		}
	}
	if _, err := r.listKVs(ctx, r.prefix+queueDir, collect(true)); err != nil {
		return 0, err
	}
	if _, err := r.listKVs(ctx, r.prefix+idemDir, collect(false)); err != nil {
		return 0, err
	}
	for len(dels) > 0 {
		k := min(len(dels), maxTxnOps)
		ops := make([]clientv3.Op, k)
		for i, key := range dels[:k] {
			ops[i] = clientv3.OpDelete(key)
		}
		if _, err := r.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return n, fmt.Errorf("registry: sweep: %w", err)
		}
		dels = dels[k:]
	}
	return n, nil
}

// QueueCountInterval is how often a Registry counts the messages waiting in
// all queues for the total bound. Counting is a range over every queued
// key, so it is not done on every Send: between counts, the messages this
// Registry queued are added, and what other control plane replicas queued
// in the meantime is seen at the next count, as are the messages removed.
// The total bound may thus be passed by what the other replicas queue
// within one interval, and space freed is used from the next count on.
const QueueCountInterval = time.Second

// queuedCount is a Registry's last count of queued messages.
type queuedCount struct {
	mu sync.Mutex
	n  int64
	at time.Time // zero: never counted
}

func (q *queuedCount) add(n int64) {
	q.mu.Lock()
	q.n += n
	q.mu.Unlock()
}

// totalQueued returns the messages waiting in all queues: counted in etcd
// at most once per QueueCountInterval, with this Registry's enqueues since.
func (r *Registry) totalQueued(ctx context.Context) (int64, error) {
	q := &r.queued
	q.mu.Lock()
	if !q.at.IsZero() && time.Since(q.at) < QueueCountInterval {
		n := q.n
		q.mu.Unlock()
		return n, nil
	}
	q.mu.Unlock()
	resp, err := r.cli.Get(ctx, r.prefix+queueDir, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("registry: count queue: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.n, q.at = resp.Count, time.Now()
	return q.n, nil
}
