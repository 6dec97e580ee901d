package bench_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/bench"
)

func TestRunHop(t *testing.T) {
	t.Setenv(hopChildEnv, "1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := bench.DefaultHopConfig()
	cfg.Command = []string{os.Args[0]}
	cfg.Rate, cfg.Duration, cfg.Loads = 500, 200*time.Millisecond, []float64{0, 0.5}
	rep, err := bench.RunHop(ctx, cfg)
	if err != nil {
		t.Fatalf("RunHop: %v", err)
	}
	if len(rep.Cases) != 2 {
		t.Fatalf("%d cases, want 2", len(rep.Cases))
	}
	for _, c := range rep.Cases {
		if want := 100; c.Trips != want {
			t.Errorf("load %v: %d trips, want %d (500/s for 200 ms)", c.Load, c.Trips, want)
		}
		if c.P50 <= 0 || c.P50 > c.P99 || c.P99 > c.Max || c.SchedP99 < c.P99 {
			t.Errorf("load %v: latencies out of order: p50 %v p99 %v max %v p99 from schedule %v", c.Load, c.P50, c.P99, c.Max, c.SchedP99)
		}
	}
	if idle, busy := rep.Cases[0].BurnerCPU, rep.Cases[1].BurnerCPU; idle != 0 || busy <= 0 {
		t.Errorf("burner CPU: %v idle, %v at 50%%; want none, then some", idle, busy)
	}
	var out bytes.Buffer
	if err := rep.Format(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"berth bench hop", "other load", "50%"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunHopRefusesBadConfig(t *testing.T) {
	cfg := bench.DefaultHopConfig()
	cfg.Command = []string{"berth"}
	cfg.Loads = []float64{1}
	if _, err := bench.RunHop(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "load") {
		t.Errorf("RunHop with load 1 = %v, want an error about the load", err)
	}
}
