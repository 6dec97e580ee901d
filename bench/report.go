package bench

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Units of the reports.
const (
	kib = 1024.0
	mib = 1024.0 * 1024.0
)

// machineLine describes e in one line.
func machineLine(e Env) string {
	cpu := fmt.Sprintf("%d CPUs", e.CPUs)
	if e.CPUModel != "" {
		cpu += " (" + e.CPUModel + ")"
	}
	s := fmt.Sprintf("machine: %s, GOMAXPROCS %d, %s %s/%s", cpu, e.GOMAXPROCS, e.GoVersion, e.OS, e.Arch)
	if e.LoadAvg >= 0 {
		s += fmt.Sprintf(", load average %.2f (1 min) at start", e.LoadAvg)
	}
	return s
}

// loadLine reports the 1-minute load average at the start and the end of a
// run: a loaded machine skews the timings.
func loadLine(start, end float64) string {
	f := func(v float64) string {
		if v < 0 {
			return "unknown"
		}
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("load average (1 min): %s at start, %s at the end", f(start), f(end))
}

// fmtDur prints d with its unit: µs below a millisecond, ms below a second,
// s above.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// ms prints d in milliseconds, without the unit (the column says it).
func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

// ratio prints a/b as "1.23x", or "n/a" when it has no meaning.
func ratio(a, b float64) string {
	if b <= 0 || a < 0 || math.IsNaN(a) || math.IsInf(a, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// Format writes the report: the machine, the setup, a table of the cases
// and one line per figure that can be quoted alone, then the paced cases
// and the targets, PASS or FAIL.
func (r *AssignReport) Format(w io.Writer) error {
	var b bytes.Buffer
	c := r.Config
	fmt.Fprintln(&b, "berth bench assign")
	fmt.Fprintln(&b, machineLine(r.Env))
	if len(c.Command) > 0 {
		fmt.Fprintf(&b, "setup:   each control plane (shared server stack) in a process of its own; embedded etcd with %d groups and %d executor records\n", r.Groups, r.ExecutorRecords)
		fmt.Fprintf(&b, "         and %d workers calling back to back over %d shared client connections on loopback in this one (all share the CPUs);\n", c.Concurrency, c.Conns)
	} else {
		fmt.Fprintf(&b, "setup:   one process: embedded etcd, a control plane (shared server stack) with %d groups and %d executor records,\n", r.Groups, r.ExecutorRecords)
		fmt.Fprintf(&b, "         %d workers calling back to back over %d shared client connections on loopback (clients and server share the CPUs);\n", c.Concurrency, c.Conns)
	}
	if c.TLS {
		warmup, measured := c.segment(c.Rounds)
		fmt.Fprintf(&b, "         TLS 1.3 on every connection; per case %v measured in %d rounds of %v, each after %v of warm-up; noop and assign-mtls take turns;\n", c.Duration, c.Rounds, measured, warmup)
		fmt.Fprintf(&b, "         enrollment closed: each connection presents a device certificate of an X.509 enrollment (%d devices, one per connection)\n", c.Conns)
		fmt.Fprintln(&b, "         and its workers ask for that device: every Assign verifies the chain and matches the id; its token is bound to the certificate")
	} else if c.Rounds > 1 {
		warmup, measured := c.segment(c.Rounds)
		fmt.Fprintf(&b, "         per case %v measured in %d rounds of %v, each after %v of warm-up; assign-known cycles over %d devices assigned beforehand;\n", c.Duration, c.Rounds, measured, warmup, c.Devices)
		fmt.Fprintln(&b, "         noop, assign-known and assign-known-sign take turns round by round (so do the paced cases): a change in the machine's load hits all;")
		fmt.Fprintf(&b, "         assign-new runs last, alone: %v warm-up, then %v measured\n", c.Warmup, c.Duration)
	} else {
		fmt.Fprintf(&b, "         per case %v warm-up, then %v measured; assign-known cycles over %d devices assigned beforehand\n", c.Warmup, c.Duration, c.Devices)
	}
	r.formatPolicy(&b)
	fmt.Fprintln(&b)

	var noop float64
	if n, ok := r.Case(CaseNoop); ok {
		noop = n.OpsPerSec()
	}
	fmt.Fprintf(&b, "%-17s %10s %9s %9s %9s %10s %7s %16s %8s %9s %9s\n",
		"case", "ops/s", "p50 (ms)", "p99 (ms)", "max (ms)", "ops", "errors", "records written", "vs noop", "gen µs", "srv µs")
	for _, x := range r.Cases {
		p50, p99, pmax := "-", "-", "-"
		if x.Latency.Count() > 0 {
			p50, p99, pmax = ms(x.Latency.Quantile(0.50)), ms(x.Latency.Quantile(0.99)), ms(x.Latency.Max())
		}
		gen, srv := "-", "-"
		if x.CPU.Known {
			gen = fmt.Sprintf("%.1f", PerOp(x.CPU.Generator, x.Ops))
			if !x.CPU.InProcess {
				srv = fmt.Sprintf("%.1f", PerOp(x.CPU.Servers, x.Ops))
			}
		}
		fmt.Fprintf(&b, "%-17s %10.0f %9s %9s %9s %10d %7d %16s %8s %9s %9s\n",
			x.Name, x.OpsPerSec(), p50, p99, pmax, x.Ops, x.Errors, records(x.RecordsWritten), ratio(x.OpsPerSec(), noop), gen, srv)
	}
	fmt.Fprintln(&b, "(ops/s: successful calls per second; latencies in milliseconds, measured by the client (lean keeps none); vs noop: ops/s over noop's ops/s;")
	fmt.Fprintln(&b, " gen µs / srv µs: CPU time per call of the load generator (this process: the callers, and etcd) and of the server process under test, user + system)")
	fmt.Fprintln(&b)
	for _, x := range r.Cases {
		fmt.Fprintln(&b, r.quote(x, noop))
		if l := cpuLine(x.CPU, x.Ops, x.Elapsed, r.Env.GOMAXPROCS); l != "" {
			fmt.Fprintf(&b, "  %s: %s\n", x.Name, l)
		}
	}
	for _, x := range r.Cases {
		if x.FirstError != "" {
			fmt.Fprintf(&b, "%s: %d calls failed; first: %s\n", x.Name, x.Errors, x.FirstError)
		}
	}
	r.formatRounds(&b)
	r.formatPaced(&b)
	r.formatTargets(&b, noop)
	if r.LoadAvgEnd >= 0 && r.Env.LoadAvg >= 0 {
		fmt.Fprintf(&b, "load average (1 min): %.2f at start, %.2f at end (the run itself adds up to %d; more means other work competed for the CPUs)\n", r.Env.LoadAvg, r.LoadAvgEnd, r.Env.GOMAXPROCS)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// formatRounds writes, for each case measured against noop in rounds, its
// ratio to noop round by round: their spread shows how steady the machine
// was.
func (r *AssignReport) formatRounds(b *bytes.Buffer) {
	n, ok := r.Case(CaseNoop)
	if !ok || len(n.RoundOpsPerSec) < 2 {
		return
	}
	for _, x := range r.Cases {
		if x.Name == CaseNoop || len(x.RoundOpsPerSec) != len(n.RoundOpsPerSec) {
			continue
		}
		rs := make([]string, len(x.RoundOpsPerSec))
		for i, v := range x.RoundOpsPerSec {
			rs[i] = ratio(v, n.RoundOpsPerSec[i])
		}
		fmt.Fprintf(b, "%s vs noop by round: %s\n", x.Name, strings.Join(rs, " "))
	}
}

// records prints a count of records written, "-" when not applicable.
func records(n int64) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// formatPolicy describes the placement policy and the tokens.
func (r *AssignReport) formatPolicy(b *bytes.Buffer) {
	c := r.Config
	if c.Rules == 0 {
		fmt.Fprintln(b, "policy:  the built-in default: every device label default, balanced by connections")
	} else {
		known := 0
		for _, n := range r.KnownByRule {
			known += n
		}
		if c.Rules > 1 {
			fmt.Fprintf(b, "policy:  %d label rules, CEL over device, tenant, services and history (version %d); the first %d match no benchmark device,\n", c.Rules, r.PolicyVersion, c.Rules-1)
			fmt.Fprintf(b, "         so evaluating them runs all %d; the last (%s) labelled %d of the %d known devices, the default label the others;\n", c.Rules, officeRule, r.RuleMatches(), known)
			if c.TLS {
				fmt.Fprintln(b, "         assign-mtls finds its devices' unchanged inputs in the label memo")
			} else {
				fmt.Fprintln(b, "         assign-known finds its devices' unchanged inputs in the label memo; assign-known-sign and assign-new run the rules")
			}
		} else {
			fmt.Fprintf(b, "policy:  1 label rule, CEL over device, tenant, services and history (version %d);\n", r.PolicyVersion)
			fmt.Fprintf(b, "         it (%s) labelled %d of the %d known devices, the default label the others;\n", officeRule, r.RuleMatches(), known)
		}
		fmt.Fprintf(b, "         sticky placement, affinity by tenant, utilization filter; %d tenants, %d labels per group\n", r.Tenants, r.Labels)
	}
	if c.TLS {
		fmt.Fprintf(b, "tokens:  Ed25519-signed, bound to the device's certificate (cnf x5t#S256); re-sent from the token cache (%d devices) while fresh\n", r.TokenCacheSize)
		return
	}
	fmt.Fprintf(b, "tokens:  Ed25519-signed; assign-known re-sends a known device's still-fresh token from the control plane's token cache (%d devices),\n", r.TokenCacheSize)
	fmt.Fprintln(b, "         assign-known-sign runs a second control plane on the same etcd without a token cache or label memo: a signature and every rule on every Assign")
}

// formatPaced writes the paced cases, if any.
func (r *AssignReport) formatPaced(b *bytes.Buffer) {
	if len(r.Paced) == 0 {
		return
	}
	p := r.Paced[0]
	fmt.Fprintln(b)
	when := fmt.Sprintf("%v warm-up then %v measured", r.Config.Warmup, p.Elapsed)
	if n := len(p.RoundOpsPerSec); n > 1 {
		warmup, measured := r.Config.segment(n)
		when = fmt.Sprintf("%v measured in %d rounds of %v after %v of warm-up", p.Elapsed, n, measured, warmup)
	}
	fmt.Fprintf(b, "paced:   open loop at %.2fx of assign-known's peak: %.0f calls/s on a fixed schedule, %s, %d workers;\n",
		r.Config.PacedShare, p.Rate, when, p.Workers)
	fmt.Fprintf(b, "         latency from each call's scheduled start (no coordinated omission); lag: start after the scheduled start;\n")
	fmt.Fprintf(b, "         late: no worker was free within %s of the scheduled start (the schedule was not kept)\n", fmtDur(LateStart))
	fmt.Fprintf(b, "%-17s %10s %10s %9s %9s %9s %10s %7s %7s %13s %16s\n",
		"paced case", "target/s", "ops/s", "p50 (ms)", "p99 (ms)", "max (ms)", "ops", "errors", "late", "lag p99 (ms)", "records written")
	for _, x := range r.Paced {
		fmt.Fprintf(b, "%-17s %10.0f %10.0f %9s %9s %9s %10d %7d %7d %13s %16s\n",
			x.Name, x.Rate, x.OpsPerSec(), ms(x.Latency.Quantile(0.50)), ms(x.Latency.Quantile(0.99)), ms(x.Latency.Max()),
			x.Ops, x.Errors, x.Late, ms(x.Lag.Quantile(0.99)), records(x.RecordsWritten))
	}
	fmt.Fprintln(b)
	for _, x := range r.Paced {
		kept := "schedule kept"
		if !x.KeptUp() {
			kept = "FELL BEHIND its schedule"
		}
		fmt.Fprintf(b, "paced %s: %.0f calls/s scheduled, %.0f ops/s done, p50 %s, p99 %s, max %s; %d of %d calls late (start lag p99 %s, max %s) — %s\n",
			x.Name, x.Rate, x.OpsPerSec(), fmtDur(x.Latency.Quantile(0.50)), fmtDur(x.Latency.Quantile(0.99)), fmtDur(x.Latency.Max()),
			x.Late, x.Ops+x.Errors, fmtDur(x.Lag.Quantile(0.99)), fmtDur(x.Lag.Max()), kept)
	}
	for _, x := range r.Paced {
		if x.FirstError != "" {
			fmt.Fprintf(b, "paced %s: %d calls failed; first: %s\n", x.Name, x.Errors, x.FirstError)
		}
		if !x.KeptUp() {
			fmt.Fprintf(b, "WARNING: paced %s fell behind: for %d of %d calls no worker was free within %s of the scheduled start; its latencies include that lag\n",
				x.Name, x.Late, x.Ops+x.Errors, fmtDur(LateStart))
		}
	}
}

// formatTargets writes a PASS or FAIL line per target that was measured.
func (r *AssignReport) formatTargets(b *bytes.Buffer, noop float64) {
	if mtls, ok := r.Case(CaseAssignMTLS); ok && noop > 0 {
		got := mtls.OpsPerSec() / noop
		fmt.Fprintln(b)
		fmt.Fprintln(b, "targets (both on TLS, device identity checked on every Assign):")
		fmt.Fprintf(b, "%s  assign-mtls %.2fx of noop (TLS) >= %.2fx\n", passFail(got >= TargetRatio), got, TargetRatio)
	}
	known, okK := r.Case(CaseAssignKnown)
	if noop <= 0 || !okK {
		return
	}
	fmt.Fprintln(b)
	what := "the built-in default policy"
	if r.Config.Rules > 0 {
		what = fmt.Sprintf("a %d-rule policy", r.Config.Rules)
	}
	fmt.Fprintf(b, "targets (issue 12; %s, each against its baseline in this run):\n", what)
	if lean, ok := r.Case(CaseLean); ok && lean.OpsPerSec() > 0 {
		got := noop / lean.OpsPerSec()
		fmt.Fprintf(b, "%s  harness: noop %.2fx of lean (grpc-go defaults, plain call loop) >= %.2fx (within 1.5x)\n", passFail(got >= LeanRatio), got, LeanRatio)
	}
	got := known.OpsPerSec() / noop
	fmt.Fprintf(b, "%s  assign-known throughput %.2fx of noop >= %.2fx%s\n", passFail(got >= AimRatio), got, AimRatio, r.floor())
	if sign, ok := r.Case(CaseAssignKnownSign); ok {
		g := sign.OpsPerSec() / noop
		fmt.Fprintf(b, "%s  assign-known-sign (a signature and every rule on every Assign, token cache and label memo off) %.2fx of noop >= %.2fx\n", passFail(g >= TargetRatio), g, TargetRatio)
	}
	if n, ok := r.Case(CaseAssignNew); ok {
		g := n.OpsPerSec() / noop
		fmt.Fprintf(b, "%s  assign-new (a record written for each) %.2fx of noop >= %.2fx\n", passFail(g >= NewRatio), g, NewRatio)
	}
	paced, okP := r.PacedCase(CaseAssignKnown)
	pnoop, okN := r.PacedCase(CaseNoop)
	if okP && okN {
		p99, base := paced.Latency.Quantile(0.99), pnoop.Latency.Quantile(0.99)
		verdict := passFail(base > 0 && float64(p99) <= PacedP99Ratio*float64(base) && paced.Errors == 0)
		if r.Config.PacedShare != TargetPacedShare {
			verdict = "info" // the target is at another rate
		}
		line := fmt.Sprintf("%s  assign-known paced at %.0f calls/s (%.2fx of its peak): p99 %s, %s of noop's %s at that rate <= %.2fx",
			verdict, paced.Rate, r.Config.PacedShare, fmtDur(p99), ratio(float64(p99), float64(base)), fmtDur(base), PacedP99Ratio)
		if paced.Errors > 0 {
			line += fmt.Sprintf(", %d calls failed", paced.Errors)
		}
		if !paced.KeptUp() || !pnoop.KeptUp() {
			line += " (the schedule was not kept)"
		}
		fmt.Fprintln(b, line)
	}
}

// floor says, after a throughput target, what the Assign's messages alone
// keep of a no-op on grpc-go (lean-assign over lean): no Assign with these
// messages does better on this stack. "" when not measured.
func (r *AssignReport) floor() string {
	lean, okL := r.Case(CaseLean)
	la, okA := r.Case(CaseLeanAssign)
	if !okL || !okA || lean.OpsPerSec() <= 0 {
		return ""
	}
	return fmt.Sprintf(" (the messages alone: lean-assign %s of lean)", ratio(la.OpsPerSec(), lean.OpsPerSec()))
}

// passFail is PASS when ok, else FAIL.
func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// quote is the one-line summary of a case.
func (r *AssignReport) quote(x Result, noop float64) string {
	var what string
	switch x.Name {
	case CaseNoop:
		what = "gRPC health Check on the control plane's server stack"
		if r.Config.TLS {
			what += ", over TLS"
		}
	case CaseAssignKnown:
		what = "Assign of a known device (its cached token re-sent)"
	case CaseAssignKnownSign:
		what = "Assign of a known device, a token signed and every rule run on every call (token cache and label memo off)"
	case CaseAssignNew:
		what = "Assign of a new device"
	case CaseAssignMTLS:
		what = "Assign of a known device authenticated by its client certificate (X.509 enrollment), over TLS"
	case CaseLean:
		what = "gRPC health Check on grpc-go with its defaults and nothing else, called in a plain loop (no latencies kept), server in a process of its own"
		return fmt.Sprintf("%s: %.0f ops/s (%s of noop), %d concurrent callers — %s", x.Name, x.OpsPerSec(), ratio(x.OpsPerSec(), noop), r.Config.Concurrency, what)
	case CaseLeanAssign:
		what = fmt.Sprintf("assign-known's requests (%d bytes) on the lean server, whose Assign answers each with a prepared copy of a real answer (%d bytes) and does nothing else, in lean's plain loop: what the messages alone cost", r.RequestBytes, r.AnswerBytes)
		var of string
		if lean, ok := r.Case(CaseLean); ok {
			of = ", " + ratio(x.OpsPerSec(), lean.OpsPerSec()) + " of lean"
		}
		return fmt.Sprintf("%s: %.0f ops/s (%s of noop%s), %d concurrent callers — %s", x.Name, x.OpsPerSec(), ratio(x.OpsPerSec(), noop), of, r.Config.Concurrency, what)
	}
	s := fmt.Sprintf("%s: %.0f ops/s", x.Name, x.OpsPerSec())
	if x.Name != CaseNoop {
		s += fmt.Sprintf(" (%s of noop)", ratio(x.OpsPerSec(), noop))
	}
	s += fmt.Sprintf(", p50 %s, p99 %s, %d concurrent callers", fmtDur(x.Latency.Quantile(0.50)), fmtDur(x.Latency.Quantile(0.99)), r.Config.Concurrency)
	if x.RecordsWritten >= 0 {
		s += fmt.Sprintf(", %d assignment records written", x.RecordsWritten)
	}
	return s + " — " + what
}

// Format writes the report: the machine, the setup, a table of both kinds
// of server with their ratios, and one line per figure that can be quoted
// alone.
func (r *StreamsReport) Format(w io.Writer) error {
	var b bytes.Buffer
	fmt.Fprintln(&b, "berth bench streams")
	fmt.Fprintln(&b, machineLine(r.Env))
	addrs := "127.0.0.1"
	if r.Addrs > 1 {
		addrs = fmt.Sprintf("127.0.0.1 to 127.0.0.%d", r.Addrs)
	}
	fmt.Fprintf(&b, "setup:   %d idle device streams per kind of server, %d server process(es) per kind (%s), each its own child process;\n", r.Devices, r.Addrs, addrs)
	if r.Plan.StreamsPerConn == 1 {
		fmt.Fprintf(&b, "         one TCP connection per stream (%d connections), as separate devices would have;\n", r.Plan.Conns)
	} else {
		fmt.Fprintf(&b, "         streams share TCP connections: %d connections carrying up to %d streams each (the open-file limit does not allow one per stream);\n", r.Plan.Conns, r.Plan.StreamsPerConn)
	}
	limit := "unknown"
	if r.Plan.FileLimit > 0 {
		limit = fmt.Sprint(r.Plan.FileLimit)
	}
	fmt.Fprintf(&b, "         at most %d streams opening at once; open-file limit %s per process\n", r.InFlight, limit)
	fmt.Fprintln(&b, "         connect time: wall time from the first stream opened to the last Welcome, clients and servers on the same machine")
	if r.TLS {
		fmt.Fprintln(&b, "         TLS 1.3 on both kinds: every connection presents one shared device client certificate (X.509 enrollment);")
		fmt.Fprintln(&b, "         berth checks each token's binding to it (cnf x5t#S256) and its enrollment; bare ignores both")
	}
	fmt.Fprintln(&b, "         berth: a real executor (registered in etcd, token verified, admission, pings answered by the clients)")
	if r.Messages > 0 {
		fmt.Fprintln(&b, "         bare-push: grpc-go ExecutorService on the same server stack, keeps each stream by device id, sends Welcome,")
		fmt.Fprintln(&b, "                    reads Acks; its ExecutorInternalService.Deliver (no auth) sends a message and waits for the Ack")
		fmt.Fprintf(&b, "         traffic: once idle and measured, every device is sent %d messages of %d bytes through its server's\n", r.Messages, r.PayloadSize)
		fmt.Fprintln(&b, "                  ExecutorInternalService.Deliver, one at a time, each waiting for the device's Ack; then measured again")
	} else {
		fmt.Fprintln(&b, "         bare:  grpc-go ExecutorService on the same server stack, reads the Hello, sends Welcome, blocks in Recv")
	}
	fmt.Fprintln(&b, "         both kinds: the same gRPC server settings (internal/rpcserver.DefaultConfig: grpc-go's default window and buffer sizes)")
	fmt.Fprintln(&b, "         memory is read in the server processes after runtime.GC and debug.FreeOSMemory; per stream = (after - before) / streams")
	fmt.Fprintln(&b)

	fmt.Fprintf(&b, "%-10s %8s %12s %12s %12s %12s %14s %14s %13s %13s\n",
		"server", "streams", "connect (s)", "RSS before", "RSS after", "RSS/stream", "heap-inuse/str", "heap-alloc/str", "stack/stream", "goroutines/")
	fmt.Fprintf(&b, "%-10s %8s %12s %12s %12s %12s %14s %14s %13s %13s\n",
		"", "", "", "(MiB)", "(MiB)", "(KiB)", "(KiB)", "(KiB)", "(KiB)", "stream")
	for _, s := range r.Servers {
		fmt.Fprintf(&b, "%-10s %8d %12.3f %12.1f %12.1f %12.2f %14.2f %14.2f %13.2f %13.2f\n",
			s.Mode, s.Streams, s.ConnectTime.Seconds(), float64(s.Before.RSS)/mib, float64(s.After.RSS)/mib,
			s.RSSPerStream()/kib, s.HeapInusePerStream()/kib, s.HeapAllocPerStream()/kib, s.StackPerStream()/kib, s.GoroutinesPerStream())
	}
	berth, okB := r.Server(ModeBerth)
	bare, okR := r.Baseline()
	if okB && okR {
		fmt.Fprintf(&b, "%-10s %8s %12s %12s %12s %12s %14s %14s %13s %13s\n",
			"berth/bare", "", ratio(berth.ConnectTime.Seconds(), bare.ConnectTime.Seconds()), "", "",
			ratio(berth.RSSPerStream(), bare.RSSPerStream()), ratio(berth.HeapInusePerStream(), bare.HeapInusePerStream()),
			ratio(berth.HeapAllocPerStream(), bare.HeapAllocPerStream()), ratio(berth.StackPerStream(), bare.StackPerStream()),
			ratio(berth.GoroutinesPerStream(), bare.GoroutinesPerStream()))
	}
	fmt.Fprintln(&b)
	for _, s := range r.Servers {
		fmt.Fprintf(&b, "%s: %d idle streams cost %.1f KiB of RSS and %.1f KiB of heap in use per stream (%.1f KiB live heap, %.1f KiB stack, %.1f goroutines); opening them took %s (%.0f streams/s)\n",
			s.Mode, s.Streams, s.RSSPerStream()/kib, s.HeapInusePerStream()/kib, s.HeapAllocPerStream()/kib, s.StackPerStream()/kib,
			s.GoroutinesPerStream(), fmtDur(s.ConnectTime), float64(s.Streams)/max(s.ConnectTime.Seconds(), 1e-9))
	}
	if okB && okR {
		fmt.Fprintf(&b, "berth/bare: %s the RSS per stream, %s the heap in use per stream, %s the connect time\n",
			ratio(berth.RSSPerStream(), bare.RSSPerStream()), ratio(berth.HeapInusePerStream(), bare.HeapInusePerStream()),
			ratio(berth.ConnectTime.Seconds(), bare.ConnectTime.Seconds()))
	}
	if okB && okR && r.TLS && berth.ConnectTime > 0 && bare.ConnectTime > 0 {
		got := bare.ConnectTime.Seconds() / berth.ConnectTime.Seconds()
		fmt.Fprintln(&b)
		fmt.Fprintln(&b, "targets (both on TLS, berth checking each token and its binding to the certificate):")
		fmt.Fprintf(&b, "%s  connect rate %.2fx of bare grpc-go (TLS) >= %.2fx\n", passFail(got >= TargetConnectRatio), got, TargetConnectRatio)
		fmt.Fprintf(&b, "info  idle stream with TLS: berth %.1f KiB RSS and %.2f goroutines per stream, bare %.1f KiB and %.2f (%s the RSS)\n",
			berth.RSSPerStream()/kib, berth.GoroutinesPerStream(), bare.RSSPerStream()/kib, bare.GoroutinesPerStream(), ratio(berth.RSSPerStream(), bare.RSSPerStream()))
	}
	if r.Messages > 0 {
		fmt.Fprintln(&b)
		fmt.Fprintf(&b, "traffic: %d messages of %d bytes to each device, each acked\n", r.Messages, r.PayloadSize)
		fmt.Fprintf(&b, "%-10s %12s %12s %14s %14s %12s %13s %12s\n", "server", "time (s)", "messages/s", "RSS/str idle", "RSS/str after", "after/idle", "stack/stream", "goroutines/")
		fmt.Fprintf(&b, "%-10s %12s %12s %14s %14s %12s %13s %12s\n", "", "", "", "(KiB)", "(KiB)", "", "(KiB)", "stream")
		for _, s := range r.Servers {
			n := float64(s.Streams * s.Messages)
			fmt.Fprintf(&b, "%-10s %12.3f %12.0f %14.2f %14.2f %12s %13.2f %12.2f\n",
				s.Mode, s.TrafficTime.Seconds(), n/max(s.TrafficTime.Seconds(), 1e-9), s.RSSPerStream()/kib, s.TrafficRSSPerStream()/kib,
				ratio(s.TrafficRSSPerStream(), s.RSSPerStream()), s.perStream(float64(s.Before.StackInuse), float64(s.Traffic.StackInuse))/kib,
				s.perStream(float64(s.Before.Goroutines), float64(s.Traffic.Goroutines)))
		}
	}
	if okB && okR && !r.TLS {
		fmt.Fprintln(&b)
		fmt.Fprintf(&b, "targets (issue 12; berth against %s of the same run):\n", bare.Mode)
		rss := berth.RSSPerStream() / max(bare.RSSPerStream(), 1e-9)
		fmt.Fprintf(&b, "%s  RSS per idle stream %.2fx of %s <= %.2fx\n", passFail(bare.RSSPerStream() > 0 && rss <= TargetIdleRSSRatio), rss, bare.Mode, TargetIdleRSSRatio)
		extra := berth.GoroutinesPerStream() - bare.GoroutinesPerStream()
		fmt.Fprintf(&b, "%s  goroutines per idle stream %.2f, %s's %.2f + %.2f <= + %.2f\n", passFail(extra <= TargetExtraGoroutines), berth.GoroutinesPerStream(), bare.Mode, bare.GoroutinesPerStream(), extra, TargetExtraGoroutines)
		conn := berth.ConnectTime.Seconds() / max(bare.ConnectTime.Seconds(), 1e-9)
		fmt.Fprintf(&b, "%s  connect time (tokens verified) %.2fx of %s <= %.2fx\n", passFail(bare.ConnectTime > 0 && conn <= TargetIdleConnectRatio), conn, bare.Mode, TargetIdleConnectRatio)
		if r.Messages > 0 {
			g := berth.TrafficGrowth()
			fmt.Fprintf(&b, "%s  RSS per stream after %d acked messages each %.2fx of berth's idle figure <= %.2fx (%s: %.2fx)\n",
				passFail(g > 0 && g <= TargetTrafficGrowth), r.Messages, g, TargetTrafficGrowth, bare.Mode, bare.TrafficGrowth())
		}
	}
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, loadLine(r.Env.LoadAvg, r.LoadAvgAfter))
	var warn []string
	for _, s := range r.Servers {
		if s.After.Streams != s.Streams {
			warn = append(warn, fmt.Sprintf("WARNING: %s servers report %d open streams; %d were opened", s.Mode, s.After.Streams, s.Streams))
		}
		if s.EndedEarly > 0 {
			warn = append(warn, fmt.Sprintf("WARNING: %s servers ended %d streams before the teardown", s.Mode, s.EndedEarly))
		}
	}
	if len(warn) > 0 {
		fmt.Fprintln(&b, strings.Join(warn, "\n"))
	}
	_, err := w.Write(b.Bytes())
	return err
}
