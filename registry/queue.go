package registry

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
	// TraceParent and TraceState are the W3C trace context of the Send
	// that queued it, when traces are on: its delivery, however late,
	// continues that trace. Each at most 256 bytes; an executor drops a
	// malformed one.
	TraceParent string `json:"trace_parent,omitempty"`
	TraceState  string `json:"trace_state,omitempty"`
	// Size is the bytes the message was charged against its device's and
	// the total bounds (at least its key and stored value), and Shard the
	// total counter charged; removing the message frees them. Messages
	// stored before the bounds in bytes have Size 0 and free nothing.
	Size  int64 `json:"size,omitempty"`
	Shard int   `json:"shard"`
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

// QueueLimits bound the queues; 0 leaves a bound off. Bytes are what a
// message costs etcd: its key and stored value (see QueuedMessage.Size).
type QueueLimits struct {
	// PerDevice and PerDeviceBytes bound the messages waiting for one
	// device, in count and in bytes.
	PerDevice, PerDeviceBytes int64
	// Total and TotalBytes bound the messages waiting for all devices, in
	// count and in bytes. They are split evenly over QueueShards counters
	// (see pickShard), so their sum is never passed.
	Total, TotalBytes int64
}

func (r *Registry) queuePrefix(device string) string { return r.prefix + queueDir + device + "/" }
func (r *Registry) queueKey(device string, seq int64) string {
	return fmt.Sprintf("%s%020d", r.queuePrefix(device), seq)
}
func (r *Registry) idemKey(device, key string) string { return r.prefix + idemDir + device + "/" + key }

// NewMessageID returns a random message id.
func NewMessageID() string { return rand.Text() }

// maxTraceField bounds QueuedMessage.TraceParent and TraceState.
const maxTraceField = 256

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
	if len(m.TraceParent) > maxTraceField || len(m.TraceState) > maxTraceField {
		// Trace context is a hint: an oversized one is dropped, not the Send.
		m.TraceParent, m.TraceState = "", ""
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
	seqKey := r.prefix + queueSeqDir + m.DeviceID
	useKey := r.queueUseKey(m.DeviceID)
	wait := racePolicy.NewBackOff()
	for attempt := 0; ; attempt++ {
		resp, err := r.cli.Txn(ctx).Then(
			clientv3.OpGet(seqKey), clientv3.OpGet(useKey), clientv3.OpGet(r.prefix+queueTotalDir, clientv3.WithPrefix()),
		).Commit()
		if err != nil {
			return m, false, fmt.Errorf("registry: read queue usage: %w", err)
		}
		var next int64 = 1
		var seqRev int64
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			seqRev = kvs[0].ModRevision
			if next, err = strconv.ParseInt(string(kvs[0].Value), 10, 64); err != nil {
				return m, false, fmt.Errorf("registry: queue sequence of %s: %w", m.DeviceID, err)
			}
		}
		use, useRev := decodeUsage(resp.Responses[1].GetResponseRange().GetKvs())
		shards := decodeShards(r.prefix+queueTotalDir, resp.Responses[2].GetResponseRange().GetKvs())
		m.Seq = next
		key := r.queueKey(m.DeviceID, next)
		// The charge does not depend on the shard (its field has one
		// digit), so it is known before one is picked.
		if _, err := r.encodeCharged(&m, key); err != nil {
			return m, false, err
		}
		if limits.PerDevice > 0 && use.Count+1 > limits.PerDevice {
			return m, false, fmt.Errorf("%w: device %s has %d messages waiting (at most %d)", ErrQueueFull, m.DeviceID, use.Count, limits.PerDevice)
		}
		if limits.PerDeviceBytes > 0 && use.Bytes+m.Size > limits.PerDeviceBytes {
			return m, false, fmt.Errorf("%w: device %s has %d bytes waiting; this message needs %d more (at most %d)", ErrQueueFull, m.DeviceID, use.Bytes, m.Size, limits.PerDeviceBytes)
		}
		// A retry starts one shard further: the one it lost a race on is
		// the busiest.
		shard, ok := pickShard(shards, (shardOf(m.DeviceID)+attempt)%QueueShards, m.Size, limits)
		if !ok {
			total := sumUsage(shards)
			return m, false, fmt.Errorf("%w: %d messages, %d bytes waiting in all (at most %d messages, %d bytes)", ErrQueueFull, total.Count, total.Bytes, limits.Total, limits.TotalBytes)
		}
		m.Shard = shard
		b, err := r.encodeCharged(&m, key)
		if err != nil {
			return m, false, err
		}
		sk := r.queueTotalKey(shard)
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(seqKey), "=", seqRev),
			clientv3.Compare(clientv3.ModRevision(useKey), "=", useRev),
			clientv3.Compare(clientv3.ModRevision(sk), "=", shards[shard].rev),
		}
		use.Count, use.Bytes = use.Count+1, use.Bytes+m.Size
		tot := shards[shard].Usage
		tot.Count, tot.Bytes = tot.Count+1, tot.Bytes+m.Size
		ops := []clientv3.Op{
			clientv3.OpPut(seqKey, strconv.FormatInt(next+1, 10)),
			clientv3.OpPut(key, string(b)),
			clientv3.OpPut(useKey, use.encode()),
			clientv3.OpPut(sk, tot.encode()),
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
			return m, false, nil
		}
		// Lost a race: another Send moved the sequence, the device's
		// usage or the shard's total, or used the key.
		if m.IdempotencyKey != "" {
			if rec, ok, err := r.idempotency(ctx, m.DeviceID, m.IdempotencyKey); err != nil || ok {
				if ok {
					m.ID, m.Seq = rec.MessageID, rec.Seq
				}
				return m, ok, err
			}
		}
		if attempt >= maxQueueAttempts {
			return m, false, fmt.Errorf("%w: queue of %s", ErrConflict, m.DeviceID)
		}
		if err := raceWait(ctx, wait); err != nil {
			return m, false, err
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

// Dequeue removes an acknowledged message and frees what it was charged,
// in one transaction. It is not an error if it is already gone (another
// acknowledgement removed it).
func (r *Registry) Dequeue(ctx context.Context, device string, seq int64) error {
	if err := r.removeQueued(ctx, device, []string{r.queueKey(device, seq)}); err != nil {
		return fmt.Errorf("registry: dequeue %s/%d: %w", device, seq, err)
	}
	return nil
}

// SweepExpired deletes queued messages and idempotency records whose time
// is past now, and returns how many messages it removed. Messages are
// removed with what they were charged, one transaction per device and
// batch.
func (r *Registry) SweepExpired(ctx context.Context, now time.Time) (int, error) {
	var idems []string
	msgs := map[string][]string{}
	expired := func(kv *mvccpb.KeyValue) bool {
		var v struct {
			ExpiresAt time.Time `json:"expires_at"`
		}
		return json.Unmarshal(kv.Value, &v) == nil && !v.ExpiresAt.IsZero() && v.ExpiresAt.Before(now)
	}
	if _, err := r.listKVs(ctx, r.prefix+queueDir, func(kv *mvccpb.KeyValue) error {
		if expired(kv) {
			dev, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), r.prefix+queueDir), "/")
			msgs[dev] = append(msgs[dev], string(kv.Key))
		}
		return nil
	}); err != nil {
		return 0, err
	}
	if _, err := r.listKVs(ctx, r.prefix+idemDir, func(kv *mvccpb.KeyValue) error {
		if expired(kv) {
			idems = append(idems, string(kv.Key))
		}
		return nil
	}); err != nil {
		return 0, err
	}
	n := 0
	for dev, keys := range msgs {
		for len(keys) > 0 {
			k := min(len(keys), maxTxnOps-2-QueueShards)
			if err := r.removeQueued(ctx, dev, keys[:k]); err != nil {
				return n, fmt.Errorf("registry: sweep: %w", err)
			}
			n += k
			keys = keys[k:]
		}
	}
	for len(idems) > 0 {
		k := min(len(idems), maxTxnOps)
		ops := make([]clientv3.Op, k)
		for i, key := range idems[:k] {
			ops[i] = clientv3.OpDelete(key)
		}
		if _, err := r.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return n, fmt.Errorf("registry: sweep: %w", err)
		}
		idems = idems[k:]
	}
	return n, nil
}
