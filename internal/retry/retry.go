// Package retry is how berth's server-side loops wait after a failure: a
// jittered exponential backoff (cenkalti/backoff/v5 with a randomization
// factor of 0.5), bounded, reset by a success, stopped by the context, and
// logged once per outage rather than once per attempt.
//
// Jitter matters because failures are shared: when etcd hiccups, every
// session of an executor fails at the same moment, and without jitter they
// would all retry in step, again and again.
package retry

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// ErrStopped is returned by Do when its stop channel was closed.
var ErrStopped = errors.New("retry: stopped")

// Randomization is the jitter of every wait: a wait is drawn uniformly from
// [1-Randomization, 1+Randomization] times the current interval.
const Randomization = 0.5

// Policy is a jittered exponential backoff.
type Policy struct {
	// Initial is the centre of the first wait: it is drawn from
	// [Initial/2, 3·Initial/2].
	Initial time.Duration
	// Max bounds every wait, jitter included. Once the interval reaches
	// it, waits are drawn from [Max/3, Max].
	Max time.Duration
	// Multiplier is how much the interval grows after each failure; values
	// below 1 (the zero value too) mean 2.
	Multiplier float64
}

// Default is the policy of berth's etcd-facing loops (relisting a watch,
// re-registering, writing presence, reading a queue): 100 ms, doubling, at
// most 5 s.
func Default() Policy {
	return Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2}
}

// NewBackOff returns a fresh backoff following p. It is not safe for
// concurrent use: each loop has its own.
func (p Policy) NewBackOff() backoff.BackOff {
	initial := max(p.Initial, time.Nanosecond)
	// backoff's MaxInterval caps the interval before jitter; capping it at
	// Max/(1+Randomization) keeps every randomized wait within Max.
	ceiling := max(time.Duration(float64(max(p.Max, initial))/(1+Randomization)), time.Nanosecond)
	mult := p.Multiplier
	if mult < 1 {
		mult = 2
	}
	b := &backoff.ExponentialBackOff{
		InitialInterval:     min(initial, ceiling),
		RandomizationFactor: Randomization,
		Multiplier:          mult,
		MaxInterval:         ceiling,
	}
	b.Reset()
	return &bounded{b: b, max: max(p.Max, initial)}
}

// bounded clamps an ExponentialBackOff's waits to max: the library adds one
// nanosecond of rounding to the top of its range.
type bounded struct {
	b   *backoff.ExponentialBackOff
	max time.Duration
}

func (b *bounded) NextBackOff() time.Duration { return min(b.b.NextBackOff(), b.max) }
func (b *bounded) Reset()                     { b.b.Reset() }

// Sleep waits d, or until ctx is done or stop (which may be nil) is closed.
// It reports whether d elapsed.
func Sleep(ctx context.Context, d time.Duration, stop <-chan struct{}) bool {
	if ctx.Err() != nil {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// Loop is the retry state of one loop: its backoff and the failures since
// its last success. The first failure of an outage is logged at warn, the
// later ones at debug, and the first success after failures at warn with
// the number of attempts it took. A Loop is used by one goroutine.
type Loop struct {
	b        backoff.BackOff
	log      *slog.Logger
	what     string
	failures int
	first    time.Time // when the outage began
	now      func() time.Time
}

// New returns a Loop following p, logging to log (nil: nothing is logged)
// about what (for example "registry cache out of sync").
func New(p Policy, log *slog.Logger, what string) *Loop {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Loop{b: p.NewBackOff(), log: log, what: what, now: time.Now}
}

// Failures counts the failures since the last success.
func (l *Loop) Failures() int { return l.failures }

// Fail records a failed attempt, logs it and returns how long to wait before
// the next one. attrs are added to the log record.
func (l *Loop) Fail(err error, attrs ...any) time.Duration {
	l.failures++
	d := l.b.NextBackOff()
	lvl := slog.LevelDebug
	if l.failures == 1 {
		lvl = slog.LevelWarn
		l.first = l.now()
	}
	l.log.Log(context.Background(), lvl, l.what+"; retrying",
		append(attrs, "err", err, "attempt", l.failures, "retry_in", d)...)
	return d
}

// Failed records a failed attempt (as Fail) and waits before the next one,
// or until ctx is done or stop (which may be nil) is closed. It reports
// whether the wait ended normally: false means stop retrying. A failure
// seen after ctx is done or stop is closed is not logged: it is the
// loop's end, not an outage.
func (l *Loop) Failed(ctx context.Context, stop <-chan struct{}, err error, attrs ...any) bool {
	if stopped(ctx, stop) {
		return false
	}
	return Sleep(ctx, l.Fail(err, attrs...), stop)
}

// stopped reports whether ctx is done or stop is closed.
func stopped(ctx context.Context, stop <-chan struct{}) bool {
	if ctx.Err() != nil {
		return true
	}
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// Succeeded records a success: after failures it logs the recovery at warn
// with the number of attempts, and the backoff starts again from Initial.
func (l *Loop) Succeeded(attrs ...any) {
	if l.failures == 0 {
		return
	}
	l.log.Warn(l.what+"; recovered", append(attrs, "attempts", l.failures+1, "outage", l.now().Sub(l.first).Round(time.Millisecond))...)
	l.failures = 0
	l.b.Reset()
}

// Do calls fn until it returns nil, waiting between attempts as a Loop
// following p does, and logging as it does. It returns nil once fn
// succeeded, or ctx's error (or ErrStopped when stop was closed) when it
// gave up.
//
// A first attempt that succeeds costs no allocation.
func Do(ctx context.Context, p Policy, log *slog.Logger, what string, stop <-chan struct{}, fn func(context.Context) error) error {
	err := fn(ctx)
	if err == nil {
		return nil
	}
	l := New(p, log, what)
	for {
		if !l.Failed(ctx, stop, err) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return ErrStopped
		}
		if err = fn(ctx); err == nil {
			l.Succeeded()
			return nil
		}
	}
}
