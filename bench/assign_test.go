package bench_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/berthproject/berth/bench"
)

func TestRunAssignSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := bench.AssignConfig{Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, Concurrency: 4, Devices: 50, Conns: 2, TempDir: t.TempDir()}
	rep, err := bench.RunAssign(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("RunAssign: %v", err)
	}
	if len(rep.Cases) != 3 {
		t.Fatalf("RunAssign gave %d cases, want 3", len(rep.Cases))
	}
	for i, name := range []string{bench.CaseNoop, bench.CaseAssignKnown, bench.CaseAssignNew} {
		c := rep.Cases[i]
		if c.Name != name {
			t.Errorf("case %d is %q, want %q", i, c.Name, name)
		}
		if c.OpsPerSec() <= 0 || c.Latency.Quantile(0.5) <= 0 || c.Latency.Quantile(0.99) <= 0 {
			t.Errorf("%s: %.1f ops/s, p50 %v, p99 %v; want all positive", c.Name, c.OpsPerSec(), c.Latency.Quantile(0.5), c.Latency.Quantile(0.99))
		}
		if c.Errors != 0 {
			t.Errorf("%s: %d errors, first: %s", c.Name, c.Errors, c.FirstError)
		}
	}
	if known, _ := rep.Case(bench.CaseAssignKnown); known.RecordsWritten != 0 {
		t.Errorf("assign-known wrote %d assignment records, want 0", known.RecordsWritten)
	}
	if fresh, _ := rep.Case(bench.CaseAssignNew); fresh.RecordsWritten < int64(fresh.Ops) {
		t.Errorf("assign-new wrote %d assignment records for %d measured calls, want at least one each", fresh.RecordsWritten, fresh.Ops)
	}
	if rep.Env.GOMAXPROCS <= 0 || rep.Env.CPUs <= 0 || rep.Env.GoVersion == "" {
		t.Errorf("Env = %+v, want GOMAXPROCS, CPUs and Go version", rep.Env)
	}
}
