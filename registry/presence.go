package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/internal/retry"
)

// presenceDir holds one record per connected device, written by the
// executor that holds its stream, under that executor's lease: when the
// executor dies, its devices' presence goes with it.
const presenceDir = "/presence/"

// Presence says which executor holds a device's stream.
type Presence struct {
	// DeviceID is the device.
	DeviceID string `json:"device"`
	// ExecutorID holds its stream.
	ExecutorID string `json:"executor"`
	// GroupID is the executor's group.
	GroupID string `json:"group"`
	// Address is the executor's address: where devices connect.
	Address string `json:"address"`
	// InternalAddress is the executor's internal address (its
	// Executor.InternalAddress), which control planes dial instead of
	// Address when it is set; empty when the executor serves control
	// planes on Address.
	InternalAddress string `json:"internal_address,omitempty"`
	// SessionID identifies the stream.
	SessionID string `json:"session"`
	// Since is when the stream was admitted.
	Since time.Time `json:"since"`
}

// ControlAddress is the address control planes dial to reach the
// executor holding the device: InternalAddress when it is set, else
// Address.
func (p Presence) ControlAddress() string {
	if p.InternalAddress != "" {
		return p.InternalAddress
	}
	return p.Address
}

func (r *Registry) presenceKey(id string) string { return r.prefix + presenceDir + id }

// Presence reads where a device is connected; ErrNotFound when it is not.
func (r *Registry) Presence(ctx context.Context, deviceID string) (Presence, error) {
	var p Presence
	err := r.getJSON(ctx, r.presenceKey(deviceID), &p)
	return p, err
}

// maxTxnOps bounds the operations of one transaction (etcd's default limit
// is 128).
const maxTxnOps = 100

// One live session per device. The session whose presence put has the
// highest etcd revision is the live one: a session's first put is
// unconditional and returns the record it overwrote, so exactly one
// writer learns, from etcd's own order, which session it replaced. When
// that session is on another executor, the writer leaves a Replacement
// under replacedDir for it (see replaced.go) and that executor ends the
// stream with Goodbye REPLACED. Every other write is conditional. A delete
// happens only when no session of the device is live here, and only if
// the record is under this executor's lease (so it was written by this
// executor, for a session that ended): a record another executor wrote is
// never deleted. A rewrite under a new lease happens only if the record
// is still the session's own (compared by value, which names the session)
// or absent: finding a newer one, the session learns it was replaced.

// presenceEntry is one live session's record as this executor keeps it.
type presenceEntry struct {
	// p is never modified: its encoding (encodePresence), the value
	// written, is the same at every write. It is encoded when written, not
	// kept: an executor holds an entry per stream for hours.
	p Presence
	// written is set once a put was applied: later puts (under a new
	// lease) are rewrites, conditional on the record being this one or
	// absent.
	written bool
	// settled is set once the first put was applied and the device's
	// queue was counted at its revision (or the count failed): what
	// PresenceWritten waits for.
	settled bool
	// wrote, made by the first PresenceWritten that finds the entry not
	// yet settled, is closed when settled is set.
	wrote chan struct{}
	// queued is how many messages the device's queue held at the revision
	// of the first put, when counted is set (see QueuedAtPresence).
	queued  int64
	counted bool
}

// closedChan is the channel PresenceWritten returns for a written record.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// PresenceWritten returns a channel that is closed once the presence of
// deviceID naming sessionID has been written, so that readers of the
// registry see it (closed already if it has been). ok is false when this
// registration holds no such presence: the session ended, or a newer
// session of the device replaced it here. A put that finds a newer
// session's record is not applied and never closes the channel: the
// session is replaced (OnReplaced) instead. The executor waits on it
// before reading a device's message queue, instead of polling the record.
func (g *Registration) PresenceWritten(deviceID, sessionID string) (written <-chan struct{}, ok bool) {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	e, live := g.present[deviceID]
	if !live || e.p.SessionID != sessionID {
		return nil, false
	}
	if e.settled {
		return closedChan, true
	}
	if e.wrote == nil {
		e.wrote = make(chan struct{})
	}
	return e.wrote, true
}

// QueuedAtPresence returns how many messages were queued for deviceID at
// the revision its presence naming sessionID was first written (read at
// that revision just after the put, before PresenceWritten's channel
// closes). ok is false until then, when the count could not be read, or
// when this registration holds no such presence. A message stored at a
// later revision was stored after the presence was visible, so its sender
// tries to deliver it (and leaves it queued for redelivery when that
// fails): a count of 0 means the session's queue drain has nothing to read.
func (g *Registration) QueuedAtPresence(deviceID, sessionID string) (n int64, ok bool) {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	e, live := g.present[deviceID]
	if !live || e.p.SessionID != sessionID || !e.counted {
		return 0, false
	}
	return e.queued, true
}

// SetPresence records that the device's stream is held here. It is written
// within moments, batched with others, under the registration's lease; after
// a lease is lost, every presence is written again under the new one.
func (g *Registration) SetPresence(p Presence) {
	g.pmu.Lock()
	g.present[p.DeviceID] = &presenceEntry{p: p}
	g.pdirty[p.DeviceID] = true
	g.pmu.Unlock()
	g.signalPresence()
}

// ClearPresence removes the device's presence if it still names session.
// The record is deleted only if it is still under this executor's lease:
// the device may already be present elsewhere. When this executor never
// sent a put for the device, there is nothing to delete and nothing is
// written.
func (g *Registration) ClearPresence(deviceID, sessionID string) {
	g.pmu.Lock()
	if e, ok := g.present[deviceID]; ok && e.p.SessionID == sessionID {
		delete(g.present, deviceID)
		if g.recorded[deviceID] {
			g.pdirty[deviceID] = true
		} else {
			delete(g.pdirty, deviceID)
		}
	}
	g.pmu.Unlock()
	g.signalPresence()
}

// PresencePending counts presence changes not yet written.
func (g *Registration) PresencePending() int {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	return len(g.pdirty) + len(g.notes)
}

func (g *Registration) signalPresence() {
	select {
	case g.psignal <- struct{}{}:
	default:
	}
}

// presenceOp is one device's change in a presence transaction.
type presenceOp struct {
	id    string
	entry *presenceEntry // the entry written; nil: a conditional delete
	// rewrite: the record was written once; put it only if it is still
	// this session's or absent.
	rewrite bool
}

// presenceLoop writes presence changes under lease until ctx is done.
func (g *Registration) presenceLoop(ctx context.Context, lease clientv3.LeaseID) {
	defer g.counting.Wait()
	// Everything held here is written again under this lease; the records
	// of ended sessions went with the old one.
	g.pmu.Lock()
	g.recorded = map[string]bool{}
	for id := range g.present {
		g.pdirty[id] = true
	}
	g.pmu.Unlock()
	g.signalPresence()
	// One loop for both writes: a failure of either is etcd's, and one
	// backoff keeps them from hammering it in turn.
	loop := retry.New(g.cfg.retryPolicy(), g.log, "presence write failed")
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.psignal:
		}
		for {
			batch, more := g.nextPresenceBatch()
			if len(batch) == 0 {
				break
			}
			err := g.writePresence(ctx, lease, batch)
			if err == nil {
				err = g.writeNotes(ctx)
			}
			if err != nil {
				if !loop.Failed(ctx, nil, err, "devices", len(batch)) {
					return
				}
				continue
			}
			loop.Succeeded()
			if !more {
				break
			}
		}
		if err := g.writeNotes(ctx); err != nil {
			if !loop.Failed(ctx, nil, err, "what", "replacement notices") {
				return
			}
			g.signalPresence()
			continue
		}
		loop.Succeeded()
	}
}

// nextPresenceBatch takes up to maxTxnOps dirty devices; more says whether
// others are left.
func (g *Registration) nextPresenceBatch() ([]presenceOp, bool) {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	batch := make([]presenceOp, 0, min(len(g.pdirty), maxTxnOps))
	for id := range g.pdirty {
		if len(batch) == maxTxnOps {
			break
		}
		delete(g.pdirty, id)
		if e, ok := g.present[id]; ok {
			batch = append(batch, presenceOp{id: id, entry: e, rewrite: e.written})
			// Sent: it may be applied even if the call fails.
			g.recorded[id] = true
		} else if g.recorded[id] {
			batch = append(batch, presenceOp{id: id})
		}
	}
	return batch, len(g.pdirty) > 0
}

// encodePresence is p's record value. The same p always encodes to the
// same bytes (encoding/json writes a struct's fields in their order), which
// a rewrite's compare relies on.
func encodePresence(p Presence) (string, error) {
	b, err := json.Marshal(p)
	return string(b), err
}

// writePresence applies batch in one transaction. On failure every change
// of it is marked dirty again; on success each put's outcome is read: the
// record it overwrote names a session replaced by this one, and a rewrite
// that found another session's record means this one was replaced.
func (g *Registration) writePresence(ctx context.Context, lease clientv3.LeaseID, batch []presenceOp) error {
	ops := make([]clientv3.Op, 0, len(batch))
	for _, o := range batch {
		key := g.reg.presenceKey(o.id)
		if o.entry == nil {
			ours := clientv3.Compare(clientv3.LeaseValue(key), "=", lease)
			ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{ours}, []clientv3.Op{clientv3.OpDelete(key)}, nil))
			continue
		}
		val, err := encodePresence(o.entry.p)
		if err != nil {
			// A Presence is strings and a time of this year: it always
			// encodes. A read holds the op's place in the responses.
			g.log.Error("registry: encode presence", "device", o.id, "err", err)
			ops = append(ops, clientv3.OpGet(key, clientv3.WithCountOnly()))
			continue
		}
		mine := clientv3.Compare(clientv3.Value(key), "=", val)
		put := clientv3.OpPut(key, val, clientv3.WithLease(lease), clientv3.WithPrevKV())
		switch {
		case o.rewrite:
			absent := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
			ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{mine}, []clientv3.Op{put},
				[]clientv3.Op{clientv3.OpTxn([]clientv3.Cmp{absent}, []clientv3.Op{put}, []clientv3.Op{clientv3.OpGet(key)})}))
		default:
			ops = append(ops, put)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, g.cfg.Refresh)
	defer cancel()
	resp, err := g.reg.client().Txn(wctx).Then(ops...).Commit()
	if err != nil {
		g.pmu.Lock()
		for _, o := range batch {
			g.pdirty[o.id] = true
		}
		g.pmu.Unlock()
		return fmt.Errorf("registry: write presence: %w", err)
	}
	var lost []Presence    // sessions of this executor found replaced
	var first []presenceOp // the first puts applied, to count queues for
	g.pmu.Lock()
	for i, o := range batch {
		if o.entry == nil {
			if _, live := g.present[o.id]; !live && !g.pdirty[o.id] {
				delete(g.recorded, o.id)
			}
			continue
		}
		kvs, wrote := presenceOutcome(resp.Responses[i])
		if wrote && g.present[o.id] == o.entry {
			o.entry.written = true
			if !o.rewrite {
				first = append(first, o)
			} else {
				o.entry.settle()
			}
		}
		for _, kv := range kvs {
			var prev Presence
			if json.Unmarshal(kv.Value, &prev) != nil || prev.SessionID == o.entry.p.SessionID {
				continue
			}
			if !wrote {
				// A rewrite found a newer session's record.
				lost = append(lost, o.entry.p)
				continue
			}
			// Executors write records under their lease; one without
			// (written by hand) has no executor to tell.
			if prev.ExecutorID != o.entry.p.ExecutorID && kv.Lease != 0 {
				g.notes[prev.ExecutorID+"/"+o.id] = note{rep: Replacement{
					DeviceID: o.id, SessionID: prev.SessionID, ExecutorID: prev.ExecutorID,
					ByExecutor: o.entry.p.ExecutorID, BySession: o.entry.p.SessionID,
				}, lease: clientv3.LeaseID(kv.Lease)}
			}
		}
	}
	g.pmu.Unlock()
	if len(first) > 0 {
		// Beside the loop, which writes the next batch meanwhile: one
		// more round trip per batch would slow a storm's presence writes.
		rev := resp.Header.GetRevision()
		g.counting.Go(func() { g.countQueues(ctx, rev, first) })
	}
	for _, p := range lost {
		g.replaced(Replacement{DeviceID: p.DeviceID, SessionID: p.SessionID, ExecutorID: p.ExecutorID})
	}
	return nil
}

// settle marks e settled and wakes PresenceWritten's waiters. The caller
// holds pmu.
func (e *presenceEntry) settle() {
	e.settled = true
	if e.wrote != nil {
		close(e.wrote)
		e.wrote = nil
	}
}

// countQueues counts the queues of the devices of first puts applied at
// rev, in one read at that revision (no write, so no disk sync; the put's
// transaction holds only puts, up to maxTxnOps of them), and settles
// their entries: a session's queue drain then reads the queue only if
// something was in it when its presence became visible
// (QueuedAtPresence). When the read fails the entries settle uncounted,
// and their drains read the queue.
func (g *Registration) countQueues(ctx context.Context, rev int64, first []presenceOp) {
	if len(first) == 0 {
		return
	}
	ops := make([]clientv3.Op, len(first))
	for i, o := range first {
		ops[i] = clientv3.OpGet(g.reg.queuePrefix(o.id), clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(rev))
	}
	rctx, cancel := context.WithTimeout(ctx, g.cfg.Refresh)
	defer cancel()
	resp, err := g.reg.client().Txn(rctx).Then(ops...).Commit()
	if err != nil {
		g.log.Debug("registry: counting queues at a presence write; the drains read them", "devices", len(first), "err", err)
	}
	g.pmu.Lock()
	defer g.pmu.Unlock()
	for i, o := range first {
		if err == nil && g.present[o.id] == o.entry {
			o.entry.queued, o.entry.counted = resp.Responses[i].GetResponseRange().GetCount(), true
		}
		o.entry.settle()
	}
}

// presenceOutcome reads one put's response, plain or nested in the
// transactions of a rewrite: wrote says the put was applied, kvs are the
// record it overwrote (wrote) or found instead (not wrote).
func presenceOutcome(r *etcdserverpb.ResponseOp) (kvs []*mvccpb.KeyValue, wrote bool) {
	switch x := r.GetResponse().(type) {
	case *etcdserverpb.ResponseOp_ResponsePut:
		if kv := x.ResponsePut.GetPrevKv(); kv != nil {
			kvs = append(kvs, kv)
		}
		return kvs, true
	case *etcdserverpb.ResponseOp_ResponseRange:
		return x.ResponseRange.GetKvs(), false
	case *etcdserverpb.ResponseOp_ResponseTxn:
		if rs := x.ResponseTxn.GetResponses(); len(rs) == 1 {
			return presenceOutcome(rs[0])
		}
	}
	return nil, false
}
