package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// replacedDir holds the notices of sessions replaced by a newer session of
// the same device on another executor: replacedDir<executor>/<device>,
// written by the executor of the newer session under the lease of the
// replaced record (so a notice lives no longer than the executor it is
// for), read through a watch of its own directory by the executor it
// names, and deleted by it once handled. A notice exists only when a
// device's stream moved between executors while the old one was still
// recorded: no key and no watch event per ordinary connect, and each
// executor watches only its own notices.
const replacedDir = "/replaced/"

// Replacement says that a device's session on an executor was replaced by
// a newer one.
type Replacement struct {
	// DeviceID is the device.
	DeviceID string `json:"device"`
	// SessionID is the replaced session.
	SessionID string `json:"session"`
	// ExecutorID held the replaced session.
	ExecutorID string `json:"executor"`
	// ByExecutor holds the newer session (empty when unknown).
	ByExecutor string `json:"by_executor,omitempty"`
	// BySession is the newer session (empty when unknown).
	BySession string `json:"by_session,omitempty"`
}

// note is a Replacement waiting to be written, under the replaced
// record's lease.
type note struct {
	rep   Replacement
	lease clientv3.LeaseID
}

func (r *Registry) replacedPrefix(executor string) string {
	return r.prefix + replacedDir + executor + "/"
}

// OnReplaced registers fn, called when a session held here was replaced by
// a newer session of the same device on another executor (the registry
// learned it from a notice, or from a rewrite of the session's presence
// that found the newer record). fn runs on the registration's goroutines:
// it must not block. It may be called for sessions that already ended, and
// more than once for one session. Call it before Run.
func (g *Registration) OnReplaced(fn func(Replacement)) { g.onReplaced = fn }

func (g *Registration) replaced(rep Replacement) {
	if g.onReplaced != nil {
		g.onReplaced(rep)
	}
}

// writeNotes writes the waiting notices, one put each: a notice for an
// executor whose lease is gone is dropped (its sessions went with it, or
// rewrite their presence conditionally and find the newer record).
func (g *Registration) writeNotes(ctx context.Context) error {
	g.pmu.Lock()
	notes := make(map[string]note, len(g.notes))
	for k, n := range g.notes {
		notes[k] = n
	}
	g.pmu.Unlock()
	for k, n := range notes {
		b, err := json.Marshal(n.rep)
		if err != nil {
			return fmt.Errorf("registry: encode replacement: %w", err)
		}
		key := g.reg.replacedPrefix(n.rep.ExecutorID) + n.rep.DeviceID
		wctx, cancel := context.WithTimeout(ctx, g.cfg.Refresh)
		_, err = g.reg.client().Put(wctx, key, string(b), clientv3.WithLease(n.lease))
		cancel()
		if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("registry: write replacement: %w", err)
		}
		g.pmu.Lock()
		if g.notes[k] == n {
			delete(g.notes, k)
		}
		g.pmu.Unlock()
	}
	return nil
}

// watchReplaced hands the notices for this executor to OnReplaced's
// function, and deletes them, until ctx is done.
func (g *Registration) watchReplaced(ctx context.Context) error {
	dir := g.reg.replacedPrefix(g.Current().ID)
	load := func(ctx context.Context) (int64, error) {
		return g.reg.listKVs(ctx, dir, func(kv *mvccpb.KeyValue) error {
			g.handleNotice(ctx, kv)
			return nil
		})
	}
	watch := func(ctx context.Context, rev int64) error {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer cancel()
		for resp := range g.reg.client().Watch(wctx, dir, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithFilterDelete()) {
			if err := resp.Err(); err != nil {
				return err
			}
			for _, ev := range resp.Events {
				g.handleNotice(ctx, ev.Kv)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errWatchClosed
	}
	return listWatch(ctx, &g.notesSync, g.log, "replacement notices", load, watch, nil)
}

// handleNotice acts on one notice and deletes it (if it was not written
// again meanwhile).
func (g *Registration) handleNotice(ctx context.Context, kv *mvccpb.KeyValue) {
	var rep Replacement
	if err := json.Unmarshal(kv.Value, &rep); err != nil {
		g.log.Warn("registry: skipping undecodable replacement notice", "key", string(kv.Key), "err", err)
	} else {
		g.replaced(rep)
	}
	key := string(kv.Key)
	dctx, cancel := context.WithTimeout(ctx, g.cfg.Refresh)
	defer cancel()
	if _, err := g.reg.client().Txn(dctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
		Then(clientv3.OpDelete(key)).Commit(); err != nil && ctx.Err() == nil {
		// Left for the next listing, or for the lease to take.
		g.log.Debug("deleting a replacement notice", "key", key, "err", err)
	}
}
