package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/fleet"
)

// parts are the pieces of a snapshot while it is being built.
type parts struct {
	groups  map[string]Group
	execs   map[string]Executor
	tenants map[string]Tenant
	policy  *StoredPolicy
}

func newSnapshot(rev int64, p parts) *Snapshot {
	return fleet.Build(rev, p.groups, p.execs, p.tenants, p.policy)
}

// Cache is a watch-fed, in-memory copy of the registry: it lists everything
// at revision R, watches from R+1, and when the watch fails or its revision
// is compacted it marks itself not ready and lists again. Reads never touch
// etcd.
type Cache struct {
	reg *Registry
	log *slog.Logger
	now func() time.Time

	snap atomic.Pointer[Snapshot]
	syncState

	mu sync.RWMutex
	// moved are the replacement notices, by the executor they name, then
	// by device: the revision that created each (see MovedAway). Guarded
	// by mu; read only by the watch goroutine and load.
	moved        map[string]map[string]int64
	assignments  map[string]Assignment
	history      map[string]History
	onAssignment []func(Assignment) // subscribers in order; replaced, never modified, under mu

	relists atomic.Int64
	// rev is the store revision the cache reflects: its listing's, then
	// each watch response's (progress notifications included).
	rev atomic.Int64
	// progress is how often the watch asks etcd for its revision; a watch
	// that heard nothing for staleProgress of them is given up.
	progress time.Duration
}

// NewCache returns a cache of r. It does no I/O; Run does.
func (r *Registry) NewCache(log *slog.Logger) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cache{reg: r, log: log, now: time.Now, assignments: map[string]Assignment{}, history: map[string]History{}, moved: map[string]map[string]int64{}, progress: DefaultProgressInterval}
	c.first = make(chan struct{})
	c.snap.Store(newSnapshot(0, parts{groups: map[string]Group{}, execs: map[string]Executor{}, tenants: map[string]Tenant{}}))
	return c
}

// Snapshot returns the current snapshot. Before the first load it is empty.
func (c *Cache) Snapshot() *Snapshot { return c.snap.Load() }

// Assignment returns the cached assignment record of a device.
func (c *Cache) Assignment(deviceID string) (Assignment, bool) {
	c.mu.RLock()
	a, ok := c.assignments[deviceID]
	c.mu.RUnlock()
	return a, ok
}

// RangeAssignments calls fn for every cached assignment record, in no
// order, until fn returns false. fn must not call back into the cache.
func (c *Cache) RangeAssignments(fn func(Assignment) bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, a := range c.assignments {
		if !fn(a) {
			return
		}
	}
}

// History returns the cached history record of a device.
func (c *Cache) History(deviceID string) (History, bool) {
	c.mu.RLock()
	h, ok := c.history[deviceID]
	c.mu.RUnlock()
	return h, ok
}

// AssignmentCount returns how many assignment records are cached.
func (c *Cache) AssignmentCount() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.assignments)
}

// SetProgressInterval sets how often the watch asks etcd for its revision
// (DefaultProgressInterval); call it before Run.
func (c *Cache) SetProgressInterval(d time.Duration) {
	if d > 0 {
		c.progress = d
	}
}

// Revision returns the etcd revision the cache reflects (0 before the
// first listing).
func (c *Cache) Revision() int64 { return c.rev.Load() }

// Relists counts the full reloads after the first one.
func (c *Cache) Relists() int64 { return c.relists.Load() }

// Run keeps the cache in sync until ctx is cancelled. It returns nil then;
// etcd errors are retried, never returned.
func (c *Cache) Run(ctx context.Context) error {
	return listWatch(ctx, &c.syncState, c.log, "registry cache", c.load, c.watch, func() { c.relists.Add(1) })
}

// cachedDirs are the parts of the keyspace the cache holds; presence and
// queues are read where they are needed, never cached.
var cachedDirs = []string{groupsDir, executorsDir, tenantsDir, assignmentsDir, historyDir, replacedDir}

// devices are the per-device records of the cache while they are loaded.
type devices struct {
	assigns map[string]Assignment
	history map[string]History
}

// load lists the cached directories and the policy at one revision and
// replaces the cache's contents.
func (c *Cache) load(ctx context.Context) (int64, error) {
	p := parts{groups: map[string]Group{}, execs: map[string]Executor{}, tenants: map[string]Tenant{}}
	devs := devices{assigns: map[string]Assignment{}, history: map[string]History{}}
	moved := map[string]map[string]int64{}
	now := c.now()
	var rev int64
	for _, dir := range cachedDirs {
		rv, err := c.reg.listKVsAt(ctx, c.reg.prefix+dir, rev, func(kv *mvccpb.KeyValue) error {
			if dir == replacedDir {
				noteMoved(moved, strings.TrimPrefix(string(kv.Key), c.reg.prefix+dir), kv.CreateRevision)
				return nil
			}
			c.decode(string(kv.Key), kv.Value, kv.ModRevision, &p, devs, now)
			return nil
		})
		if err != nil {
			return 0, err
		}
		rev = rv
	}
	resp, err := c.reg.client().Get(ctx, c.reg.prefix+policyKey, clientv3.WithRev(rev))
	if err != nil {
		return 0, fmt.Errorf("registry: get policy: %w", err)
	}
	for _, kv := range resp.Kvs {
		c.decode(string(kv.Key), kv.Value, kv.ModRevision, &p, devs, now)
	}
	for id := range p.execs {
		p.execs[id] = movedAway(p.execs[id], moved[id])
	}
	c.mu.Lock()
	c.assignments, c.history, c.moved = devs.assigns, devs.history, moved
	c.mu.Unlock()
	c.snap.Store(newSnapshot(rev, p))
	c.rev.Store(rev)
	return rev, nil
}

// noteMoved files a replacement notice, "<executor>/<device>" created at
// rev (0: deleted).
func noteMoved(moved map[string]map[string]int64, id string, rev int64) {
	exec, dev, ok := strings.Cut(id, "/")
	if !ok {
		return
	}
	if rev == 0 {
		delete(moved[exec], dev)
		if len(moved[exec]) == 0 {
			delete(moved, exec)
		}
		return
	}
	if moved[exec] == nil {
		moved[exec] = map[string]int64{}
	}
	moved[exec][dev] = rev
}

// movedAway returns e with MovedAway set from the notices naming it (those
// newer than its record), and Connections and Load lowered by as many
// devices from what the record reports.
func movedAway(e Executor, notes map[string]int64) Executor {
	n := 0
	for _, rev := range notes {
		if rev > e.Revision {
			n++
		}
	}
	if n == e.MovedAway {
		return e
	}
	// Back to what the record reports, then down by n.
	conns, load := e.Connections+e.MovedAway, e.Load+e.MovedLoad
	live, liveLoad := max(conns-n, 0), load
	if conns > 0 {
		liveLoad = load * float64(live) / float64(conns)
	}
	e.Connections, e.Load, e.MovedAway, e.MovedLoad = live, liveLoad, conns-live, load-liveLoad
	return e
}

// kind tells which part of the keyspace a key belongs to, and its id.
func (c *Cache) kind(key string) (dir, id string) {
	rest := strings.TrimPrefix(key, c.reg.prefix)
	if rest == policyKey {
		return policyKey, ""
	}
	for _, d := range cachedDirs {
		if strings.HasPrefix(rest, d) {
			return d, strings.TrimPrefix(rest, d)
		}
	}
	return "", ""
}

// decode files one key into p or devs (value nil: a deletion). Values
// that do not decode are logged and skipped: one bad key must not blind the
// control plane. A skipped key is removed, so that a bad value replacing a
// good one reads as absent, as it does after a fresh load.
func (c *Cache) decode(key string, value []byte, modRev int64, p *parts, devs devices, now time.Time) {
	dir, id := c.kind(key)
	var err error
	switch dir {
	case groupsDir:
		err = decodeInto(p.groups, id, value, nil)
	case executorsDir:
		err = decodeInto(p.execs, id, value, func(e *Executor) { e.ObservedAt, e.Revision = now, modRev })
	case tenantsDir:
		err = decodeInto(p.tenants, id, value, nil)
	case assignmentsDir:
		err = decodeInto(devs.assigns, id, value, nil)
	case historyDir:
		err = decodeInto(devs.history, id, value, nil)
	case policyKey:
		p.policy = nil
		if value != nil {
			var sp StoredPolicy
			if err = json.Unmarshal(value, &sp); err == nil {
				sp.Version = modRev
				p.policy = &sp
			}
		}
	}
	if err != nil {
		c.log.Warn("registry: skipping undecodable value", "key", key, "err", err)
	}
}

// decodeInto sets m[id] from a JSON value, or deletes it when value is nil
// or does not decode.
func decodeInto[T any](m map[string]T, id string, value []byte, fix func(*T)) error {
	if value == nil {
		delete(m, id)
		return nil
	}
	var v T
	if err := json.Unmarshal(value, &v); err != nil {
		delete(m, id)
		return err
	}
	if fix != nil {
		fix(&v)
	}
	m[id] = v
	return nil
}

// watch applies changes from rev+1 until a watch fails. It watches each
// cached directory and the policy key, not the whole prefix, so presence
// and queue traffic never reaches control planes' caches.
func (c *Cache) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	cli := c.reg.client()
	chans := []clientv3.WatchChan{cli.Watch(wctx, c.reg.prefix+policyKey, clientv3.WithRev(rev+1))}
	for _, dir := range cachedDirs {
		chans = append(chans, cli.Watch(wctx, c.reg.prefix+dir, clientv3.WithPrefix(), clientv3.WithRev(rev+1)))
	}
	merged := make(chan clientv3.WatchResponse)
	var wg sync.WaitGroup
	for _, ch := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for resp := range ch {
				select {
				case merged <- resp:
				case <-wctx.Done():
					return
				}
			}
			// A closed channel ends the whole watch.
			select {
			case merged <- clientv3.WatchResponse{Canceled: true}:
			case <-wctx.Done():
			}
		}()
	}
	defer wg.Wait()
	defer cancel()
	// Progress requests make etcd tell the watchers its revision when
	// nothing they watch changed, so Revision follows the store; and a
	// watch that hears nothing, not even that, is dead: the client retries
	// a lost connection forever without a word, so this is how the cache
	// learns that etcd is gone.
	progress := time.NewTicker(c.progress)
	defer progress.Stop()
	heard := time.Now()
	for {
		select {
		case <-progress.C:
			if silent := time.Since(heard); silent > staleProgress*c.progress {
				return fmt.Errorf("%w: nothing heard for %v", errWatchStale, silent.Round(time.Millisecond))
			}
			pctx, pcancel := context.WithTimeout(wctx, c.progress)
			// A failure shows as silence.
			_ = cli.RequestProgress(pctx)
			pcancel()
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errWatchClosed
		case resp := <-merged:
			if err := resp.Err(); err != nil {
				return err
			}
			if resp.Canceled {
				return errWatchClosed
			}
			heard = time.Now()
			c.apply(resp.Header.Revision, resp.Events)
			if r := resp.Header.Revision; r > c.rev.Load() {
				c.rev.Store(r)
			}
		}
	}
}

// DefaultProgressInterval is how often the cache's watch asks etcd for its
// revision.
const DefaultProgressInterval = 2 * time.Second

// staleProgress is how many progress intervals without any watch response
// make the watch dead.
const staleProgress = 5

// errWatchStale reports a watch that heard nothing, not even progress.
var errWatchStale = errors.New("registry: watch silent")

// errWatchClosed reports a watch channel closed without an error.
var errWatchClosed = errors.New("registry: watch closed")

// apply folds one watch response into the cache, publishing at most one new
// snapshot for it.
func (c *Cache) apply(rev int64, events []*clientv3.Event) {
	old := c.snap.Load()
	p := parts{groups: old.Groups, execs: old.Executors, tenants: old.Tenants, policy: old.Policy}
	changed := false
	now := c.now()
	var hook []Assignment
	var touched []string
	c.mu.RLock()
	subs := c.onAssignment
	c.mu.RUnlock()
	for _, ev := range events {
		key := string(ev.Kv.Key)
		value := ev.Kv.Value
		if ev.Type == mvccpb.DELETE {
			value = nil
		}
		dir, _ := c.kind(key)
		switch dir {
		case "":
			continue
		case replacedDir:
			_, id := c.kind(key)
			rev := ev.Kv.CreateRevision
			if value == nil {
				rev = 0
			}
			c.mu.Lock()
			noteMoved(c.moved, id, rev)
			c.mu.Unlock()
			if exec, _, ok := strings.Cut(id, "/"); ok {
				touched = append(touched, exec)
			}
			continue
		case historyDir:
			c.mu.Lock()
			c.decode(key, value, ev.Kv.ModRevision, &p, devices{history: c.history}, now)
			c.mu.Unlock()
			continue
		case assignmentsDir:
			c.mu.Lock()
			c.decode(key, value, ev.Kv.ModRevision, &p, devices{assigns: c.assignments}, now)
			if value != nil && len(subs) > 0 {
				if _, id := c.kind(key); id != "" {
					hook = append(hook, c.assignments[id])
				}
			}
			c.mu.Unlock()
			continue
		}
		if !changed {
			// Copy on first write: the published snapshot stays immutable.
			p = parts{groups: maps.Clone(old.Groups), execs: maps.Clone(old.Executors), tenants: maps.Clone(old.Tenants), policy: old.Policy}
			changed = true
		}
		c.decode(key, value, ev.Kv.ModRevision, &p, devices{}, now)
		if dir == executorsDir {
			_, id := c.kind(key)
			touched = append(touched, id)
		}
	}
	// Executors whose record or notices changed: their counts, less the
	// devices seen elsewhere since their record.
	if len(touched) > 0 {
		c.mu.RLock()
		for _, id := range touched {
			e, ok := p.execs[id]
			if !ok {
				continue
			}
			if e2 := movedAway(e, c.moved[id]); e2.MovedAway != e.MovedAway || e2.Connections != e.Connections {
				if !changed {
					p = parts{groups: maps.Clone(old.Groups), execs: maps.Clone(old.Executors), tenants: maps.Clone(old.Tenants), policy: old.Policy}
					changed = true
				}
				p.execs[id] = e2
			}
		}
		c.mu.RUnlock()
	}
	if changed {
		c.snap.Store(newSnapshot(rev, p))
	}
	for _, a := range hook {
		if a.DeviceID != "" {
			for _, fn := range subs {
				fn(a)
			}
		}
	}
}

// OnAssignment subscribes fn to the assignment records the watch delivers
// (not those of a full load): every subscriber is called with each record,
// in the order they subscribed, from the watch goroutine, once the whole
// watch response is in the cache. fn must not block. OnAssignment is safe to
// call at any time, also while Run runs and from a subscriber: fn then sees
// the records of the watch responses applied after it subscribed; subscribe
// before Run to see them all.
func (c *Cache) OnAssignment(fn func(Assignment)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onAssignment = append(slices.Clip(c.onAssignment), fn)
}
