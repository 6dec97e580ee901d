package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/internal/retry"
)

// Queue usage keys, written in the transactions that enqueue and remove
// messages, so that the bounds hold however many Sends run at once:
//
//	<prefix>/queueuse/<device>      QueueUsage of the device (gone at 0)
//	<prefix>/queuetotal/<0..7>      QueueUsage charged to each total shard
const (
	queueUseDir   = "/queueuse/"
	queueTotalDir = "/queuetotal/"
)

// QueueShards is how many counters hold the total queue usage. A Send
// updates its device's counter and one shard, so concurrent Sends to
// different devices seldom touch the same key; each shard holds an even
// part of the total bounds, so the sum of the shards never passes them.
const QueueShards = 8

// maxQueueAttempts bounds the transactions one enqueue or removal tries
// when concurrent ones keep changing the counters it read.
const maxQueueAttempts = 64

// QueueUsage is what waits in a queue (or in a shard of all queues).
type QueueUsage struct {
	// Count is the messages waiting; Bytes what they were charged.
	Count int64 `json:"count"`
	Bytes int64 `json:"bytes"`
}

func (u QueueUsage) encode() string {
	b, _ := json.Marshal(u)
	return string(b)
}

// shardUsage is one total shard as read, with its revision.
type shardUsage struct {
	Usage QueueUsage
	rev   int64
}

func (r *Registry) queueUseKey(device string) string { return r.prefix + queueUseDir + device }
func (r *Registry) queueTotalKey(shard int) string {
	return r.prefix + queueTotalDir + strconv.Itoa(shard)
}

// decodeUsage reads a usage key (absent: zero usage, revision 0). A value
// that does not decode counts as zero, so a damaged key cannot block a
// device's queue for good.
func decodeUsage(kvs []*mvccpb.KeyValue) (QueueUsage, int64) {
	var u QueueUsage
	if len(kvs) == 0 {
		return u, 0
	}
	_ = json.Unmarshal(kvs[0].Value, &u)
	return u, kvs[0].ModRevision
}

// decodeShards reads the total shards listed under dir.
func decodeShards(dir string, kvs []*mvccpb.KeyValue) [QueueShards]shardUsage {
	var out [QueueShards]shardUsage
	for _, kv := range kvs {
		i, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), dir))
		if err != nil || i < 0 || i >= QueueShards {
			continue
		}
		u, rev := decodeUsage([]*mvccpb.KeyValue{kv})
		out[i] = shardUsage{Usage: u, rev: rev}
	}
	return out
}

// shardOf is the shard a device's messages try first.
func shardOf(device string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(device))
	return int(h.Sum32() % QueueShards)
}

// shareOf is shard i's part of a total bound: the bound split evenly, the
// remainder going to the first shards, so the parts sum to the bound.
func shareOf(total int64, i int) int64 {
	share := total / QueueShards
	if int64(i) < total%QueueShards {
		share++
	}
	return share
}

// pickShard returns the first shard from first on with room for one more
// message of size bytes within its share of the total bounds.
func pickShard(shards [QueueShards]shardUsage, first int, size int64, limits QueueLimits) (int, bool) {
	for k := range QueueShards {
		i := (first + k) % QueueShards
		u := shards[i].Usage
		if limits.Total > 0 && u.Count+1 > shareOf(limits.Total, i) {
			continue
		}
		if limits.TotalBytes > 0 && u.Bytes+size > shareOf(limits.TotalBytes, i) {
			continue
		}
		return i, true
	}
	return 0, false
}

func sumUsage(shards [QueueShards]shardUsage) QueueUsage {
	var t QueueUsage
	for _, s := range shards {
		t.Count += s.Usage.Count
		t.Bytes += s.Usage.Bytes
	}
	return t
}

// chargeSlack covers the digits of the size field itself.
const chargeSlack = 32

// encodeCharged sets m.Size to what m costs etcd under key and returns its
// encoding.
func (r *Registry) encodeCharged(m *QueuedMessage, key string) ([]byte, error) {
	m.Size = 0
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("registry: encode message: %w", err)
	}
	m.Size = int64(len(key)+len(b)) + chargeSlack
	if b, err = json.Marshal(m); err != nil {
		return nil, fmt.Errorf("registry: encode message: %w", err)
	}
	return b, nil
}

// removeQueued deletes the given queue keys of one device (those still
// there) and frees what they were charged, in one transaction that fails
// if any of them or the counters changed meanwhile; it then tries again.
func (r *Registry) removeQueued(ctx context.Context, device string, keys []string) error {
	useKey := r.queueUseKey(device)
	wait := racePolicy.NewBackOff()
	for attempt := 0; ; attempt++ {
		reads := make([]clientv3.Op, 0, len(keys)+2)
		for _, k := range keys {
			reads = append(reads, clientv3.OpGet(k))
		}
		reads = append(reads, clientv3.OpGet(useKey), clientv3.OpGet(r.prefix+queueTotalDir, clientv3.WithPrefix()))
		resp, err := r.cli.Txn(ctx).Then(reads...).Commit()
		if err != nil {
			return err
		}
		use, useRev := decodeUsage(resp.Responses[len(keys)].GetResponseRange().GetKvs())
		shards := decodeShards(r.prefix+queueTotalDir, resp.Responses[len(keys)+1].GetResponseRange().GetKvs())
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		touched := map[int]bool{}
		for i, k := range keys {
			kvs := resp.Responses[i].GetResponseRange().GetKvs()
			if len(kvs) == 0 {
				continue // already removed
			}
			var m QueuedMessage
			_ = json.Unmarshal(kvs[0].Value, &m)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", kvs[0].ModRevision))
			ops = append(ops, clientv3.OpDelete(k))
			if m.Size <= 0 {
				continue // stored before the bounds in bytes: nothing charged
			}
			use.Count, use.Bytes = max(use.Count-1, 0), max(use.Bytes-m.Size, 0)
			if m.Shard >= 0 && m.Shard < QueueShards {
				s := &shards[m.Shard]
				s.Usage.Count, s.Usage.Bytes = max(s.Usage.Count-1, 0), max(s.Usage.Bytes-m.Size, 0)
				touched[m.Shard] = true
			}
		}
		if len(ops) == 0 {
			return nil
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(useKey), "=", useRev))
		if use.Count == 0 {
			ops = append(ops, clientv3.OpDelete(useKey))
		} else {
			ops = append(ops, clientv3.OpPut(useKey, use.encode()))
		}
		for i := range touched {
			k := r.queueTotalKey(i)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", shards[i].rev))
			ops = append(ops, clientv3.OpPut(k, shards[i].Usage.encode()))
		}
		tr, err := r.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return err
		}
		if tr.Succeeded {
			return nil
		}
		if attempt >= maxQueueAttempts {
			return ErrConflict
		}
		if err := raceWait(ctx, wait); err != nil {
			return err
		}
	}
}

// racePolicy spaces the attempts of a transaction that lost a race: a
// millisecond or so, growing to 10 ms, jittered so that many concurrent
// writers of one counter do not all retry at once.
var racePolicy = retry.Policy{Initial: time.Millisecond, Max: 10 * time.Millisecond, Multiplier: 2}

// raceWait waits the next of b's delays after a lost race; ctx's error when
// it ended first.
func raceWait(ctx context.Context, b backoff.BackOff) error {
	if !retry.Sleep(ctx, b.NextBackOff(), nil) {
		return ctx.Err()
	}
	return nil
}

// DeviceQueueUsage returns what waits for one device, as its counter says.
func (r *Registry) DeviceQueueUsage(ctx context.Context, device string) (QueueUsage, error) {
	resp, err := r.cli.Get(ctx, r.queueUseKey(device))
	if err != nil {
		return QueueUsage{}, fmt.Errorf("registry: read queue usage of %s: %w", device, err)
	}
	u, _ := decodeUsage(resp.Kvs)
	return u, nil
}

// TotalQueueUsage returns what waits in all queues, the sum of the shards.
func (r *Registry) TotalQueueUsage(ctx context.Context) (QueueUsage, error) {
	resp, err := r.cli.Get(ctx, r.prefix+queueTotalDir, clientv3.WithPrefix())
	if err != nil {
		return QueueUsage{}, fmt.Errorf("registry: read queue usage: %w", err)
	}
	return sumUsage(decodeShards(r.prefix+queueTotalDir, resp.Kvs)), nil
}
