package rebalance

import (
	"sync"
	"time"

	"github.com/berthproject/berth/fleet"
	"github.com/berthproject/berth/registry"
)

// countGrace is how long after a move is confirmed (its presence seen) an
// executor's count observed by the cache may still not include it: the
// executor writes presence and its record in the same moments, and both
// are watched. Longer would count a device twice (in the count and as
// pending) and steer moves away from the groups that need them.
const countGrace = 300 * time.Millisecond

// flight is one move under way.
type flight struct {
	device          string
	from, fromExec  string
	to, toExec      string
	reason          Reason
	w               float64
	at, confirmedAt time.Time
}

// term is what one leadership knows: the moves it made, and what the
// presence watch told it since. It is safe for concurrent use: the watch
// goroutine reports presence changes while the leader loop plans.
type term struct {
	mu sync.Mutex
	// flights are the moves under way, by device; recent keeps confirmed
	// ones until executor counts surely include them.
	flights map[string]*flight
	recent  []*flight
	// movedAt remembers when this leadership moved each device.
	movedAt map[string]time.Time
	// moves and unplanned count moves made and connects not caused by a
	// move, per second.
	moves, unplanned window
	// labels caches the label the policy gives each device (see label).
	labels map[string]cachedLabel
	// Progress of the current (or last) migration.
	started, finished time.Time
	moved, failed     int64
}

func newTerm() *term {
	return &term{flights: map[string]*flight{}, movedAt: map[string]time.Time{}, labels: map[string]cachedLabel{}}
}

// observe is the presence view's callback. earlier reports whether p
// completes a move a previous leader made.
func (t *term) observe(now time.Time, id string, p *registry.Presence, earlier func(*registry.Presence) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.flights[id]
	if f == nil {
		switch {
		case p == nil:
		case earlier(p):
			t.moved++
		default:
			t.unplanned.add(now, 1)
		}
		return
	}
	if p == nil || p.ExecutorID == f.fromExec {
		return
	}
	f.confirmedAt = now
	delete(t.flights, id)
	t.recent = append(t.recent, f)
	t.moved++
}

// start records a move just asked for.
func (t *term) start(f *flight) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.flights[f.device] = f
	t.movedAt[f.device] = f.at
	t.moves.add(f.at, 1)
}

// abort forgets a move whose call failed, counting it failed.
func (t *term) abort(device string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.flights, device)
	t.failed++
}

// expire counts the moves older than timeout as failed, and forgets
// confirmed ones old enough.
func (t *term) expire(now time.Time, timeout time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, f := range t.flights {
		if now.Sub(f.at) >= timeout {
			delete(t.flights, id)
			t.failed++
		}
	}
	keep := t.recent[:0]
	for _, f := range t.recent {
		if now.Sub(f.confirmedAt) < 10*countGrace {
			keep = append(keep, f)
		}
	}
	clear(t.recent[len(keep):])
	t.recent = keep
	for id, c := range t.labels {
		if now.Sub(c.at) >= labelTTL {
			delete(t.labels, id)
		}
	}
	for id, at := range t.movedAt {
		if now.Sub(at) > 24*time.Hour {
			delete(t.movedAt, id)
		}
	}
}

// inFlight counts the moves under way, and those not for balance.
func (t *term) inFlight() (all, mandatory int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range t.flights {
		if f.reason != ReasonBalance {
			mandatory++
		}
	}
	return len(t.flights), mandatory
}

// flightTo returns the group a device's move takes it to ("" if none).
func (t *term) flightTo(id string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.flights[id]; f != nil {
		return f.to
	}
	return ""
}

// lastMoved returns when this leadership moved the device (zero: never).
func (t *term) lastMoved(id string) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.movedAt[id]
}

// rates returns moves per second over the last 10s and unplanned connects
// per second over the last 5s.
func (t *term) rates(now time.Time) (moves, unplanned float64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return float64(t.moves.sum(now, 10)) / 10, float64(t.unplanned.sum(now, 5)) / 5
}

// pending returns the Pending of a decision for a device of weight w on
// executor exec: moves not yet in executor counts count where they go (and
// no longer where they come from), and the device itself is taken out of
// its executor.
func (t *term) pending(exec string, w float64) *pendingView {
	t.mu.Lock()
	defer t.mu.Unlock()
	pv := &pendingView{self: exec, w: w}
	for _, f := range t.flights {
		pv.fs = append(pv.fs, *f)
	}
	for _, f := range t.recent {
		pv.fs = append(pv.fs, *f)
	}
	return pv
}

// pendingView implements placement.Pending over a copy of the moves.
type pendingView struct {
	fs   []flight
	self string
	w    float64
}

// Pending implements placement.Pending.
func (p *pendingView) Pending(e *fleet.Executor) float64 {
	exec, countedAt := e.ID, e.ObservedAt
	var n float64
	if exec == p.self {
		n -= p.w
	}
	for i := range p.fs {
		f := &p.fs[i]
		// Counted once the executor's count was observed well after the
		// device arrived.
		if !f.confirmedAt.IsZero() && countedAt.After(f.confirmedAt.Add(countGrace)) {
			continue
		}
		if f.toExec == exec {
			n += f.w
		}
		if f.fromExec == exec {
			n -= f.w
		}
	}
	return n
}

// GroupPending implements placement.Pending: moves are counted per
// executor.
func (p *pendingView) GroupPending(string, time.Time) float64 { return 0 }

// window counts events per second over the last 16 seconds.
type window struct {
	secs   [16]int64
	counts [16]int
}

func (w *window) add(now time.Time, n int) {
	s := now.Unix()
	i := s % int64(len(w.secs))
	if w.secs[i] != s {
		w.secs[i], w.counts[i] = s, 0
	}
	w.counts[i] += n
}

// sum counts the events of the last n whole seconds before now, and of
// now's second.
func (w *window) sum(now time.Time, n int) int {
	s := now.Unix()
	total := 0
	for i := range w.secs {
		if w.secs[i] > s-int64(n) && w.secs[i] <= s {
			total += w.counts[i]
		}
	}
	return total
}

// labelTTL bounds how long a device's label is reused: its tenant's
// attributes and its traffic history, which rules may read, change without
// its assignment record changing.
const labelTTL = 30 * time.Second

// cachedLabel is a device's label under one policy version and record.
type cachedLabel struct {
	version    int64
	assignedAt time.Time
	at         time.Time
	label      string
}

// label returns the label the policy of version gives the device whose
// record was written at assignedAt, computing it with compute when it is
// not cached or older than labelTTL. The rules are most of a plan's cost.
func (t *term) label(id string, version int64, assignedAt, now time.Time, compute func() string) string {
	t.mu.Lock()
	c, ok := t.labels[id]
	t.mu.Unlock()
	if ok && c.version == version && c.assignedAt.Equal(assignedAt) && now.Sub(c.at) < labelTTL {
		return c.label
	}
	l := compute()
	t.mu.Lock()
	t.labels[id] = cachedLabel{version: version, assignedAt: assignedAt, at: now, label: l}
	t.mu.Unlock()
	return l
}
