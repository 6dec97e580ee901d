package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/internal/retry"
)

// historyDir holds one record per device that ever connected: its traffic
// and connects, as counters that decay with a time constant of a day, so
// that each reads as "about the last day" without storing events. Executors
// add to it when a stream ends (and hourly for long streams); control
// planes watch it, so placement reads it from memory.
const historyDir = "/history/"

func (r *Registry) historyKey(id string) string { return r.prefix + historyDir + id }

// History reads a device's history record; ErrNotFound when it has none.
func (r *Registry) History(ctx context.Context, deviceID string) (History, error) {
	var h History
	err := r.getJSON(ctx, r.historyKey(deviceID), &h)
	return h, err
}

// Histories reads every device's history record, by device id.
func (r *Registry) Histories(ctx context.Context) (map[string]History, error) {
	out := map[string]History{}
	_, err := r.listKVs(ctx, r.prefix+historyDir, func(kv *mvccpb.KeyValue) error {
		var h History
		if err := json.Unmarshal(kv.Value, &h); err != nil {
			return nil // an undecodable record reads as none, as in the cache
		}
		out[strings.TrimPrefix(string(kv.Key), r.prefix+historyDir)] = h
		return nil
	})
	return out, err
}

// AddUsage folds each device's usage into its history record, at now. A
// batch costs one read transaction and one conditional write transaction
// (per maxTxnOps/2 devices); a device whose record changed in between (its
// new executor reported at the same moment) is retried alone. Invalid
// device ids are skipped. On error it
// returns the usage not written, which the caller may add again later:
// nothing is counted twice.
func (r *Registry) AddUsage(ctx context.Context, usage map[string]Usage, now time.Time) (unwritten map[string]Usage, err error) {
	ids := make([]string, 0, len(usage))
	for id, u := range usage {
		// An invalid id cannot name a key; it cannot come from an
		// executor, which admits only devices with valid tokens.
		if ValidID(id) && !u.IsZero() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for i := 0; i < len(ids); i += maxTxnOps / 2 {
		batch := ids[i:min(len(ids), i+maxTxnOps/2)]
		if err := r.addUsageBatch(ctx, batch, usage, now, usageRetries); err != nil {
			skip := 0
			var pe *partialError
			if errors.As(err, &pe) {
				skip, err = len(pe.done), pe.err
			}
			unwritten = map[string]Usage{}
			for _, id := range ids[i+skip:] {
				unwritten[id] = usage[id]
			}
			return unwritten, err
		}
	}
	return nil, nil
}

// usageRetries bounds the compare-and-swap attempts of one device's record.
const usageRetries = 5

// addUsageBatch reads the batch's records, then writes them all if none
// changed, else each alone with its own compare-and-swap.
func (r *Registry) addUsageBatch(ctx context.Context, ids []string, usage map[string]Usage, now time.Time, tries int) error {
	gets := make([]clientv3.Op, len(ids))
	for i, id := range ids {
		gets[i] = clientv3.OpGet(r.historyKey(id))
	}
	resp, err := r.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return fmt.Errorf("registry: read history: %w", err)
	}
	cmps := make([]clientv3.Cmp, len(ids))
	puts := make([]clientv3.Op, len(ids))
	for i, id := range ids {
		var h History
		var modRev int64
		if kvs := resp.Responses[i].GetResponseRange().GetKvs(); len(kvs) > 0 {
			modRev = kvs[0].ModRevision
			// An undecodable record is replaced, not kept forever.
			_ = json.Unmarshal(kvs[0].Value, &h)
		}
		b, err := json.Marshal(h.Fold(usage[id], now))
		if err != nil {
			return fmt.Errorf("registry: encode history of %s: %w", id, err)
		}
		key := r.historyKey(id)
		cmps[i] = clientv3.Compare(clientv3.ModRevision(key), "=", modRev)
		puts[i] = clientv3.OpPut(key, string(b))
	}
	tr, err := r.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
	if err != nil {
		return fmt.Errorf("registry: write history: %w", err)
	}
	if tr.Succeeded {
		return nil
	}
	if len(ids) == 1 {
		// Lost a race with another writer: read again and retry.
		if tries <= 1 {
			return fmt.Errorf("registry: history of %s changed under %d attempts to update it", ids[0], usageRetries)
		}
		return r.addUsageBatch(ctx, ids, usage, now, tries-1)
	}
	// Nothing was written: retry each alone. Those already done are not
	// redone if a later one fails, so report only from the failing one on.
	for j, id := range ids {
		if err := r.addUsageBatch(ctx, []string{id}, usage, now, tries); err != nil {
			return &partialError{done: ids[:j], err: err}
		}
	}
	return nil
}

// partialError is a batch failure after its first done devices were
// written one by one.
type partialError struct {
	done []string
	err  error
}

func (e *partialError) Error() string { return e.err.Error() }
func (e *partialError) Unwrap() error { return e.err }

// UsageRecorder collects the usage executors report and writes it to the
// devices' history records in batches, every Interval. It never blocks a
// caller: what it holds is bounded by the number of devices that reported
// since the last write.
type UsageRecorder struct {
	reg      *Registry
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu              sync.Mutex
	pending         map[string]Usage
	written, failed int64
	// outage logs failed writes: the first at warn, the next at debug,
	// the recovery at warn. Writes keep their interval: nothing waits on
	// its backoff.
	outage *retry.Loop
}

// DefaultUsageInterval is how often a UsageRecorder writes.
const DefaultUsageInterval = 5 * time.Second

// NewUsageRecorder returns a recorder writing through r every interval
// (DefaultUsageInterval when 0). Run writes.
func (r *Registry) NewUsageRecorder(interval time.Duration, log *slog.Logger) *UsageRecorder {
	if interval <= 0 {
		interval = DefaultUsageInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &UsageRecorder{reg: r, log: log, interval: interval, now: time.Now, pending: map[string]Usage{},
		outage: retry.New(retry.Policy{Initial: interval, Max: interval}, log, "registry: writing device history")}
}

// AddUsage records that the device's stream did u; it does not block.
func (u *UsageRecorder) AddUsage(deviceID string, usage Usage) {
	if usage.IsZero() {
		return
	}
	u.mu.Lock()
	u.pending[deviceID] = u.pending[deviceID].Add(usage)
	u.mu.Unlock()
}

// Written returns how many device records were written, and how many
// batches failed (their usage is kept for the next write).
func (u *UsageRecorder) Written() (written, failed int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.written, u.failed
}

// Run writes every interval until ctx ends, then writes what is left once
// more (with a short deadline of its own) and returns nil.
func (u *UsageRecorder) Run(ctx context.Context) error {
	t := time.NewTicker(u.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			u.Flush(fctx)
			cancel()
			return nil
		case <-t.C:
			u.Flush(ctx)
		}
	}
}

// Flush writes what was recorded; on failure the usage is kept for the
// next flush.
func (u *UsageRecorder) Flush(ctx context.Context) {
	u.mu.Lock()
	batch := u.pending
	u.pending = map[string]Usage{}
	u.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	unwritten, err := u.reg.AddUsage(ctx, batch, u.now())
	u.mu.Lock()
	defer u.mu.Unlock()
	u.written += int64(len(batch) - len(unwritten))
	if err != nil {
		u.failed++
		for id, x := range unwritten {
			u.pending[id] = u.pending[id].Add(x)
		}
		u.outage.Fail(err, "devices_kept", len(unwritten))
		return
	}
	u.outage.Succeeded()
}
