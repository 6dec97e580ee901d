package bench_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/bench"
)

// TestRunAssignTLSSmall runs `bench assign --tls` at a tiny scale, the
// control plane in a child as the command runs it, and in this process
// (--in-process): both cases complete without errors, the known devices
// are written once, not per Assign, and the report states the target.
func TestRunAssignTLSSmall(t *testing.T) {
	for _, child := range []bool{true, false} {
		name := "in-process"
		if child {
			name = "child"
		}
		t.Run(name, func(t *testing.T) { runAssignTLSSmall(t, child) })
	}
}

func runAssignTLSSmall(t *testing.T, child bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := smallAssignConfig(t, 2)
	cfg.TLS, cfg.Conns, cfg.Concurrency = true, 3, 6
	if child {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Command, cfg.Env, cfg.ChildStderr = []string{exe}, []string{childEnv + "=1"}, testWriter{t}
	}
	rep, err := bench.RunAssign(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("RunAssign --tls: %v", err)
	}
	names := []string{bench.CaseNoop, bench.CaseAssignMTLS}
	if len(rep.Cases) != len(names) || len(rep.Paced) != 0 {
		t.Fatalf("RunAssign --tls gave %d cases and %d paced, want %d and 0", len(rep.Cases), len(rep.Paced), len(names))
	}
	for i, name := range names {
		c := rep.Cases[i]
		if c.Name != name {
			t.Errorf("case %d is %q, want %q", i, c.Name, name)
		}
		if c.Ops <= 0 || c.OpsPerSec() <= 0 {
			t.Errorf("%s: %d ops, %.1f ops/s; want both positive", c.Name, c.Ops, c.OpsPerSec())
		}
		if c.Errors != 0 {
			t.Errorf("%s: %d errors, first: %s", c.Name, c.Errors, c.FirstError)
		}
		if got := len(c.RoundOpsPerSec); got != cfg.Rounds {
			t.Errorf("%s: %d rounds, want %d", c.Name, got, cfg.Rounds)
		}
	}
	if mtls, _ := rep.Case(bench.CaseAssignMTLS); mtls.RecordsWritten != 0 {
		t.Errorf("assign-mtls wrote %d assignment records, want 0 (known devices)", mtls.RecordsWritten)
	}
	known := 0
	for _, n := range rep.KnownByRule {
		known += n
	}
	if known != cfg.Conns {
		t.Errorf("%d known devices, want %d (one per connection)", known, cfg.Conns)
	}
	var b bytes.Buffer
	if err := rep.Format(&b); err != nil {
		t.Fatalf("Format: %v", err)
	}
	for _, want := range []string{"assign-mtls", "of noop (TLS) >= 0.60x", "TLS 1.3 on every connection"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

// TestRunStreamsTLSSmall runs `bench streams --tls` at a tiny scale: every
// stream of both kinds is opened over TLS with the device certificate (for
// berth, its bound token accepted) and stays open until the teardown.
func TestRunStreamsTLSSmall(t *testing.T) {
	ctx, cfg := smallStreams(t)
	cfg.Devices, cfg.Addrs, cfg.InFlight, cfg.TLS = 20, 2, 8, true
	rep, err := bench.RunStreams(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("RunStreams --tls: %v", err)
	}
	if !rep.TLS {
		t.Errorf("report says TLS = false")
	}
	for _, mode := range []string{bench.ModeBerth, bench.ModeBare} {
		s, ok := rep.Server(mode)
		if !ok {
			t.Errorf("no result for %s", mode)
			continue
		}
		if s.Streams != 20 || s.After.Streams != 20 || s.EndedEarly != 0 || s.ConnectTime <= 0 {
			t.Errorf("%s: %d streams opened, %d open after, %d ended early, connect time %v; want 20, 20, 0, positive",
				mode, s.Streams, s.After.Streams, s.EndedEarly, s.ConnectTime)
		}
	}
	var b bytes.Buffer
	if err := rep.Format(&b); err != nil {
		t.Fatalf("Format: %v", err)
	}
	for _, want := range []string{"of bare grpc-go (TLS) >= 0.70x", "idle stream with TLS: berth"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestAssignConfigValidateTLSConns(t *testing.T) {
	for _, tc := range []struct {
		tls   bool
		conns int
		ok    bool
	}{
		{true, 1024, true},
		{true, 1025, false}, // a device certificate per connection
		{false, 1025, true},
	} {
		c := bench.DefaultAssignConfig()
		c.TLS, c.Conns = tc.tls, tc.conns
		if got := c.Validate() == nil; got != tc.ok {
			t.Errorf("TLS %v, %d conns: Validate ok = %v, want %v", tc.tls, tc.conns, got, tc.ok)
		}
	}
}
