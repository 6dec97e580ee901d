package testutil_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
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
