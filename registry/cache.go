package registry

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Snapshot is an immutable view of groups and executors at one etcd
// revision. Never modify what it holds.
type Snapshot struct {
	// Revision is the etcd revision the snapshot reflects.
	Revision int64
	// Groups by id.
	Groups map[string]Group
	// Executors by id.
	Executors map[string]Executor
	byGroup   map[string][]Executor
}

// GroupExecutors returns the executors registered for group, sorted by id.
func (s *Snapshot) GroupExecutors(group string) []Executor { return s.byGroup[group] }

// SortedGroups returns the groups sorted by id.
func (s *Snapshot) SortedGroups() []Group {
	out := slices.Collect(maps.Values(s.Groups))
	slices.SortFunc(out, func(a, b Group) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func newSnapshot(rev int64, groups map[string]Group, execs map[string]Executor) *Snapshot {
	by := make(map[string][]Executor)
	for _, e := range execs {
		by[e.GroupID] = append(by[e.GroupID], e)
	}
	for _, es := range by {
		slices.SortFunc(es, func(a, b Executor) int { return strings.Compare(a.ID, b.ID) })
	}
	return &Snapshot{Revision: rev, Groups: groups, Executors: execs, byGroup: by}
}

// Cache is a watch-fed, in-memory copy of the registry: it lists everything
// at revision R, watches from R+1, and when the watch fails or its revision
// is compacted it marks itself not ready and lists again. Reads never touch
// etcd.
type Cache struct {
	reg *Registry
	log *slog.Logger
	now func() time.Time

	snap  atomic.Pointer[Snapshot]
	ready atomic.Bool
	first chan struct{}
	once  sync.Once

	mu          sync.RWMutex
	assignments map[string]Assignment

	relists atomic.Int64
}

// NewCache returns a cache of r. It does no I/O; Run does.
func (r *Registry) NewCache(log *slog.Logger) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cache{reg: r, log: log, now: time.Now, first: make(chan struct{}), assignments: map[string]Assignment{}}
	c.snap.Store(newSnapshot(0, map[string]Group{}, map[string]Executor{}))
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

// AssignmentCount returns how many assignment records are cached.
func (c *Cache) AssignmentCount() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.assignments)
}

// Ready reports whether the cache is in sync with etcd (loaded and watching).
func (c *Cache) Ready() bool { return c.ready.Load() }

// Relists counts the full reloads after the first one.
func (c *Cache) Relists() int64 { return c.relists.Load() }

// WaitReady blocks until the first load completed or ctx is done.
func (c *Cache) WaitReady(ctx context.Context) error {
	select {
	case <-c.first:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run keeps the cache in sync until ctx is cancelled. It returns nil then;
// etcd errors are retried, never returned.
func (c *Cache) Run(ctx context.Context) error {
	delay := 100 * time.Millisecond
	for loaded := false; ; {
		rev, err := c.load(ctx)
		if err == nil {
			// A failed first attempt makes the next one no relist.
			if loaded {
				c.relists.Add(1)
			}
			loaded = true
			c.ready.Store(true)
			c.once.Do(func() { close(c.first) })
			delay = 100 * time.Millisecond
			err = c.watch(ctx, rev)
		}
		c.ready.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("registry cache out of sync; listing again", "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// load lists the whole prefix at one revision and replaces the cache's
// contents.
func (c *Cache) load(ctx context.Context) (int64, error) {
	groups := map[string]Group{}
	execs := map[string]Executor{}
	assigns := map[string]Assignment{}
	now := c.now()
	rev, err := c.reg.listRange(ctx, c.reg.prefix+"/", func(key string, value []byte) error {
		c.decode(key, value, groups, execs, assigns, now)
		return nil
	})
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.assignments = assigns
	c.mu.Unlock()
	c.snap.Store(newSnapshot(rev, groups, execs))
	return rev, nil
}

// decode files one key into the maps. Values that do not decode are logged
// and skipped: one bad key must not blind the control plane. A skipped key
// is removed, so that a bad value replacing a good one reads as absent, as
// it does after a fresh load.
func (c *Cache) decode(key string, value []byte, groups map[string]Group, execs map[string]Executor, assigns map[string]Assignment, now time.Time) {
	rest := strings.TrimPrefix(key, c.reg.prefix)
	var err error
	switch {
	case strings.HasPrefix(rest, groupsDir):
		id := strings.TrimPrefix(rest, groupsDir)
		var g Group
		if err = json.Unmarshal(value, &g); err == nil {
			groups[id] = g
		} else {
			delete(groups, id)
		}
	case strings.HasPrefix(rest, executorsDir):
		id := strings.TrimPrefix(rest, executorsDir)
		var e Executor
		if err = json.Unmarshal(value, &e); err == nil {
			e.ObservedAt = now
			execs[id] = e
		} else {
			delete(execs, id)
		}
	case strings.HasPrefix(rest, assignmentsDir):
		id := strings.TrimPrefix(rest, assignmentsDir)
		var a Assignment
		if err = json.Unmarshal(value, &a); err == nil {
			assigns[id] = a
		} else {
			delete(assigns, id)
		}
	}
	if err != nil {
		c.log.Warn("registry: skipping undecodable value", "key", key, "err", err)
	}
}

// watch applies changes from rev+1 until the watch fails.
func (c *Cache) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := c.reg.client().Watch(wctx, c.reg.prefix+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return err
		}
		c.apply(resp.Header.Revision, resp.Events)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errWatchClosed
}

// errWatchClosed reports a watch channel closed without an error.
var errWatchClosed = errors.New("registry: watch closed")

// apply folds one watch response into the cache, publishing at most one new
// snapshot for it.
func (c *Cache) apply(rev int64, events []*clientv3.Event) {
	old := c.snap.Load()
	var groups map[string]Group
	var execs map[string]Executor
	now := c.now()
	for _, ev := range events {
		rest := strings.TrimPrefix(string(ev.Kv.Key), c.reg.prefix)
		switch {
		case strings.HasPrefix(rest, groupsDir):
			if groups == nil {
				groups = maps.Clone(old.Groups)
			}
			if ev.Type == mvccpb.DELETE {
				delete(groups, strings.TrimPrefix(rest, groupsDir))
				continue
			}
			c.decode(string(ev.Kv.Key), ev.Kv.Value, groups, nil, nil, now)
		case strings.HasPrefix(rest, executorsDir):
			if execs == nil {
				execs = maps.Clone(old.Executors)
			}
			if ev.Type == mvccpb.DELETE {
				delete(execs, strings.TrimPrefix(rest, executorsDir))
				continue
			}
			c.decode(string(ev.Kv.Key), ev.Kv.Value, nil, execs, nil, now)
		case strings.HasPrefix(rest, assignmentsDir):
			c.mu.Lock()
			if ev.Type == mvccpb.DELETE {
				delete(c.assignments, strings.TrimPrefix(rest, assignmentsDir))
			} else {
				c.decode(string(ev.Kv.Key), ev.Kv.Value, nil, nil, c.assignments, now)
			}
			c.mu.Unlock()
		}
	}
	if groups == nil && execs == nil {
		return
	}
	if groups == nil {
		groups = old.Groups
	}
	if execs == nil {
		execs = old.Executors
	}
	c.snap.Store(newSnapshot(rev, groups, execs))
}

// NewSnapshot builds a snapshot from lists, for tests and tools that make
// one without a cache.
func NewSnapshot(rev int64, groups []Group, execs []Executor) *Snapshot {
	gm := make(map[string]Group, len(groups))
	for _, g := range groups {
		gm[g.ID] = g
	}
	em := make(map[string]Executor, len(execs))
	for _, e := range execs {
		em[e.ID] = e
	}
	return newSnapshot(rev, gm, em)
}
