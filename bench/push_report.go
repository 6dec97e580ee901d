package bench

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strings"
)

// Format writes the push report: the machine, the setup, the closed-loop
// and paced cases, one quotable line per figure, and the targets, PASS or
// FAIL.
func (r *PushReport) Format(w io.Writer) error {
	var b bytes.Buffer
	c := r.Config
	fmt.Fprintln(&b, "berth bench push")
	fmt.Fprintln(&b, machineLine(r.Env))
	fmt.Fprintf(&b, "setup:   %d connected devices, one TCP connection and stream each, in a child process; they ack every message at once;\n", c.Devices)
	fmt.Fprintf(&b, "         a %d-byte payload per message, to the devices in turn; %d senders back to back over %d client connections\n", c.Payload, c.Concurrency, c.Conns)
	fmt.Fprintln(&b, "         inside: the bare server pushes to its own streams from inside (no RPC in front), a plain loop: the floor")
	fmt.Fprintln(&b, "         lean:  Deliver on the bare server in a plain loop (no latency kept, no deadline per call), grpc-go's defaults both sides")
	fmt.Fprintln(&b, "         bare:  sender -> plain grpc-go server (child process, no interceptors) -> Message on the device's stream -> Ack -> answer")
	fmt.Fprintln(&b, "         berth: sender -> MessagingService.Send ONLINE_ONLY on `berth controlplane` (child) -> presence -> Deliver on `berth executor`")
	fmt.Fprintln(&b, "                (child) -> Message on the stream -> Ack -> executor -> control plane -> answer; etcd in this process;")
	fmt.Fprintln(&b, "                devices connected through Assign")
	if len(c.Env) > 0 {
		fmt.Fprintf(&b, "         children's environment: %s\n", strings.Join(c.Env, " "))
	}
	warmup, measured := c.segment()
	fmt.Fprintf(&b, "         both fleets stay connected; per case %v measured in %d rounds of %v, each after %v of warm-up, bare and berth in turns;\n", c.Duration, c.Rounds, measured, warmup)
	fmt.Fprintln(&b, "         every device got one message first, unmeasured; latency measured by the sender, call to answer (the device's Ack included)")
	for _, name := range []string{CasePushBare, CasePushBerth} {
		if d, ok := r.ConnectTime[name]; ok {
			fmt.Fprintf(&b, "         %s: %d devices connected in %s\n", name, c.Devices, fmtDur(d))
		}
	}
	fmt.Fprintln(&b)

	var bare float64
	if n, ok := r.Case(CasePushBare); ok {
		bare = n.OpsPerSec()
	}
	fmt.Fprintf(&b, "%-8s %10s %9s %9s %9s %10s %7s %8s %9s %9s\n", "case", "msgs/s", "p50 (ms)", "p99 (ms)", "max (ms)", "msgs", "errors", "vs bare", "gen µs", "sys µs")
	for _, x := range r.Cases {
		p50, p99, pmax := "-", "-", "-"
		if x.Latency.Count() > 0 {
			p50, p99, pmax = ms(x.Latency.Quantile(0.50)), ms(x.Latency.Quantile(0.99)), ms(x.Latency.Max())
		}
		gen, sys := "-", "-"
		if x.CPU.Known {
			gen, sys = fmt.Sprintf("%.1f", PerOp(x.CPU.Generator, x.Ops)), fmt.Sprintf("%.1f", PerOp(x.CPU.Servers, x.Ops))
		}
		fmt.Fprintf(&b, "%-8s %10.0f %9s %9s %9s %10d %7d %8s %9s %9s\n", x.Name, x.OpsPerSec(), p50, p99, pmax, x.Ops, x.Errors, ratio(x.OpsPerSec(), bare), gen, sys)
	}
	fmt.Fprintln(&b, "(msgs/s: pushes acked per second, closed loop; latencies in milliseconds (lean and inside keep none); gen µs / sys µs: CPU time per push")
	fmt.Fprintln(&b, " of this process (the senders and etcd) and of the system's processes (servers and devices), user + system)")
	fmt.Fprintln(&b)
	for _, x := range r.Cases {
		switch x.Name {
		case CasePushInside:
			fmt.Fprintf(&b, "%s: %.0f msgs/s (%s of bare), %d pushers inside the bare server (no RPC in front), %d devices\n", x.Name, x.OpsPerSec(), ratio(x.OpsPerSec(), bare), c.Concurrency, c.Devices)
		case CasePushLean:
			fmt.Fprintf(&b, "%s: %.0f msgs/s (%s of bare), %d callers in a plain loop, %d devices\n", x.Name, x.OpsPerSec(), ratio(x.OpsPerSec(), bare), c.Concurrency, c.Devices)
		default:
			fmt.Fprintf(&b, "%s: %.0f msgs/s (%s of bare), p50 %s, p99 %s, %d senders, %d devices\n", x.Name, x.OpsPerSec(), ratio(x.OpsPerSec(), bare),
				fmtDur(x.Latency.Quantile(0.50)), fmtDur(x.Latency.Quantile(0.99)), c.Concurrency, c.Devices)
		}
		if l := cpuLine(x.CPU, x.Ops, x.Elapsed, r.Env.GOMAXPROCS); l != "" {
			fmt.Fprintf(&b, "  %s: %s\n", x.Name, strings.Replace(l, "server ", "servers and devices ", 1))
		}
		if x.FirstError != "" {
			fmt.Fprintf(&b, "%s: %d pushes failed; first: %s\n", x.Name, x.Errors, x.FirstError)
		}
	}
	r.formatRounds(&b)
	if len(r.Paced) > 0 {
		p := r.Paced[0]
		fmt.Fprintln(&b)
		fmt.Fprintf(&b, "paced:   open loop at %.2fx of berth's peak: %.0f msgs/s on a fixed schedule, both systems in turns, %v measured, %d workers;\n",
			c.PacedShare, p.Rate, p.Elapsed, p.Workers)
		fmt.Fprintln(&b, "         latency from each push's scheduled start (no coordinated omission)")
		fmt.Fprintf(&b, "%-14s %10s %10s %9s %9s %9s %10s %7s %7s\n", "paced case", "target/s", "msgs/s", "p50 (ms)", "p99 (ms)", "max (ms)", "msgs", "errors", "late")
		for _, x := range r.Paced {
			fmt.Fprintf(&b, "%-14s %10.0f %10.0f %9s %9s %9s %10d %7d %7d\n", x.Name, x.Rate, x.OpsPerSec(), ms(x.Latency.Quantile(0.50)),
				ms(x.Latency.Quantile(0.99)), ms(x.Latency.Max()), x.Ops, x.Errors, x.Late)
		}
		fmt.Fprintln(&b)
		for _, x := range r.Paced {
			kept := "schedule kept"
			if !x.KeptUp() {
				kept = "FELL BEHIND its schedule"
			}
			fmt.Fprintf(&b, "paced %s: %.0f msgs/s scheduled, p50 %s, p99 %s, max %s — %s\n", x.Name, x.Rate,
				fmtDur(x.Latency.Quantile(0.50)), fmtDur(x.Latency.Quantile(0.99)), fmtDur(x.Latency.Max()), kept)
			if x.FirstError != "" {
				fmt.Fprintf(&b, "paced %s: %d pushes failed; first: %s\n", x.Name, x.Errors, x.FirstError)
			}
		}
	}
	fmt.Fprintln(&b)
	for _, name := range []string{CasePushBare, CasePushBerth} {
		if n, ok := r.Acks[name]; ok {
			fmt.Fprintf(&b, "devices (%s): %d messages acked, %d of %d streams open at the end\n", name, n, r.Streams[name], c.Devices)
		}
	}
	r.formatTargets(&b)
	if r.LoadAvgEnd >= 0 && r.Env.LoadAvg >= 0 {
		fmt.Fprintf(&b, "load average (1 min): %.2f at start, %.2f at end\n", r.Env.LoadAvg, r.LoadAvgEnd)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// formatTargets writes a PASS or FAIL line per target measured.
func (r *PushReport) formatTargets(b *bytes.Buffer) {
	if _, ok := r.Case(CasePushBerth); !ok {
		return
	}
	fmt.Fprintln(b)
	fmt.Fprintln(b, "targets (issue 12, each against its baseline in this run):")
	if lean, ok := r.Case(CasePushLean); ok && lean.OpsPerSec() > 0 {
		if bare, ok := r.Case(CasePushBare); ok {
			got := bare.OpsPerSec() / lean.OpsPerSec()
			fmt.Fprintf(b, "%s  harness: bare %.2fx of lean (the same server, Deliver in a plain loop) >= %.2fx (within 1.5x)\n", passFail(got >= LeanRatio), got, LeanRatio)
		}
		if in, ok := r.Case(CasePushInside); ok && in.OpsPerSec() > 0 {
			fmt.Fprintf(b, "info  lean %.2fx of inside (the same server pushing from inside: what the RPC in front costs)\n", lean.OpsPerSec()/in.OpsPerSec())
		}
	}
	if _, ok := r.Case(CasePushBare); ok {
		got := r.Ratio()
		fmt.Fprintf(b, "%s  berth throughput %.2fx of bare >= %.2fx\n", passFail(got >= TargetPushRatio), got, TargetPushRatio)
	}
	p, ok := r.PacedCase(CasePushBerth)
	bp, okB := r.PacedCase(CasePushBare)
	if !ok || !okB {
		return
	}
	p99, base := p.Latency.Quantile(0.99), bp.Latency.Quantile(0.99)
	verdict := passFail(r.pacedP99Ratio() <= TargetPushPacedP99Ratio && p.Errors == 0)
	if r.Config.PacedShare != TargetPacedShare {
		verdict = "info" // the target is at another rate
	}
	line := fmt.Sprintf("%s  berth paced at %.0f msgs/s (%.2fx of its peak): p99 %s, %s of bare's %s at that rate <= %.2fx",
		verdict, p.Rate, r.Config.PacedShare, fmtDur(p99), ratio(float64(p99), float64(base)), fmtDur(base), TargetPushPacedP99Ratio)
	if p.Errors > 0 {
		line += fmt.Sprintf(", %d pushes failed", p.Errors)
	}
	if !p.KeptUp() || !bp.KeptUp() {
		line += " (the schedule was not kept)"
	}
	fmt.Fprintln(b, line)
}

// pacedP99Ratio is berth's paced p99 over bare's at the same rate (+Inf
// when either is missing).
func (r *PushReport) pacedP99Ratio() float64 {
	p, ok1 := r.PacedCase(CasePushBerth)
	bp, ok2 := r.PacedCase(CasePushBare)
	if !ok1 || !ok2 || bp.Latency.Quantile(0.99) <= 0 {
		return math.Inf(1)
	}
	return float64(p.Latency.Quantile(0.99)) / float64(bp.Latency.Quantile(0.99))
}

// formatRounds writes berth's closed-loop throughput over bare's round by
// round: their spread shows how steady the machine was.
func (r *PushReport) formatRounds(b *bytes.Buffer) {
	n, ok1 := r.Case(CasePushBare)
	x, ok2 := r.Case(CasePushBerth)
	if !ok1 || !ok2 || len(n.RoundOpsPerSec) < 2 || len(x.RoundOpsPerSec) != len(n.RoundOpsPerSec) {
		return
	}
	rs := make([]string, len(x.RoundOpsPerSec))
	for i, v := range x.RoundOpsPerSec {
		rs[i] = ratio(v, n.RoundOpsPerSec[i])
	}
	fmt.Fprintf(b, "berth vs bare by round: %s\n", strings.Join(rs, " "))
}
