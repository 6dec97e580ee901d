package messaging

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/execclient"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/registry"
)

// Routing. A device's presence record (written by the executor that holds
// its stream, under that executor's lease) names the executor's address
// (its internal address, when it serves control planes on a listener of
// their own: Presence.ControlAddress), so a control plane reaches the
// device in one hop: it reads the record and calls that executor. The records a replica read are kept in a routeCache
// for PresenceCacheTTL after they were read or last proved right by an
// acknowledged delivery, so a device that is sent to often costs no read
// of etcd per message. A cached route can be stale (the device left, or moved
// to another executor): the executor then answers NOT_FOUND, or cannot be
// reached, and the replica forgets the route, reads the record again and,
// when it names another stream, tries once more there. The same holds for a
// record read just now: the registry keeps one live session per device
// (the newest presence write wins and the older session is ended), so a
// session that turns out closed was replaced or ended, and the record read
// again names the newer one, or none.

// routeShards splits the cache so that concurrent Sends rarely share a
// lock.
const routeShards = 64

// routeCache remembers the presence of devices recently looked up. It is
// bounded: past its size an arbitrary entry of the shard makes room.
type routeCache struct {
	ttl    time.Duration
	now    func() time.Time
	seed   maphash.Seed
	max    int // entries per shard
	shards [routeShards]routeShard

	// execs interns the executor fields shared by the routes of every
	// device of an executor.
	emu   sync.Mutex
	execs map[execKey]*execKey
}

type routeShard struct {
	mu sync.Mutex
	m  map[string]route
}

// execKey is an executor's identity and addresses.
type execKey struct{ id, group, address, internal string }

// route is one cached presence.
type route struct {
	exec    *execKey
	session string
	since   time.Time
	at      int64 // when it was read, Unix nanoseconds
}

// maxInternedExecutors bounds the interned executors; past it the table
// starts again (the routes keep their pointers).
const maxInternedExecutors = 1 << 14

func newRouteCache(size int, ttl time.Duration, now func() time.Time) *routeCache {
	c := &routeCache{ttl: ttl, now: now, seed: maphash.MakeSeed(), max: max(size/routeShards, 1), execs: map[execKey]*execKey{}}
	for i := range c.shards {
		c.shards[i].m = map[string]route{}
	}
	return c
}

func (c *routeCache) shard(device string) *routeShard {
	return &c.shards[maphash.String(c.seed, device)%routeShards]
}

// lookup returns the device's cached presence, fresh or not (where it was
// last seen, until a delivery there failed), and whether it is fresh.
func (c *routeCache) lookup(device string) (p registry.Presence, fresh, ok bool) {
	if c == nil {
		return registry.Presence{}, false, false
	}
	sh := c.shard(device)
	sh.mu.Lock()
	r, ok := sh.m[device]
	sh.mu.Unlock()
	if !ok {
		return registry.Presence{}, false, false
	}
	fresh = c.now().UnixNano()-r.at <= int64(c.ttl)
	return registry.Presence{DeviceID: device, ExecutorID: r.exec.id, GroupID: r.exec.group, Address: r.exec.address, InternalAddress: r.exec.internal, SessionID: r.session, Since: r.since}, fresh, true
}

// put caches p, read just now.
func (c *routeCache) put(p registry.Presence) {
	if c == nil || p.Address == "" {
		return
	}
	r := route{exec: c.intern(execKey{p.ExecutorID, p.GroupID, p.Address, p.InternalAddress}), session: p.SessionID, since: p.Since, at: c.now().UnixNano()}
	sh := c.shard(p.DeviceID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[p.DeviceID]; !ok && len(sh.m) >= c.max {
		for k := range sh.m {
			delete(sh.m, k)
			break
		}
	}
	sh.m[p.DeviceID] = r
}

// touch marks the device's route fresh if it still names p's stream: a
// delivery there was just acknowledged, which proves it.
func (c *routeCache) touch(p registry.Presence) {
	if c == nil {
		return
	}
	sh := c.shard(p.DeviceID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if r, ok := sh.m[p.DeviceID]; ok && r.session == p.SessionID && r.exec.address == p.Address {
		r.at = c.now().UnixNano()
		sh.m[p.DeviceID] = r
	}
}

// forget drops the device's route if it still names p's stream.
func (c *routeCache) forget(p registry.Presence) {
	if c == nil {
		return
	}
	sh := c.shard(p.DeviceID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if r, ok := sh.m[p.DeviceID]; ok && r.session == p.SessionID && r.exec.address == p.Address {
		delete(sh.m, p.DeviceID)
	}
}

func (c *routeCache) intern(k execKey) *execKey {
	c.emu.Lock()
	defer c.emu.Unlock()
	if e, ok := c.execs[k]; ok {
		return e
	}
	if len(c.execs) >= maxInternedExecutors {
		c.execs = map[execKey]*execKey{}
	}
	e := &k
	c.execs[k] = e
	return e
}

// route finds where dev is connected: from the cache when allowed and
// fresh, else from the registry (and then cached). online is false when
// the device holds no stream; cached says the answer came from the cache.
//
// When the cache may be used and it knows where the device last was (a
// route past its TTL), the registry's read is bounded by
// PresenceReadTimeout, and when the registry cannot answer (etcd
// unreachable) or has no record (one lost with its executor's lease while
// etcd was away, although the device never left), the last known route is
// returned as cached: the delivery tries it, the executor there knows its
// own streams, and a failure there drops it and reads the record again
// (deliverAt). So a device that stayed connected is not reported "not
// connected" because etcd lost or cannot serve its record.
func (m *Server) route(ctx context.Context, dev string, useCache bool) (p registry.Presence, online, cached bool, err error) {
	var last registry.Presence
	var hasLast bool
	if useCache {
		var fresh bool
		if last, fresh, hasLast = m.routes.lookup(dev); hasLast && fresh {
			return last, true, true, nil
		}
	}
	rctx := ctx
	if hasLast {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, m.cfg.PresenceReadTimeout)
		defer cancel()
	}
	p, online, err = m.presence(rctx, dev)
	switch {
	case err == nil && online:
		m.routes.put(p)
		return p, true, false, nil
	case hasLast && ctx.Err() == nil:
		return last, true, true, nil
	}
	return p, online, false, err
}

// deliverAt hands msg to the device at p, found by route (cached says it
// came from the cache), and waits for the executor's answer, within ctx
// (def when ctx has no deadline). It returns the presence it delivered to,
// or online false when the device turned out not to be connected. A route
// that fails because the device is not (or no longer) there is read again
// from the registry, and the delivery tried once more when the record
// names another stream: a cached route may be old, and even a record read
// just now may name a session that a newer one replaced since (its
// executor is ending it with Goodbye REPLACED; the newer session's record
// is in etcd already).
func (m *Server) deliverAt(ctx context.Context, p registry.Presence, cached bool, msg *executorv1.Message, def time.Duration) (*executorv1.DeliverResponse, registry.Presence, bool, error) {
	resp, err := m.deliver(ctx, p, msg, def)
	if err == nil {
		if cached {
			m.routes.touch(p)
		}
		return resp, p, true, nil
	}
	if !staleRoute(err) {
		if status.Code(err) == codes.DeadlineExceeded {
			// The device may have moved while an old stream lingers
			// there: read the record next time.
			m.routes.forget(p)
		}
		return nil, p, true, err
	}
	m.routes.forget(p)
	if ctx.Err() != nil {
		return nil, p, true, err
	}
	p2, online, _, rerr := m.route(ctx, p.DeviceID, false)
	switch {
	case rerr != nil:
		// Report the delivery's failure, not the registry's.
		return nil, p, true, err
	case !online:
		return nil, p2, false, nil
	case p2.Address == p.Address && p2.SessionID == p.SessionID:
		return nil, p, true, err
	}
	resp, err = m.deliver(ctx, p2, msg, def)
	if err != nil && staleRoute(err) {
		m.routes.forget(p2)
	}
	return resp, p2, true, err
}

// staleRoute reports whether a delivery failed because the device is not
// where the route said: the executor does not hold it (NOT_FOUND), its
// stream ended before the Ack, or the executor cannot be reached.
func staleRoute(err error) bool {
	if errors.Is(err, execclient.ErrClosed) {
		return false
	}
	st, ok := status.FromError(err)
	if !ok {
		return !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
	}
	switch st.Code() {
	case codes.NotFound, codes.Unavailable:
		return true
	}
	return false
}
