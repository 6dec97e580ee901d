package testutil_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/berthproject/berth/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestEtcd(t *testing.T) {
	srv := testutil.StartEtcd(t)
	cli := testutil.EtcdClient(t, srv)
	ctx := t.Context()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get(k) = %v, %v; want v", resp, err)
	}
}

// fatalTB records Fatalf and ends the goroutine like testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestWaitFor(t *testing.T) {
	t.Run("condition met", func(t *testing.T) {
		calls := 0
		testutil.WaitFor(t, testutil.DefaultTimeout, "three calls", func() bool {
			calls++
			return calls == 3
		})
		if calls != 3 {
			t.Errorf("cond called %d times, want 3", calls)
		}
	})
	t.Run("timeout names what was awaited", func(t *testing.T) {
		tb := &fatalTB{TB: t}
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			testutil.WaitFor(tb, testutil.DefaultShortTimeout, "the impossible", func() bool { return false })
		}()
		<-done
		if elapsed := time.Since(start); elapsed < testutil.DefaultShortTimeout || elapsed > testutil.DefaultTimeout {
			t.Errorf("WaitFor gave up after %v, want about %v", elapsed, testutil.DefaultShortTimeout)
		}
		if !strings.Contains(tb.msg, "the impossible") {
			t.Errorf("WaitFor failed with %q, want it to name what was awaited", tb.msg)
		}
	})
}

// countTo returns a condition that is true from its n-th call on (never
// when n is 0), and the count of its calls.
func countTo(n int) (cond func() bool, calls *int) {
	calls = new(int)
	return func() bool {
		*calls++
		return n > 0 && *calls >= n
	}, calls
}

func TestWaitForEvery(t *testing.T) {
	for _, tc := range []struct {
		name              string
		timeout, interval time.Duration
		trueAt            int // the call on which cond turns true; 0: never
		wantCalls         int
		wantElapsed       time.Duration
		wantFatal         bool
	}{
		{name: "true at once", timeout: time.Second, interval: 50 * time.Millisecond, trueAt: 1, wantCalls: 1},
		{name: "true on the fourth call", timeout: time.Second, interval: 50 * time.Millisecond, trueAt: 4, wantCalls: 4, wantElapsed: 150 * time.Millisecond},
		{name: "never true", timeout: time.Second, interval: 300 * time.Millisecond, wantCalls: 4, wantElapsed: time.Second, wantFatal: true},
		{name: "true too late", timeout: 120 * time.Millisecond, interval: 50 * time.Millisecond, trueAt: 5, wantCalls: 3, wantElapsed: 120 * time.Millisecond, wantFatal: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cond, calls := countTo(tc.trueAt)
				tb := &fatalTB{TB: t}
				start := time.Now()
				done := make(chan struct{})
				go func() {
					defer close(done)
					testutil.WaitForEvery(tb, tc.timeout, tc.interval, "the awaited thing", cond)
				}()
				<-done
				if got := time.Since(start); got != tc.wantElapsed {
					t.Errorf("WaitForEvery returned after %v, want %v", got, tc.wantElapsed)
				}
				if *calls != tc.wantCalls {
					t.Errorf("cond called %d times, want %d", *calls, tc.wantCalls)
				}
				if gotFatal := tb.msg != ""; gotFatal != tc.wantFatal {
					t.Errorf("WaitForEvery failed the test: %v (%q), want %v", gotFatal, tb.msg, tc.wantFatal)
				}
				if tc.wantFatal && !strings.Contains(tb.msg, "the awaited thing") {
					t.Errorf("WaitForEvery failed with %q, want it to name what was awaited", tb.msg)
				}
			})
		})
	}
}

func TestPoll(t *testing.T) {
	for _, tc := range []struct {
		name        string
		timeout     time.Duration // of ctx; 0: ended before Poll
		interval    time.Duration
		trueAt      int
		wantCalls   int
		wantElapsed time.Duration
		wantErr     error
	}{
		{name: "true at once", timeout: time.Second, interval: 100 * time.Millisecond, trueAt: 1, wantCalls: 1},
		{name: "pauses interval between calls", timeout: time.Second, interval: 100 * time.Millisecond, trueAt: 3, wantCalls: 3, wantElapsed: 200 * time.Millisecond},
		{name: "ctx ends first", timeout: time.Second, interval: 300 * time.Millisecond, wantCalls: 4, wantElapsed: time.Second, wantErr: context.DeadlineExceeded},
		{name: "ctx already ended: one call", interval: 100 * time.Millisecond, wantCalls: 1, wantErr: context.DeadlineExceeded},
		{name: "ctx already ended, cond true", interval: 100 * time.Millisecond, trueAt: 1, wantCalls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), tc.timeout)
				defer cancel()
				cond, calls := countTo(tc.trueAt)
				start := time.Now()
				err := testutil.Poll(ctx, tc.interval, cond)
				if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
					t.Errorf("Poll = %v, want %v", err, tc.wantErr)
				}
				if got := time.Since(start); got != tc.wantElapsed {
					t.Errorf("Poll returned after %v, want %v", got, tc.wantElapsed)
				}
				if *calls != tc.wantCalls {
					t.Errorf("cond called %d times, want %d", *calls, tc.wantCalls)
				}
			})
		})
	}
}
