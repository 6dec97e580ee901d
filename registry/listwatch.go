package registry

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
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

// Relist backoff of a list-watch loop.
const (
	relistMinDelay = 100 * time.Millisecond
	relistMaxDelay = 5 * time.Second
)

// listWatch lists (load returns the revision it read at) and then watches
// from that revision until the watch fails, again and again, with a
// doubling delay between failed rounds, until ctx is cancelled; it then
// returns nil. relisted is called after every successful listing but the
// first. what names the view in the log.
func listWatch(ctx context.Context, s *syncState, log *slog.Logger, what string,
	load func(context.Context) (int64, error), watch func(context.Context, int64) error, relisted func()) error {
	delay := relistMinDelay
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
			delay = relistMinDelay
			err = watch(ctx, rev)
		}
		s.ready.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn(what+" out of sync; listing again", "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(2*delay, relistMaxDelay)
	}
}
