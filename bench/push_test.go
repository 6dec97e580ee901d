package bench_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/bench"
)

// buildBerth builds the berth binary that bench push starts its children
// with.
func buildBerth(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "berth")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/berth").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ../cmd/berth: %v\n%s", err, out)
	}
	return bin
}

func TestRunPushSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds berth and starts processes; skipped in -short mode")
	}
	bin := buildBerth(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := bench.DefaultPushConfig()
	cfg.Devices, cfg.Duration, cfg.Warmup, cfg.Rounds = 50, time.Second, 200*time.Millisecond, 2
	cfg.Concurrency, cfg.Conns, cfg.InFlight = 8, 2, 16
	cfg.Command = []string{bin}
	cfg.ChildStderr = testWriter{t}
	cfg.TempDir = t.TempDir()
	rep, err := bench.RunPush(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("RunPush: %v", err)
	}
	for _, name := range []string{bench.CasePushBare, bench.CasePushBerth} {
		c, ok := rep.Case(name)
		if !ok {
			t.Fatalf("no closed-loop result for %s", name)
		}
		if c.Ops == 0 || c.Errors != 0 || c.Latency.Quantile(0.5) <= 0 || c.Elapsed != cfg.Duration || len(c.RoundOpsPerSec) != 2 {
			t.Errorf("%s: %d pushes, %d errors (first: %s), p50 %v, %v measured in %d rounds; want pushes, no error, a latency, %v in 2 rounds",
				name, c.Ops, c.Errors, c.FirstError, c.Latency.Quantile(0.5), c.Elapsed, len(c.RoundOpsPerSec), cfg.Duration)
		}
		p, ok := rep.PacedCase(name)
		if !ok {
			t.Fatalf("no paced result for %s", name)
		}
		berth, _ := rep.Case(bench.CasePushBerth)
		if p.Errors != 0 || p.Ops == 0 || p.Rate != berth.OpsPerSec()*cfg.PacedShare {
			t.Errorf("paced %s: %d pushes at %.0f/s, %d errors; want pushes at half of berth's %.0f/s and no error", name, p.Ops, p.Rate, p.Errors, berth.OpsPerSec())
		}
		// The devices saw every measured push, and the unmeasured ones.
		if got, min := rep.Acks[name], int64(c.Ops+p.Ops)+int64(cfg.Devices); got < min {
			t.Errorf("%s devices acked %d messages; want at least %d", name, got, min)
		}
		if rep.Streams[name] != int64(cfg.Devices) || rep.ConnectTime[name] <= 0 {
			t.Errorf("%s: %d streams open at the end, connected in %v; want %d and a time", name, rep.Streams[name], rep.ConnectTime[name], cfg.Devices)
		}
	}
	if r := rep.Ratio(); r <= 0 {
		t.Errorf("Ratio = %v; want > 0", r)
	}
	// The lean push (a plain loop of Deliver calls) and the inside push
	// (in the bare server) ran on bare's devices, in rounds like the
	// others, keeping no latency, and were not paced.
	for _, name := range []string{bench.CasePushLean, bench.CasePushInside} {
		c, ok := rep.Case(name)
		if !ok || c.Ops == 0 || c.Errors != 0 || c.Latency.Count() != 0 || c.Elapsed != cfg.Duration || len(c.RoundOpsPerSec) != 2 {
			t.Errorf("%s: %+v (found %v); want pushes, no error, no latency kept, %v in 2 rounds", name, c, ok, cfg.Duration)
		}
		if _, ok := rep.PacedCase(name); ok {
			t.Errorf("%s was paced; want it closed loop only", name)
		}
	}
	// Every case's CPU was read: this process's and the system's
	// processes' (which did the pushing).
	for _, name := range []string{bench.CasePushInside, bench.CasePushLean, bench.CasePushBare, bench.CasePushBerth} {
		c, _ := rep.Case(name)
		if !c.CPU.Known || c.CPU.InProcess || c.CPU.Servers <= 0 {
			t.Errorf("%s: CPU %+v; want the system's processes' time, positive", name, c.CPU)
		}
	}
	var out bytes.Buffer
	if err := rep.Format(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"berth bench push", "berth throughput", "berth paced at", "vs bare", "devices (berth)", "harness: bare", "lean: ", "inside: ", "of inside (the same server pushing from inside", "servers and devices"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if n := strings.Count(out.String(), "PASS ") + strings.Count(out.String(), "FAIL "); n != 3 {
		t.Errorf("report has %d PASS/FAIL lines; want 3:\n%s", n, out.String())
	}
	t.Logf("\n%s", out.String())
}

func TestPushChildArgs(t *testing.T) {
	good := bench.PushChildConfig{Role: bench.RoleDevices, Listen: "127.0.0.1:0", Devices: 3, Targets: "127.0.0.1:1", InFlight: 2}
	got, err := bench.ParsePushChildArgs(good.Args())
	if err != nil || got != good {
		t.Fatalf("ParsePushChildArgs(Args()) = %+v, %v; want %+v", got, err, good)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no role", nil, `--role ""`},
		{"unknown role", []string{"--role=x"}, `--role "x"`},
		{"no devices", []string{"--role=devices", "--targets=a"}, "must be positive"},
		{"nowhere to go", []string{"--role=devices", "--devices=1"}, "--controlplane or --targets"},
		{"extra", []string{"--role=bare", "x"}, "unexpected arguments"},
		{"bare off loopback", []string{"--role=bare", "--listen=0.0.0.0:0"}, "loopback only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bench.ParsePushChildArgs(tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParsePushChildArgs(%q) = %v; want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
	if _, err := bench.ParsePushChildArgs([]string{"--role=bare"}); err != nil {
		t.Errorf("bare role: %v", err)
	}
}

func TestPushConfigValidate(t *testing.T) {
	ok := bench.DefaultPushConfig()
	ok.Command = []string{os.Args[0]}
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mutate := range map[string]func(*bench.PushConfig){
		"no devices":   func(c *bench.PushConfig) { c.Devices = 0 },
		"no command":   func(c *bench.PushConfig) { c.Command = nil },
		"big payload":  func(c *bench.PushConfig) { c.Payload = 1 << 20 },
		"no rounds":    func(c *bench.PushConfig) { c.Rounds = 0 },
		"paced > 1":    func(c *bench.PushConfig) { c.PacedShare = 2 },
		"no senders":   func(c *bench.PushConfig) { c.Concurrency = 0 },
		"no duration":  func(c *bench.PushConfig) { c.Duration = 0 },
		"negative pad": func(c *bench.PushConfig) { c.Payload = -1 },
	} {
		c := ok
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil; want an error", name)
		}
	}
}
