package retry_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/berthproject/berth/internal/retry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errDown = errors.New("etcd down")

// delays returns the first n waits of a fresh backoff of p.
func delays(p retry.Policy, n int) []time.Duration {
	b := p.NewBackOff()
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = b.NextBackOff()
	}
	return out
}

// TestPolicyBounds checks every wait against its interval: wait i lies in
// [c/2, 3c/2] where c = Initial·2^i, and once c reaches Max/1.5 the waits
// lie in [Max/3, Max].
func TestPolicyBounds(t *testing.T) {
	for _, p := range []retry.Policy{
		retry.Default(),
		{Initial: time.Millisecond, Max: 10 * time.Millisecond, Multiplier: 1.5},
		{Initial: time.Second, Max: time.Second},           // Initial already at the cap
		{Initial: 50 * time.Millisecond, Max: time.Second}, // zero Multiplier: 2
	} {
		mult := p.Multiplier
		if mult < 1 {
			mult = 2
		}
		for range 50 { // fresh draws each time
			c := float64(p.Initial)
			for i, d := range delays(p, 30) {
				ceiling := float64(p.Max) / 1.5
				c = min(c, ceiling)
				lo, hi := time.Duration(c/2), time.Duration(1.5*c)+1
				if d < lo || d > hi {
					t.Fatalf("policy %+v: wait %d = %v, want within [%v, %v]", p, i, d, lo, hi)
				}
				if d > p.Max {
					t.Fatalf("policy %+v: wait %d = %v, more than Max", p, i, d)
				}
				c *= mult
			}
		}
	}
}

// TestPolicyJittered: two backoffs of one policy do not give the same
// sequence of waits, and the waits of one step are spread over its range
// rather than bunched.
func TestPolicyJittered(t *testing.T) {
	p := retry.Default()
	a, b := delays(p, 12), delays(p, 12)
	if slices.Equal(a, b) {
		t.Fatalf("two backoffs gave the same waits %v: no jitter", a)
	}
	// The first wait of 1,000 backoffs: drawn from [50ms, 150ms], so both
	// thirds of the range are hit.
	var low, high int
	for range 1000 {
		switch d := p.NewBackOff().NextBackOff(); {
		case d < 83*time.Millisecond:
			low++
		case d > 117*time.Millisecond:
			high++
		}
	}
	if low < 200 || high < 200 {
		t.Errorf("first waits: %d in the lowest third, %d in the highest, want ~333 each", low, high)
	}
}

// TestLoopsNotInStep runs two loops that fail together (as every session of
// an executor does when etcd goes away) under synctest's fake clock, and
// checks that their retries do not happen at the same instants.
func TestLoopsNotInStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const attempts = 8
		start := time.Now()
		var mu sync.Mutex
		at := map[int][]time.Duration{}
		var wg sync.WaitGroup
		for loop := range 2 {
			wg.Go(func() {
				n := 0
				err := retry.Do(t.Context(), retry.Default(), nil, "test", nil, func(context.Context) error {
					mu.Lock()
					at[loop] = append(at[loop], time.Since(start))
					mu.Unlock()
					if n++; n < attempts {
						return errDown
					}
					return nil
				})
				if err != nil {
					t.Errorf("loop %d: %v", loop, err)
				}
			})
		}
		wg.Wait()
		if len(at[0]) != attempts || len(at[1]) != attempts {
			t.Fatalf("attempts: %d and %d, want %d each", len(at[0]), len(at[1]), attempts)
		}
		same := 0
		for i := 1; i < attempts; i++ { // the first attempts are both at 0
			if at[0][i] == at[1][i] {
				same++
			}
		}
		if same > 0 {
			t.Errorf("the loops retried at the same instant %d times: %v and %v", same, at[0], at[1])
		}
		// The last retry came after the waits' lower bounds summed:
		// 50+100+200+400+800+1600+1666 ms at least.
		if min(at[0][attempts-1], at[1][attempts-1]) < 4816*time.Millisecond {
			t.Errorf("retries came too early: %v, %v", at[0], at[1])
		}
	})
}

// TestLoopResetsAfterSuccess: after a success the next wait is drawn from
// the first interval again, not from where the backoff had grown to.
func TestLoopResetsAfterSuccess(t *testing.T) {
	p := retry.Policy{Initial: 10 * time.Millisecond, Max: time.Second}
	l := retry.New(p, nil, "test")
	var d time.Duration
	for range 20 {
		d = l.Fail(errDown)
	}
	if d < time.Second/3 {
		t.Fatalf("after 20 failures the wait is %v, want at least Max/3", d)
	}
	if got := l.Failures(); got != 20 {
		t.Fatalf("Failures() = %d, want 20", got)
	}
	l.Succeeded()
	if got := l.Failures(); got != 0 {
		t.Fatalf("Failures() after a success = %d, want 0", got)
	}
	if d = l.Fail(errDown); d < 5*time.Millisecond || d > 15*time.Millisecond {
		t.Errorf("first wait after a success = %v, want within [5ms, 15ms]", d)
	}
}

// TestDoStops: Do gives up as soon as its context is cancelled or its stop
// channel closed, in the middle of a wait, and does not call fn again.
func TestDoStops(t *testing.T) {
	for _, tc := range []struct {
		name string
		want error
	}{
		{"context cancelled", context.Canceled},
		{"stop closed", retry.ErrStopped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				stop := make(chan struct{})
				calls := 0
				done := make(chan error, 1)
				go func() {
					done <- retry.Do(ctx, retry.Policy{Initial: time.Second, Max: time.Minute}, nil, "test", stop, func(context.Context) error {
						calls++
						return errDown
					})
				}()
				// 2.5 s in: the second wait (at least 0.5+1 s after the
				// first two calls) is under way.
				time.Sleep(2500 * time.Millisecond)
				synctest.Wait()
				before := calls
				t0 := time.Now()
				if tc.want == retry.ErrStopped {
					close(stop)
				} else {
					cancel()
				}
				err := <-done
				if !errors.Is(err, tc.want) {
					t.Errorf("Do = %v, want %v", err, tc.want)
				}
				if waited := time.Since(t0); waited != 0 {
					t.Errorf("Do returned %v after being stopped, want at once", waited)
				}
				if calls != before {
					t.Errorf("fn called %d times after the stop", calls-before)
				}
				if before < 2 {
					t.Errorf("fn called %d times before the stop, want at least 2", before)
				}
			})
		})
	}
}

// TestDoStoppedBeforeFailure: a failure seen after the stop is not logged.
func TestDoStoppedBeforeFailure(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(t.Context())
	err := retry.Do(ctx, retry.Default(), log, "test", nil, func(context.Context) error {
		cancel()
		return errDown
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Do = %v, want context.Canceled", err)
	}
	if buf.Len() != 0 {
		t.Errorf("logged %q for a failure after the cancel, want nothing", buf.String())
	}
}

// TestLoopLogs: one warn when an outage begins, debug for the retries of
// it, one warn with the number of attempts when it ends.
func TestLoopLogs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec recorder
		log := slog.New(&rec)
		n := 0
		err := retry.Do(t.Context(), retry.Default(), log, "queue unreadable", nil, func(context.Context) error {
			if n++; n <= 5 {
				return errDown
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			"WARN queue unreadable; retrying attempt=1",
			"DEBUG queue unreadable; retrying attempt=2",
			"DEBUG queue unreadable; retrying attempt=3",
			"DEBUG queue unreadable; retrying attempt=4",
			"DEBUG queue unreadable; retrying attempt=5",
			"WARN queue unreadable; recovered attempts=6",
		}
		if !slices.Equal(rec.lines, want) {
			t.Errorf("logged:\n%s\nwant:\n%s", strings.Join(rec.lines, "\n"), strings.Join(want, "\n"))
		}
	})
}

// recorder is a slog.Handler keeping "LEVEL message attempt(s)=N".
type recorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Level.String() + " " + rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "attempt" || a.Key == "attempts" {
			line += " " + a.String()
		}
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, line)
	r.mu.Unlock()
	return nil
}
