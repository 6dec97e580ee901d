package registry

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// PresenceView is a watch-fed, in-memory copy of every device's presence:
// which executor holds its stream. Only the rebalancer's leader keeps one;
// control planes' caches leave presence out. Like the Cache, it lists at a
// revision, watches from the next, and lists again when the watch fails.
type PresenceView struct {
	reg *Registry
	log *slog.Logger

	mu       sync.RWMutex
	devices  map[string]Presence
	onChange func(id string, p *Presence)

	syncState
}

// NewPresenceView returns a view of r's presence records. It does no I/O;
// Run does.
func (r *Registry) NewPresenceView(log *slog.Logger) *PresenceView {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &PresenceView{reg: r, log: log, devices: map[string]Presence{}}
	v.first = make(chan struct{})
	return v
}

// OnChange registers fn to be called, from the watch goroutine, with every
// presence the watch delivers (p nil: the device's presence was deleted);
// not with those of a full listing. Call it before Run; fn must not block
// or call back into the view.
func (v *PresenceView) OnChange(fn func(id string, p *Presence)) { v.onChange = fn }

// Get returns a device's presence.
func (v *PresenceView) Get(id string) (Presence, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	p, ok := v.devices[id]
	return p, ok
}

// Range calls fn for every present device, in no order, until it returns
// false. fn must not call back into the view.
func (v *PresenceView) Range(fn func(Presence) bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, p := range v.devices {
		if !fn(p) {
			return
		}
	}
}

// Len counts present devices.
func (v *PresenceView) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.devices)
}

// Run keeps the view in sync until ctx is cancelled, then returns nil.
func (v *PresenceView) Run(ctx context.Context) error {
	return listWatch(ctx, &v.syncState, v.log, "presence view", v.load, v.watch, nil)
}

func (v *PresenceView) load(ctx context.Context) (int64, error) {
	devs := map[string]Presence{}
	dir := v.reg.prefix + presenceDir
	rev, err := v.reg.listKVs(ctx, dir, func(kv *mvccpb.KeyValue) error {
		var p Presence
		if err := json.Unmarshal(kv.Value, &p); err != nil {
			v.log.Warn("registry: skipping undecodable presence", "key", string(kv.Key), "err", err)
			return nil
		}
		devs[strings.TrimPrefix(string(kv.Key), dir)] = p
		return nil
	})
	if err != nil {
		return 0, err
	}
	v.mu.Lock()
	v.devices = devs
	v.mu.Unlock()
	return rev, nil
}

func (v *PresenceView) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	dir := v.reg.prefix + presenceDir
	for resp := range v.reg.client().Watch(wctx, dir, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			id := strings.TrimPrefix(string(ev.Kv.Key), dir)
			var pp *Presence
			v.mu.Lock()
			if ev.Type == mvccpb.DELETE {
				delete(v.devices, id)
			} else {
				var p Presence
				if err := json.Unmarshal(ev.Kv.Value, &p); err != nil {
					delete(v.devices, id)
					v.mu.Unlock()
					v.log.Warn("registry: skipping undecodable presence", "key", string(ev.Kv.Key), "err", err)
					continue
				}
				v.devices[id] = p
				pp = &p
			}
			v.mu.Unlock()
			if v.onChange != nil {
				v.onChange(id, pp)
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errWatchClosed
}
