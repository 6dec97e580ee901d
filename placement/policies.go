package placement

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/berthproject/berth/fleet"
	"github.com/berthproject/berth/policy"
)

// Policies is the placement policy in force, compiled once per stored
// version. A stored document that does not compile (it was validated
// before it was stored, so only a hand edit of etcd does that) is logged
// once and the last good policy stays in force, under the new version
// number, so that it is not compiled again on every call. Before any
// policy is stored, policy.Default() is in force. It is safe for
// concurrent use; the zero value is not: use NewPolicies.
type Policies struct {
	log *slog.Logger
	cur atomic.Pointer[policy.Compiled]
	// mu serializes compilations, so that each version is compiled, and
	// its failure logged, once.
	mu sync.Mutex
}

// NewPolicies returns a cache with policy.Default() in force, logging to
// log (nil: nowhere).
func NewPolicies(log *slog.Logger) *Policies {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Policies{log: log}
	p.cur.Store(policy.Default())
	return p
}

// Current returns the policy in force, without looking at a snapshot.
func (p *Policies) Current() *policy.Compiled { return p.cur.Load() }

// For returns the compiled policy of snap: the one in force when snap holds
// no policy or the same version, else snap's, compiled now (once).
func (p *Policies) For(snap *fleet.Snapshot) *policy.Compiled {
	cur := p.cur.Load()
	if snap.Policy == nil || snap.Policy.Version == cur.Version() {
		return cur
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cur = p.cur.Load()
	if snap.Policy.Version == cur.Version() {
		return cur
	}
	c, err := CompileStored(*snap.Policy)
	if err != nil {
		p.log.Error("stored placement policy does not compile; keeping the previous one", "version", snap.Policy.Version, "in_force", cur.Version(), "err", err)
		c = cur.WithVersion(snap.Policy.Version)
	} else {
		p.log.Info("placement policy in force", "version", c.Version())
	}
	p.cur.Store(c)
	return c
}

// CompileStored parses and compiles a stored policy document, with the
// stored version.
func CompileStored(sp fleet.StoredPolicy) (*policy.Compiled, error) {
	pol, err := policy.Parse(sp.Document)
	if err != nil {
		return nil, err
	}
	c, err := policy.Compile(pol)
	if err != nil {
		return nil, err
	}
	return c.WithVersion(sp.Version), nil
}
