package bench_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/bench"
)

func TestRunStreamsSmall(t *testing.T) {
	ctx, cfg := smallStreams(t)
	cfg.Devices, cfg.Addrs, cfg.InFlight = 50, 2, 16
	rep, err := bench.RunStreams(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("RunStreams: %v", err)
	}
	if rep.Plan.Conns != 50 || rep.Plan.StreamsPerConn != 1 {
		t.Errorf("plan = %+v, want one connection per stream", rep.Plan)
	}
	for _, mode := range []string{bench.ModeBerth, bench.ModeBare} {
		s, ok := rep.Server(mode)
		if !ok {
			t.Errorf("no result for %s", mode)
			continue
		}
		if s.Streams != 50 || s.After.Streams != 50 || s.Before.Streams != 0 || s.Servers != 2 {
			t.Errorf("%s: %d streams opened on %d servers, which report %d before and %d after; want 50 on 2, 0 before, 50 after",
				mode, s.Streams, s.Servers, s.Before.Streams, s.After.Streams)
		}
		for name, v := range map[string]float64{
			"RSS": s.RSSPerStream(), "heap in use": s.HeapInusePerStream(), "heap alloc": s.HeapAllocPerStream(),
			"stack": s.StackPerStream(), "goroutines": s.GoroutinesPerStream(),
		} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Errorf("%s: %s per stream = %v, want a finite number", mode, name, v)
			}
		}
		if s.GoroutinesPerStream() <= 0 || s.ConnectTime <= 0 || s.After.RSS <= 0 {
			t.Errorf("%s: %.1f goroutines per stream, connect time %v, RSS %d bytes; want all positive", mode, s.GoroutinesPerStream(), s.ConnectTime, s.After.RSS)
		}
		if s.EndedEarly != 0 {
			t.Errorf("%s: %d streams ended before the teardown", mode, s.EndedEarly)
		}
	}
}

func TestRunStreamsTraffic(t *testing.T) {
	ctx, cfg := smallStreams(t)
	cfg.Devices, cfg.Addrs, cfg.InFlight, cfg.Messages, cfg.PayloadSize = 20, 2, 8, 5, 64
	cfg.ProfileDir = t.TempDir()
	rep, err := bench.RunStreams(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("RunStreams: %v", err)
	}
	if _, ok := rep.Server(bench.ModeBare); ok {
		t.Error("a run with traffic has a bare result; want bare-push as the baseline")
	}
	for _, mode := range []string{bench.ModeBerth, bench.ModeBarePush} {
		s, ok := rep.Server(mode)
		if !ok {
			t.Errorf("no result for %s", mode)
			continue
		}
		if s.Messages != 5 || s.TrafficTime <= 0 || s.Traffic.Streams != 20 || s.Traffic.RSS <= 0 {
			t.Errorf("%s: %d messages in %v, %d streams and %d bytes of RSS after; want 5, a positive time, 20 streams, RSS",
				mode, s.Messages, s.TrafficTime, s.Traffic.Streams, s.Traffic.RSS)
		}
		if s.EndedEarly != 0 {
			t.Errorf("%s: %d streams ended before the teardown", mode, s.EndedEarly)
		}
		// Three measurements (before, idle, after the traffic) of each
		// of the two servers, each with both profiles.
		for server := 1; server <= 2; server++ {
			for n := 1; n <= 3; n++ {
				for _, kind := range []string{"heap.pb.gz", "goroutine.txt"} {
					name := fmt.Sprintf("%s-bench-exec-%d-%d-%s", mode, server, n, kind)
					if fi, err := os.Stat(filepath.Join(cfg.ProfileDir, name)); err != nil || fi.Size() == 0 {
						t.Errorf("profile %s: %v", name, err)
					}
				}
			}
		}
	}
	var b strings.Builder
	if err := rep.Format(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "RSS per stream after 5 acked messages each") {
		t.Errorf("report lacks the traffic target:\n%s", b.String())
	}
}

// testWriter sends the children's logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("child: %s", p)
	return len(p), nil
}

// smallStreams skips in -short mode; otherwise it returns a context
// bounding the test and a streams config whose server children are this
// test binary (childEnv), logging to the test.
func smallStreams(t *testing.T) (context.Context, bench.StreamsConfig) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts server processes; skipped in -short mode")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("os.Executable: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cfg := bench.DefaultStreamsConfig()
	cfg.Command = []string{exe}
	cfg.Env = []string{childEnv + "=1"}
	cfg.ChildStderr = testWriter{t}
	cfg.TempDir = t.TempDir()
	return ctx, cfg
}
