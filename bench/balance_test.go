package bench_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/berthproject/berth/bench"
)

// smallBalance is the default run in miniature: a tenth of the devices,
// with heartbeats and the assignment-record delay a tenth as long in
// assignments, so that they lag the same share of the run.
func smallBalance() bench.BalanceConfig {
	cfg := bench.DefaultBalanceConfig()
	cfg.Devices = 10000
	cfg.Heartbeat = 50
	cfg.Delay = 20
	return cfg
}

func TestBalanceMeetsTargets(t *testing.T) {
	var out bytes.Buffer
	res, err := bench.Balance(context.Background(), smallBalance(), &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())

	one, ok1 := res.Row(bench.MethodBerth, 1)
	many, ok3 := res.Row(bench.MethodBerth, 3)
	if !ok1 || !ok3 {
		t.Fatalf("rows %+v: want berth with 1 and 3 replicas", res.Rows)
	}
	if one.MaxMean > bench.BalanceTargetOneReplica {
		t.Errorf("berth, 1 replica: max/mean %.4f; want <= %.2f", one.MaxMean, bench.BalanceTargetOneReplica)
	}
	if many.MaxMean > bench.BalanceTargetManyReplicas {
		t.Errorf("berth, 3 replicas: max/mean %.4f; want <= %.2f", many.MaxMean, bench.BalanceTargetManyReplicas)
	}
	baselines := 0
	for _, r := range res.Rows {
		total := 0
		for _, n := range r.Counts {
			total += n
		}
		if total != res.Config.Devices {
			t.Errorf("%s, %d replicas: %d devices placed; want %d", r.Method, r.Replicas, total, res.Config.Devices)
		}
		if r.Berth {
			continue
		}
		baselines++
		for _, b := range []bench.BalanceRow{one, many} {
			if b.MaxMean >= r.MaxMean {
				t.Errorf("berth, %d replicas: max/mean %.4f; want below %s's %.4f", b.Replicas, b.MaxMean, r.Method, r.MaxMean)
			}
		}
	}
	if baselines != 4 {
		t.Errorf("%d baselines; want 4", baselines)
	}
	if !res.Pass() {
		t.Errorf("Pass() = false; targets %+v", res.Targets)
	}
	if got := strings.Count(out.String(), "PASS "); got != len(res.Targets) {
		t.Errorf("output has %d PASS lines; want %d", got, len(res.Targets))
	}
}

func TestBalanceIsDeterministic(t *testing.T) {
	run := func(seed uint64) string {
		cfg := smallBalance()
		cfg.Seed = seed
		var out bytes.Buffer
		if _, err := bench.Balance(context.Background(), cfg, &out); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	a, b := run(7), run(7)
	if a != b {
		t.Errorf("two runs with seed 7 differ:\n%s\n---\n%s", a, b)
	}
	if c := run(8); c == a {
		t.Errorf("seeds 7 and 8 print the same:\n%s", a)
	}
}

func TestBalanceRejectsBadConfig(t *testing.T) {
	for name, mod := range map[string]func(*bench.BalanceConfig){
		"one group":     func(c *bench.BalanceConfig) { c.Groups = 1 },
		"too few":       func(c *bench.BalanceConfig) { c.Devices = 50 },
		"one replica":   func(c *bench.BalanceConfig) { c.Replicas = 1 },
		"zero interval": func(c *bench.BalanceConfig) { c.Heartbeat = 0 },
		"overfull":      func(c *bench.BalanceConfig) { c.Fill = 1.2 },
	} {
		cfg := smallBalance()
		mod(&cfg)
		var out bytes.Buffer
		if _, err := bench.Balance(context.Background(), cfg, &out); err == nil {
			t.Errorf("%s: Balance succeeded; want an error", name)
		}
	}
}
