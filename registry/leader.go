package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// leadersDir holds one election per name (etcd's concurrency package
// layout: a key per candidate under the election's prefix, the lowest
// creation revision leads).
const leadersDir = "/leaders/"

// ErrNotLeader means a fenced write was refused: the leadership it was
// made under is over (its key is gone or was replaced).
var ErrNotLeader = errors.New("registry: not the leader any more")

// Leadership is an election won. Its key and that key's creation revision
// fence every write made on its behalf: a write commits only while the key
// still exists with that revision, so a leader that lost its lease (a
// pause, a partition) cannot overwrite the work of its successor even if it
// has not noticed yet.
type Leadership struct {
	reg      *Registry
	session  *concurrency.Session
	election *concurrency.Election
	id       string
	key      string
	rev      int64
}

// Campaign blocks until id leads the election called name, or ctx is done.
// The leadership lives under a lease of ttl (whole seconds, at least 1s)
// kept alive in the background: if this process stops or loses etcd for
// longer, another candidate leads. Close it to step down.
func (r *Registry) Campaign(ctx context.Context, name, id string, ttl time.Duration) (*Leadership, error) {
	if !ValidID(name) || !ValidID(id) {
		return nil, fmt.Errorf("%w: election %q, candidate %q", ErrInvalid, name, id)
	}
	secs := max(int(ttl/time.Second), 1)
	// The session outlives ctx: Close revokes it.
	s, err := concurrency.NewSession(r.cli, concurrency.WithTTL(secs), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, fmt.Errorf("registry: election session: %w", err)
	}
	e := concurrency.NewElection(s, r.prefix+leadersDir+name)
	if err := e.Campaign(ctx, id); err != nil {
		closeSession(s)
		return nil, fmt.Errorf("registry: campaign for %s: %w", name, err)
	}
	return &Leadership{reg: r, session: s, election: e, id: id, key: e.Key(), rev: e.Rev()}, nil
}

// closeSession revokes s's lease, bounded.
func closeSession(s *concurrency.Session) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.Orphan()
	_, _ = s.Client().Revoke(ctx, s.Lease())
}

// ID is the leader's id.
func (l *Leadership) ID() string { return l.id }

// Rev is the creation revision of the leader's key: a term number that
// grows with every new leadership.
func (l *Leadership) Rev() int64 { return l.rev }

// Done is closed when the leadership's lease is lost.
func (l *Leadership) Done() <-chan struct{} { return l.session.Done() }

// Close steps down: it deletes the leader's key and revokes its lease, so
// that the next candidate leads at once. It is idempotent.
func (l *Leadership) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = l.election.Resign(ctx)
	closeSession(l.session)
}

// fence is the condition every write of the leader carries.
func (l *Leadership) fence() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)
}

// fenced commits ops if the leadership still holds, else ErrNotLeader.
func (l *Leadership) fenced(ctx context.Context, ops ...clientv3.Op) error {
	resp, err := l.reg.cli.Txn(ctx).If(l.fence()).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("registry: fenced write: %w", err)
	}
	if !resp.Succeeded {
		return ErrNotLeader
	}
	return nil
}

// Leader returns the id of the current leader of the election called
// name; ErrNotFound when nobody leads.
func (r *Registry) Leader(ctx context.Context, name string) (string, error) {
	resp, err := r.cli.Get(ctx, r.prefix+leadersDir+name+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("registry: leader of %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("%w: leader of %s", ErrNotFound, name)
	}
	return string(resp.Kvs[0].Value), nil
}
