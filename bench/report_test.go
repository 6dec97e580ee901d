package bench_test

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/bench"
)

var testEnv = bench.Env{GoVersion: "go1.26.0", OS: "linux", Arch: "amd64", GOMAXPROCS: 2, CPUs: 2, CPUModel: "Test CPU", LoadAvg: 0.5}

// result makes a Result of ops calls over a second, all of latency lat.
func result(name string, ops int, lat time.Duration, records int64) bench.Result {
	h := bench.NewHistogram()
	for range ops {
		h.Record(lat)
	}
	return bench.Result{Name: name, Ops: uint64(ops), Elapsed: time.Second, Latency: h, RecordsWritten: records}
}

func TestAssignReportFormat(t *testing.T) {
	failed := result(bench.CaseAssignNew, 1000, 4*time.Millisecond, 1000)
	failed.Errors, failed.FirstError = 3, "rpc error: code = Unavailable"
	rep := &bench.AssignReport{
		Env:    testEnv,
		Config: bench.AssignConfig{Duration: time.Second, Warmup: 100 * time.Millisecond, Concurrency: 64, Devices: 10000, Conns: 4},
		Groups: 2, ExecutorRecords: 4,
		Cases: []bench.Result{
			result(bench.CaseNoop, 20000, 500*time.Microsecond, -1),
			result(bench.CaseAssignKnown, 10000, time.Millisecond, 0),
			failed,
		},
	}
	var b bytes.Buffer
	if err := rep.Format(&b); err != nil {
		t.Fatalf("Format: %v", err)
	}
	out := b.String()
	for _, want := range []string{
		"machine: 2 CPUs (Test CPU), GOMAXPROCS 2, go1.26.0 linux/amd64, load average 0.50 (1 min) at start",
		"64 workers calling back to back over 4 shared client connections",
		"ops/s", "p50 (ms)", "p99 (ms)", "vs noop",
		"noop: 20000 ops/s, p50 500.0 µs, p99 500.0 µs, 64 concurrent callers",
		"assign-known: 10000 ops/s (0.50x of noop), p50 1.00 ms, p99 1.00 ms, 64 concurrent callers, 0 assignment records written",
		"assign-new: 1000 ops/s (0.05x of noop), p50 4.00 ms",
		"assign-new: 3 calls failed; first: rpc error: code = Unavailable",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// One table row per case, with its ratio.
	for _, row := range [][]string{
		{"noop", "20000", "0.500", "1.00x"},
		{"assign-known", "10000", "1.000", "0", "0.50x"},
		{"assign-new", "1000", "4.000", "1000", "0.05x"},
	} {
		if !hasRow(out, row) {
			t.Errorf("report has no row with %q:\n%s", row, out)
		}
	}
}

// hasRow reports whether a line of out starts with cells[0] and holds every
// other cell as a field.
func hasRow(out string, cells []string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != cells[0] {
			continue
		}
		all := true
		for _, c := range cells[1:] {
			found := false
			for _, x := range f[1:] {
				found = found || x == c
			}
			all = all && found
		}
		if all {
			return true
		}
	}
	return false
}

func TestStreamsReportFormat(t *testing.T) {
	const mib = 1 << 20
	berth := bench.ServerResult{
		Mode: bench.ModeBerth, Servers: 1, Streams: 1024, ConnectTime: 2 * time.Second,
		Before: bench.ServerStats{RSS: 20 * mib, HeapInuse: 4 * mib, HeapAlloc: 3 * mib, StackInuse: 1 * mib, Goroutines: 30},
		After:  bench.ServerStats{RSS: 120 * mib, HeapInuse: 44 * mib, HeapAlloc: 33 * mib, StackInuse: 17 * mib, Goroutines: 30 + 4*1024, Streams: 1024},
	}
	bare := bench.ServerResult{
		Mode: bench.ModeBare, Servers: 1, Streams: 1024, ConnectTime: time.Second,
		Before: bench.ServerStats{RSS: 10 * mib, HeapInuse: 2 * mib, HeapAlloc: 1 * mib, StackInuse: 1 * mib, Goroutines: 10},
		After:  bench.ServerStats{RSS: 60 * mib, HeapInuse: 22 * mib, HeapAlloc: 11 * mib, StackInuse: 9 * mib, Goroutines: 10 + 3*1024, Streams: 1000},
	}
	if got, want := berth.RSSPerStream(), 100.0*1024; got != want {
		t.Errorf("RSSPerStream() = %v bytes, want %v", got, want)
	}
	if got, want := berth.GoroutinesPerStream(), 4.0; got != want {
		t.Errorf("GoroutinesPerStream() = %v, want %v", got, want)
	}
	rep := &bench.StreamsReport{
		Env: testEnv, Devices: 1024, Addrs: 1, InFlight: 256,
		Plan:    bench.ConnPlan{FileLimit: 20000, Conns: 1024, StreamsPerConn: 1, ConnsPerServer: 1024},
		Servers: []bench.ServerResult{berth, bare},
	}
	var b bytes.Buffer
	if err := rep.Format(&b); err != nil {
		t.Fatalf("Format: %v", err)
	}
	out := b.String()
	for _, want := range []string{
		"one TCP connection per stream (1024 connections)",
		"open-file limit 20000",
		"berth: 1024 idle streams cost 100.0 KiB of RSS and 40.0 KiB of heap in use per stream (30.0 KiB live heap, 16.0 KiB stack, 4.0 goroutines); opening them took 2.00 s (512 streams/s)",
		"bare: 1024 idle streams cost 50.0 KiB of RSS and 20.0 KiB of heap in use per stream",
		"berth/bare: 2.00x the RSS per stream, 2.00x the heap in use per stream, 2.00x the connect time",
		"WARNING: bare servers report 1000 open streams; 1024 were opened",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "WARNING: berth") {
		t.Errorf("report warns about berth, whose counts match:\n%s", out)
	}
	if !hasRow(out, []string{"berth/bare", "2.00x", "2.00x", "2.00x", "2.00x", "2.00x", "1.33x"}) {
		t.Errorf("report has no ratio row:\n%s", out)
	}

	for _, want := range []string{
		"FAIL  RSS per idle stream 2.00x of bare <= 1.15x",
		"FAIL  goroutines per idle stream 4.00, bare's 3.00 + 1.00 <= + 0.25",
		"FAIL  connect time (tokens verified) 2.00x of bare <= 1.30x",
		"load average (1 min): 0.50 at start, 0.00 at the end",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "acked messages") {
		t.Errorf("report of a run without traffic has a traffic target:\n%s", out)
	}

	rep.Plan = bench.ConnPlan{FileLimit: 20000, Conns: 300, StreamsPerConn: 100}
	b.Reset()
	if err := rep.Format(&b); err != nil {
		t.Fatalf("Format: %v", err)
	}
	if want := "streams share TCP connections: 300 connections carrying up to 100 streams each"; !strings.Contains(b.String(), want) {
		t.Errorf("shared-connection report lacks %q:\n%s", want, b.String())
	}
}

func TestServeArgsRoundTrip(t *testing.T) {
	want := bench.ServeConfig{
		Mode: bench.ModeBerth, Listen: "127.0.0.2:0", Etcd: "http://127.0.0.1:2379", Prefix: "/p",
		PublicKeyFile: "/tmp/k.pem", ExecutorID: "e-1", GroupID: "g-1", Capacity: 12345, LogLevel: "debug",
		TLSCert: "/tmp/server.pem", TLSKey: "/tmp/server-key.pem", ProfileDir: "/tmp/profiles",
		LeanAnswer: []byte{0x0a, 0x00, 0xff}, CPUProfile: "/tmp/cp.pprof",
	}
	got, err := bench.ParseServeArgs(want.Args())
	if err != nil {
		t.Fatalf("ParseServeArgs(%q): %v", want.Args(), err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseServeArgs(Args()) = %+v, want %+v", got, want)
	}
	for _, bad := range [][]string{
		{"--mode=fancy"},
		{"--mode=berth"}, // no etcd, no key
		{"--mode=bare", "extra"},
		{"--mode=bare", "--tls-cert=/tmp/server.pem"}, // no key
		{"--nope"},
		{"--mode=lean", "--lean-answer=%%%"},  // not base64
		{"--mode=bare", "--listen=0.0.0.0:0"}, // off loopback: they authenticate no one
		{"--mode=lean", "--listen=192.0.2.1:0"},
	} {
		if _, err := bench.ParseServeArgs(bad); err == nil {
			t.Errorf("ParseServeArgs(%q) = nil error, want one", bad)
		}
	}
}

func TestStreamsReportTraffic(t *testing.T) {
	const mib = 1 << 20
	berth := bench.ServerResult{
		Mode: bench.ModeBerth, Servers: 1, Streams: 1024, ConnectTime: 12 * time.Second / 10, Messages: 100, TrafficTime: 10 * time.Second,
		Before:  bench.ServerStats{RSS: 20 * mib, Goroutines: 30},
		After:   bench.ServerStats{RSS: 60 * mib, Goroutines: 30 + 4*1024, Streams: 1024},
		Traffic: bench.ServerStats{RSS: 68 * mib, Goroutines: 30 + 4*1024, Streams: 1024},
	}
	bare := bench.ServerResult{
		Mode: bench.ModeBarePush, Servers: 1, Streams: 1024, ConnectTime: time.Second, Messages: 100, TrafficTime: 5 * time.Second,
		Before:  bench.ServerStats{RSS: 10 * mib, Goroutines: 10},
		After:   bench.ServerStats{RSS: 46 * mib, Goroutines: 10 + 4*1024, Streams: 1024},
		Traffic: bench.ServerStats{RSS: 64 * mib, Goroutines: 10 + 4*1024, Streams: 1024},
	}
	if got, want := berth.TrafficGrowth(), 1.2; math.Abs(got-want) > 1e-9 {
		t.Errorf("TrafficGrowth() = %v, want %v", got, want)
	}
	rep := &bench.StreamsReport{
		Env: testEnv, Devices: 1024, Addrs: 1, InFlight: 256, Messages: 100, PayloadSize: 256, LoadAvgAfter: 1.5,
		Plan:    bench.ConnPlan{FileLimit: 20000, Conns: 1024, StreamsPerConn: 1, ConnsPerServer: 1024},
		Servers: []bench.ServerResult{berth, bare},
	}
	if s, ok := rep.Baseline(); !ok || s.Mode != bench.ModeBarePush {
		t.Errorf("Baseline() = %q, %v; want bare-push", s.Mode, ok)
	}
	var b bytes.Buffer
	if err := rep.Format(&b); err != nil {
		t.Fatalf("Format: %v", err)
	}
	out := b.String()
	for _, want := range []string{
		"every device is sent 100 messages of 256 bytes",
		"traffic: 100 messages of 256 bytes to each device, each acked",
		"PASS  RSS per idle stream 1.11x of bare-push <= 1.15x",
		"PASS  goroutines per idle stream 4.00, bare-push's 4.00 + 0.00 <= + 0.25",
		"PASS  connect time (tokens verified) 1.20x of bare-push <= 1.30x",
		"PASS  RSS per stream after 100 acked messages each 1.20x of berth's idle figure <= 1.25x (bare-push: 1.50x)",
		"load average (1 min): 0.50 at start, 1.50 at the end",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if !hasRow(out, []string{"berth", "10.000", "10240", "40.00", "48.00", "1.20x"}) {
		t.Errorf("report has no traffic row for berth:\n%s", out)
	}
}
