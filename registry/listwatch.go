package registry

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/berthproject/berth/internal/retry"
)

// syncState is what a watch-fed view shares with its list-watch loop:
// whether it is in sync now, and whether it ever was.
type syncState struct {
	ready atomic.Bool
	first chan struct{} // closed after the first successful listing; made by the view's constructor
	once  sync.Once
}

// Ready reports whether the view is in sync (listed and watching).
func (s *syncState) Ready() bool { return s.ready.Load() }

// Loaded reports whether the first listing completed: the view holds data,
// even if it is relisting now.
func (s *syncState) Loaded() bool {
	select {
	case <-s.first:
		return true
	default:
		return false
	}
}

// WaitReady blocks until the first listing completed or ctx is done.
func (s *syncState) WaitReady(ctx context.Context) error {
	select {
	case <-s.first:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// relistPolicy is the backoff between failed rounds of a list-watch loop.
var relistPolicy = retry.Default()

// listWatch lists (load returns the revision it read at) and then watches
// from that revision until the watch fails, again and again, with a
// jittered, growing delay between failed rounds (reset by a successful
// listing), until ctx is cancelled; it then returns nil. relisted is
// called after every successful listing but the first. what names the view
// in the log: the first failure of an outage is a warning, the retries
// debug, and the recovery a warning again.
func listWatch(ctx context.Context, s *syncState, log *slog.Logger, what string,
	load func(context.Context) (int64, error), watch func(context.Context, int64) error, relisted func()) error {
	loop := retry.New(relistPolicy, log, what+" out of sync")
	for loaded := false; ; {
		rev, err := load(ctx)
		if err == nil {
			// A failed first attempt makes the next one no relist.
			if loaded && relisted != nil {
				relisted()
			}
			loaded = true
			s.ready.Store(true)
			s.once.Do(func() { close(s.first) })
			loop.Succeeded()
			err = watch(ctx, rev)
		}
		s.ready.Store(false)
		if !loop.Failed(ctx, nil, err) {
			return nil
		}
	}
}
