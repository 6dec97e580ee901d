package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/internal/retry"
)

// drainsDir holds operators' drain marks of executors, one key per
// executor id. A mark outlives the executor's lease and restarts.
const drainsDir = "/drains/"

// ExecutorDrain is an operator's mark on an executor: Assign stops naming
// it, and the rebalancer moves its devices away at its rate. The executor
// keeps serving the devices that stay.
type ExecutorDrain struct {
	// ExecutorID is the executor marked.
	ExecutorID string `json:"executor"`
	// By says who marked it, free text.
	By string `json:"by,omitempty"`
	// At is when it was marked.
	At time.Time `json:"at"`
}

func (r *Registry) drainKey(id string) string { return r.prefix + drainsDir + id }

// PutExecutorDrain marks an executor drained. The executor need not be
// registered: the mark applies when it registers.
func (r *Registry) PutExecutorDrain(ctx context.Context, d ExecutorDrain) error {
	if !ValidID(d.ExecutorID) {
		return fmt.Errorf("%w: executor id %q", ErrInvalid, d.ExecutorID)
	}
	return r.putJSON(ctx, r.drainKey(d.ExecutorID), d)
}

// DeleteExecutorDrain removes an executor's drain mark and reports whether
// there was one.
func (r *Registry) DeleteExecutorDrain(ctx context.Context, id string) (bool, error) {
	if !ValidID(id) {
		return false, fmt.Errorf("%w: executor id %q", ErrInvalid, id)
	}
	resp, err := r.cli.Delete(ctx, r.drainKey(id))
	if err != nil {
		return false, fmt.Errorf("registry: delete drain mark of %s: %w", id, err)
	}
	return resp.Deleted > 0, nil
}

// ExecutorDrains lists the drain marks, sorted by executor id.
func (r *Registry) ExecutorDrains(ctx context.Context) ([]ExecutorDrain, error) {
	return listJSON[ExecutorDrain](ctx, r, r.prefix+drainsDir)
}

// SetGroupState changes a group's state, atomically against other writes
// of the group, and returns the group as stored. ErrNotFound when the group
// does not exist.
func (r *Registry) SetGroupState(ctx context.Context, id string, state GroupState) (Group, error) {
	if !state.Valid() {
		return Group{}, fmt.Errorf("%w: group state %q: want active, draining or disabled", ErrInvalid, state)
	}
	key := r.groupKey(id)
	for {
		resp, err := r.cli.Get(ctx, key)
		if err != nil {
			return Group{}, fmt.Errorf("registry: get group %s: %w", id, err)
		}
		if len(resp.Kvs) == 0 {
			return Group{}, fmt.Errorf("%w: group %s", ErrNotFound, id)
		}
		var g Group
		if err := json.Unmarshal(resp.Kvs[0].Value, &g); err != nil {
			return Group{}, fmt.Errorf("registry: decode group %s: %w", id, err)
		}
		g.State = state
		b, err := json.Marshal(g)
		if err != nil {
			return Group{}, fmt.Errorf("registry: encode group %s: %w", id, err)
		}
		tr, err := r.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, string(b))).
			Commit()
		if err != nil {
			return Group{}, fmt.Errorf("registry: put group %s: %w", id, err)
		}
		if tr.Succeeded {
			return g, nil
		}
		// Someone wrote the group meanwhile: read it again.
	}
}

// DrainMarked reports whether an operator's drain mark names this
// executor, as far as the registration has seen.
func (g *Registration) DrainMarked() bool { return g.marked.Load() }

// loadDrainMark reads the executor's drain mark once; on error the last
// known state stays (watchDrainMark retries).
func (g *Registration) loadDrainMark(ctx context.Context) {
	g.mu.Lock()
	key := g.reg.drainKey(g.cur.ID)
	g.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, g.cfg.Refresh)
	defer cancel()
	if resp, err := g.reg.client().Get(rctx, key, clientv3.WithCountOnly()); err == nil {
		g.marked.Store(resp.Count > 0)
	}
}

// watchDrainMark follows the executor's drain mark until ctx is done, and
// has the record rewritten whenever it appears or goes. Errors are retried
// with the registration's jittered backoff.
func (g *Registration) watchDrainMark(ctx context.Context) {
	cli := g.reg.client()
	g.mu.Lock()
	key := g.reg.drainKey(g.cur.ID)
	g.mu.Unlock()
	loop := retry.New(g.cfg.retryPolicy(), g.log, "watching the executor's drain mark")
	for {
		resp, err := cli.Get(ctx, key)
		if err == nil {
			g.setMarked(len(resp.Kvs) > 0)
			loop.Succeeded()
			err = g.followDrainMark(ctx, key, resp.Header.Revision)
		}
		if !loop.Failed(ctx, nil, err) {
			return
		}
	}
}

// followDrainMark applies the mark's changes after rev until the watch
// fails.
func (g *Registration) followDrainMark(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range g.reg.client().Watch(wctx, key, clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			g.setMarked(ev.Type != mvccpb.DELETE)
		}
	}
	return errWatchClosed
}

// setMarked records the mark and has the record rewritten when it changed.
func (g *Registration) setMarked(marked bool) {
	if g.marked.Swap(marked) == marked {
		return
	}
	if marked {
		g.log.Info("executor drain mark set: Assign stops naming this executor; the rebalancer moves its devices")
	} else {
		g.log.Info("executor drain mark removed")
	}
	select {
	case g.dirty <- struct{}{}:
	default:
	}
}
