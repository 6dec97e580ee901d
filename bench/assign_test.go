package bench_test

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/bench"
)

// smallAssignConfig is a RunAssign that takes seconds. Its paced cases run
// at a quarter of the peak, not half: with the race detector on a busy
// machine a peak measured over 300ms is noisy.
func smallAssignConfig(t *testing.T, rules int) bench.AssignConfig {
	return bench.AssignConfig{Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, Concurrency: 4, Devices: 50, Conns: 2, Rules: rules, Rounds: 2, PacedShare: 0.25, TempDir: t.TempDir()}
}

func TestRunAssignSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := smallAssignConfig(t, 20)
	// The control planes run as children, as `berth bench assign` runs them.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Command, cfg.Env, cfg.ChildStderr = []string{exe}, []string{childEnv + "=1"}, os.Stderr
	rep, err := bench.RunAssign(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("RunAssign: %v", err)
	}
	names := []string{bench.CaseLean, bench.CaseLeanAssign, bench.CaseNoop, bench.CaseAssignKnown, bench.CaseAssignKnownSign, bench.CaseAssignNew}
	if len(rep.Cases) != len(names) {
		t.Fatalf("RunAssign gave %d cases, want %d", len(rep.Cases), len(names))
	}
	for i, name := range names {
		c := rep.Cases[i]
		if c.Name != name {
			t.Errorf("case %d is %q, want %q", i, c.Name, name)
		}
		// Every case's CPU was read, the callers' here and the server
		// process's apart (each child uses some: it answered every call).
		if !c.CPU.Known || c.CPU.InProcess || c.CPU.Generator <= 0 || c.CPU.Servers <= 0 {
			t.Errorf("%s: CPU %+v, want the generator's and the server's, both positive", c.Name, c.CPU)
		}
		if name == bench.CaseLean || name == bench.CaseLeanAssign {
			// The lean loop keeps no latencies.
			if c.OpsPerSec() <= 0 || c.Latency.Count() != 0 {
				t.Errorf("%s: %.1f ops/s, %d latencies; want calls counted and no latency kept", c.Name, c.OpsPerSec(), c.Latency.Count())
			}
		} else if c.OpsPerSec() <= 0 || c.Latency.Quantile(0.5) <= 0 || c.Latency.Quantile(0.99) <= 0 {
			t.Errorf("%s: %.1f ops/s, p50 %v, p99 %v; want all positive", c.Name, c.OpsPerSec(), c.Latency.Quantile(0.5), c.Latency.Quantile(0.99))
		}
		if c.Errors != 0 {
			t.Errorf("%s: %d errors, first: %s", c.Name, c.Errors, c.FirstError)
		}
		rounds := cfg.Rounds
		if name == bench.CaseAssignNew {
			rounds = 1 // alone, last
		}
		if len(c.RoundOpsPerSec) != rounds || c.Elapsed != cfg.Duration {
			t.Errorf("%s: %d rounds over %v, want %d over %v", c.Name, len(c.RoundOpsPerSec), c.Elapsed, rounds, cfg.Duration)
		}
	}
	for _, name := range []string{bench.CaseAssignKnown, bench.CaseAssignKnownSign} {
		if known, _ := rep.Case(name); known.RecordsWritten != 0 {
			t.Errorf("%s wrote %d assignment records, want 0", name, known.RecordsWritten)
		}
	}
	// lean-assign sent a real request and got a real answer back.
	if rep.RequestBytes <= 0 || rep.AnswerBytes <= 0 {
		t.Errorf("request %d bytes, answer %d bytes; want both measured", rep.RequestBytes, rep.AnswerBytes)
	}
	if fresh, _ := rep.Case(bench.CaseAssignNew); fresh.RecordsWritten < int64(fresh.Ops) {
		t.Errorf("assign-new wrote %d assignment records for %d measured calls, want at least one each", fresh.RecordsWritten, fresh.Ops)
	}
	if rep.Env.GOMAXPROCS <= 0 || rep.Env.CPUs <= 0 || rep.Env.GoVersion == "" {
		t.Errorf("Env = %+v, want GOMAXPROCS, CPUs and Go version", rep.Env)
	}

	// The policy was in force when the known devices were assigned: only
	// its last rule matches benchmark devices, and not all of them.
	if rep.PolicyVersion <= 0 {
		t.Errorf("PolicyVersion = %d, want the applied policy's", rep.PolicyVersion)
	}
	total := 0
	for rule, n := range rep.KnownByRule {
		total += n
		if rule != "" && rule != "office-printers" {
			t.Errorf("rule %s labelled %d known devices; only the last rule should match", rule, n)
		}
	}
	if total != cfg.Devices || rep.RuleMatches() == 0 || rep.KnownByRule[""] == 0 {
		t.Errorf("KnownByRule = %v, want %d devices, some labelled by the last rule and some by the default", rep.KnownByRule, cfg.Devices)
	}

	// Paced: noop then assign-known, at a share of assign-known's peak,
	// every scheduled call made, roughly on time.
	known, _ := rep.Case(bench.CaseAssignKnown)
	if len(rep.Paced) != 2 || rep.Paced[0].Name != bench.CaseNoop || rep.Paced[1].Name != bench.CaseAssignKnown {
		t.Fatalf("paced cases %v, want noop and assign-known", pacedNames(rep.Paced))
	}
	for _, p := range rep.Paced {
		if want := known.OpsPerSec() * cfg.PacedShare; math.Abs(p.Rate-want) > 1e-6*want {
			t.Errorf("paced %s at %.1f calls/s, want %.1f (%.2f of assign-known's %.1f)", p.Name, p.Rate, want, cfg.PacedShare, known.OpsPerSec())
		}
		scheduled := p.Rate * cfg.Duration.Seconds()
		if got := float64(p.Ops + p.Errors); math.Abs(got-scheduled) > float64(2*cfg.Rounds) {
			t.Errorf("paced %s made %.0f measured calls, want the %.1f scheduled", p.Name, got, scheduled)
		}
		if p.Errors != 0 {
			t.Errorf("paced %s: %d errors, first: %s", p.Name, p.Errors, p.FirstError)
		}
		if p.Latency.Quantile(0.99) <= 0 || p.Lag.Count() != p.Ops+p.Errors {
			t.Errorf("paced %s: p99 %v, %d lags for %d calls", p.Name, p.Latency.Quantile(0.99), p.Lag.Count(), p.Ops+p.Errors)
		}
		// Roughly: the race detector and a busy machine may hold up some
		// starts, but most calls find a free worker on time.
		if p.Late*10 > p.Ops+p.Errors {
			t.Errorf("paced %s: %d of %d calls late (start lag p50 %v, p99 %v); the schedule was not kept", p.Name, p.Late, p.Ops+p.Errors, p.Lag.Quantile(0.5), p.Lag.Quantile(0.99))
		}
	}
	if p, _ := rep.PacedCase(bench.CaseAssignKnown); p.RecordsWritten != 0 {
		t.Errorf("paced assign-known wrote %d assignment records, want 0", p.RecordsWritten)
	}

	var b bytes.Buffer
	if err := rep.Format(&b); err != nil {
		t.Fatalf("Format: %v", err)
	}
	for _, want := range []string{"20 label rules", "in 2 rounds of 150ms", "assign-known vs noop by round: ", "assign-known-sign", "paced assign-known:", "assign-known throughput", "harness: noop", "lean: ", "load generator"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestRunAssignDefaultPolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := smallAssignConfig(t, 0)
	cfg.Duration, cfg.Warmup = 100*time.Millisecond, 50*time.Millisecond
	rep, err := bench.RunAssign(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("RunAssign: %v", err)
	}
	if rep.PolicyVersion != 0 || rep.RuleMatches() != 0 || rep.KnownByRule[""] != cfg.Devices {
		t.Errorf("with --rules 0: policy version %d, known devices by rule %v; want the built-in default for all %d", rep.PolicyVersion, rep.KnownByRule, cfg.Devices)
	}
	for _, c := range rep.Cases {
		if c.Errors != 0 || c.Ops == 0 {
			t.Errorf("%s: %d calls, %d errors, first: %s", c.Name, c.Ops, c.Errors, c.FirstError)
		}
	}
}

func TestAssignConfigValidateRules(t *testing.T) {
	cfg := bench.DefaultAssignConfig()
	if cfg.Rules != 20 || cfg.PacedShare != 0.5 || cfg.Rounds != 5 {
		t.Errorf("default rules %d, paced share %v, rounds %d; want 20, 0.5 and 5", cfg.Rules, cfg.PacedShare, cfg.Rounds)
	}
	for _, n := range []int{0, -1} {
		c := cfg
		c.Rounds = n
		if err := c.Validate(); err == nil {
			t.Errorf("Validate accepts %d rounds", n)
		}
	}
	for _, n := range []int{-1, 1001} {
		c := cfg
		c.Rules = n
		if err := c.Validate(); err == nil {
			t.Errorf("Validate accepts %d rules", n)
		}
	}
	for _, x := range []float64{-0.1, 1.5, math.NaN()} {
		c := cfg
		c.PacedShare = x
		if err := c.Validate(); err == nil {
			t.Errorf("Validate accepts paced share %v", x)
		}
	}
}

func pacedNames(ps []bench.PacedResult) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// paced makes a PacedResult of ops calls over a second at rate, all of
// latency lat and start lag lag, late of them late.
func paced(name string, rate float64, ops int, lat, lag time.Duration, late uint64) bench.PacedResult {
	r := bench.PacedResult{Result: result(name, ops, lat, -1), Rate: rate, Workers: 64, Lag: bench.NewHistogram(), Late: late}
	for range ops {
		r.Lag.Record(lag)
	}
	return r
}

func TestAssignReportTargets(t *testing.T) {
	rep := &bench.AssignReport{
		Env:    testEnv,
		Config: bench.AssignConfig{Duration: time.Second, Warmup: 100 * time.Millisecond, Concurrency: 64, Devices: 10000, Conns: 4, Rules: 20, PacedShare: 0.5},
		Groups: 2, ExecutorRecords: 4, Tenants: 16, Labels: 15, PolicyVersion: 7, TokenCacheSize: 100000,
		KnownByRule: map[string]int{"": 7000, "office-printers": 3000}, LoadAvgEnd: 1.5,
		RequestBytes: 122, AnswerBytes: 628,
		Cases: []bench.Result{
			{Name: bench.CaseLean, Ops: 26000, Elapsed: time.Second, Latency: bench.NewHistogram(), RecordsWritten: -1,
				CPU: bench.CPU{Generator: 520 * time.Millisecond, Servers: 390 * time.Millisecond, Known: true}},
			{Name: bench.CaseLeanAssign, Ops: 20800, Elapsed: time.Second, Latency: bench.NewHistogram(), RecordsWritten: -1},
			result(bench.CaseNoop, 20000, 500*time.Microsecond, -1),
			result(bench.CaseAssignKnown, 14000, time.Millisecond, 0),
			result(bench.CaseAssignKnownSign, 10000, 2*time.Millisecond, 0),
			result(bench.CaseAssignNew, 1000, 4*time.Millisecond, 1000),
		},
		Paced: []bench.PacedResult{
			paced(bench.CaseNoop, 7000, 7000, 300*time.Microsecond, 50*time.Microsecond, 0),
			paced(bench.CaseAssignKnown, 7000, 7000, 2*time.Millisecond, 50*time.Microsecond, 0),
		},
	}
	rep.Config.Rounds = 2
	rep.Cases[2].RoundOpsPerSec = []float64{20000, 20000}
	rep.Cases[3].RoundOpsPerSec = []float64{16000, 12000}
	var b bytes.Buffer
	if err := rep.Format(&b); err != nil {
		t.Fatalf("Format: %v", err)
	}
	out := b.String()
	for _, want := range []string{
		"per case 1s measured in 2 rounds of 500ms, each after 50ms of warm-up",
		"assign-known vs noop by round: 0.80x 0.60x",
		"policy:  20 label rules",
		"the last (office-printers) labelled 3000 of the 10000 known devices",
		"token cache (100000 devices)",
		"assign-known-sign: 10000 ops/s (0.50x of noop)",
		"open loop at 0.50x of assign-known's peak: 7000 calls/s",
		"paced assign-known: 7000 calls/s scheduled, 7000 ops/s done, p50 2.00 ms, p99 2.00 ms, max 2.00 ms; 0 of 7000 calls late (start lag p99 50.0 µs, max 50.0 µs)",
		"schedule kept",
		"targets (issue 12; a 20-rule policy, each against its baseline in this run):",
		"PASS  harness: noop 0.77x of lean (grpc-go defaults, plain call loop) >= 0.67x (within 1.5x)",
		"FAIL  assign-known throughput 0.70x of noop >= 0.80x (the messages alone: lean-assign 0.80x of lean)",
		"lean-assign: 20800 ops/s (1.04x of noop, 0.80x of lean), 64 concurrent callers — assign-known's requests (122 bytes) on the lean server",
		"FAIL  assign-known-sign (a signature and every rule on every Assign, token cache and label memo off) 0.50x of noop >= 0.60x",
		"FAIL  assign-new (a record written for each) 0.05x of noop >= 0.40x",
		"FAIL  assign-known paced at 7000 calls/s (0.50x of its peak): p99 2.00 ms, 6.67x of noop's 300.0 µs at that rate <= 1.25x",
		"lean: 26000 ops/s (1.30x of noop)",
		"lean: load generator 20.0 µs of CPU per call (26% of 2 CPUs), server 15.0 µs per call (20%)",
		"load average (1 min): 0.50 at start, 1.50 at end",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	for _, row := range [][]string{
		{"assign-known-sign", "10000", "2.000", "0", "0.50x"},
		{"lean", "26000", "-", "-", "-", "26000", "0", "-", "1.30x", "20.0", "15.0"},
		{"assign-known", "7000", "7000", "2.000", "0", "0.050"},
	} {
		if !hasRow(out, row) {
			t.Errorf("report has no row with %q:\n%s", row, out)
		}
	}

	// A slow paced case that fell behind fails and says so.
	rep.Paced[1] = paced(bench.CaseAssignKnown, 7000, 7000, 8*time.Millisecond, 3*time.Millisecond, 700)
	b.Reset()
	if err := rep.Format(&b); err != nil {
		t.Fatalf("Format: %v", err)
	}
	out = b.String()
	for _, want := range []string{
		"FAIL  assign-known paced at 7000 calls/s (0.50x of its peak): p99 8.00 ms, 26.67x of noop's 300.0 µs at that rate <= 1.25x (the schedule was not kept)",
		"WARNING: paced assign-known fell behind: for 700 of 7000 calls no worker was free within 1.00 ms of the scheduled start",
		"FELL BEHIND its schedule",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestPacedKeepsSchedule(t *testing.T) {
	p := bench.Paced{Rate: 1000, Workers: 64, Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond,
		Op: func(context.Context, int) error { return nil }}
	r, err := p.Run(context.Background(), "nothing")
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.Ops != 200 || r.Errors != 0 {
		t.Errorf("%d calls, %d errors; want the 200 scheduled in the measured 200ms", r.Ops, r.Errors)
	}
	if r.Late*10 > r.Ops {
		t.Errorf("%d of %d calls late doing nothing", r.Late, r.Ops)
	}
}

func TestPacedCountsFallingBehind(t *testing.T) {
	// One worker, calls of 10ms, scheduled every 2ms: the schedule cannot
	// be kept, and latency counts from the scheduled start, so it grows
	// with the backlog instead of staying at 10ms.
	p := bench.Paced{Rate: 500, Workers: 1, Duration: 100 * time.Millisecond,
		Op: func(context.Context, int) error { time.Sleep(10 * time.Millisecond); return nil }}
	r, err := p.Run(context.Background(), "slow")
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.Ops != 50 {
		t.Errorf("%d calls, want the 50 scheduled", r.Ops)
	}
	if r.KeptUp() || r.Late < 40 {
		t.Errorf("%d of %d calls late, kept up %v; want most late", r.Late, r.Ops, r.KeptUp())
	}
	if worst := r.Latency.Max(); worst < 300*time.Millisecond {
		t.Errorf("max latency %v; want the backlog's (about 400ms), measured from the scheduled start", worst)
	}
}
