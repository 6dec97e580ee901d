package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/testutil"
)

var (
	opsRE = regexp.MustCompile(` ops=(\S+)`)
	caRE  = regexp.MustCompile(` ca=(\S+)`)
	cpRE  = regexp.MustCompile(` controlplane=(\S+)`)
)

// TestDevOpsListener runs `berth dev`: its ready line names the operations
// listener (ops=), which serves HTTPS with the dev CA; /readyz is ready,
// and after a few simulated devices connected /metrics has berth_ metrics
// counting them; pprof is off.
func TestDevOpsListener(t *testing.T) {
	dev := start(t, "dev", "dev", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir())
	line := dev.waitLine(60*time.Second, "ready line", func(s string) bool { return strings.HasPrefix(s, "berth dev ready:") })
	opsURL, ca, cp := opsRE.FindStringSubmatch(line), caRE.FindStringSubmatch(line), cpRE.FindStringSubmatch(line)
	if opsURL == nil || ca == nil || cp == nil || !strings.HasPrefix(opsURL[1], "https://127.0.0.1:") {
		t.Fatalf("ready line %q: want ops=https://127.0.0.1:PORT, ca= and controlplane=", line)
	}
	pem, err := os.ReadFile(ca[1])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
	defer hc.CloseIdleConnections()
	get := func(path string) (int, string) {
		resp, err := hc.Get(opsURL[1] + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, "controlplane: ready") || !strings.Contains(body, "executor group-1-exec-1: ready") {
		t.Errorf("/readyz = %d %q; want 200 with the control plane and the executors ready", code, body)
	}
	if code, _ := get("/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ = %d; want 404 without --pprof", code)
	}

	sim := start(t, "simulate", "simulate", "--controlplane", cp[1], "--ca", ca[1], "--devices", "3", "--every", "100ms")
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "3 streams in /metrics", func() bool {
		_, body := get("/metrics")
		return sumSeries(body, "berth_executor_streams{") == 3
	})
	_, body := get("/metrics")
	for _, want := range []string{`berth_assign_total{code="OK",label="default"}`, "berth_registry_cache_synced 1", "berth_registry_degraded 0",
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Assign"`, "berth_etcd_request_duration_seconds_bucket"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	sim.signal(syscall.SIGINT)
	_ = sim.wait(30 * time.Second)
	dev.signal(syscall.SIGTERM)
	if err := dev.wait(60 * time.Second); err != nil {
		t.Errorf("berth dev after SIGTERM: %v", err)
	}
}

// sumSeries adds the values of the series whose lines start with prefix.
func sumSeries(body, prefix string) float64 {
	var sum float64
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			var v float64
			var err error
			if i := strings.LastIndexByte(l, ' '); i > 0 {
				if v, err = strconv.ParseFloat(l[i+1:], 64); err == nil {
					sum += v
				}
			}
		}
	}
	return sum
}

// TestOpsListenRefusesPlaintextOffLoopback: `berth controlplane` will not
// serve its operations listener in plaintext on a wildcard address without
// --insecure.
func TestOpsListenRefusesPlaintextOffLoopback(t *testing.T) {
	priv, _ := keygen(t)
	out, err := exec.Command(binary, "controlplane", "--signing-key", priv, "--listen", "127.0.0.1:0", "--ops-listen", "0.0.0.0:0", "--etcd", "http://127.0.0.1:1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing to serve plaintext") {
		t.Errorf("controlplane --ops-listen 0.0.0.0:0 = %v %q; want refused", err, out)
	}
	out, err = exec.Command(binary, "controlplane", "--signing-key", priv, "--listen", "127.0.0.1:0", "--pprof", "--etcd", "http://127.0.0.1:1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--pprof needs --ops-listen") {
		t.Errorf("controlplane --pprof without --ops-listen = %v %q; want refused", err, out)
	}
}

// TestServersOpsListener runs `berth controlplane` and `berth executor`
// with --ops-listen: each names its listener in its ready line, is ready,
// and serves its own metrics (the etcd client's latency, the executor's
// registration); the control plane's pprof answers with --pprof.
func TestServersOpsListener(t *testing.T) {
	ep := startEtcd(t)
	priv, pub := keygen(t)
	cp := start(t, "controlplane", "controlplane", "--etcd", ep, "--signing-key", priv, "--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0", "--pprof")
	cpLine := cp.waitLine(30*time.Second, "listening line", listenRE.MatchString)
	cpAddr := listenRE.FindStringSubmatch(cpLine)[1]
	ctl(t, cpAddr, "group", "put", "group-1", "--capacity", "10")
	ex := start(t, "executor", "executor", "--etcd", ep, "--group", "group-1", "--id", "e1", "--token-public-key", pub, "--ops-listen", "127.0.0.1:0")
	exLine := ex.waitLine(30*time.Second, "listening line", listenRE.MatchString)
	hc := &http.Client{Timeout: 10 * time.Second}
	get := func(base, path string) (int, string) {
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s%s: %v", base, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tt := range []struct {
		name, line string
		ready      string
		metrics    []string
		pprof      int
	}{
		{"controlplane", cpLine, "controlplane: ready: in sync", []string{"berth_registry_cache_synced 1", `berth_etcd_request_duration_seconds_count{method="Range"}`, "grpc_server_handled_total"}, 200},
		{"executor", exLine, "executor e1: ready: registered", []string{`berth_executor_registered{executor="e1",group="group-1"} 1`, `berth_etcd_request_duration_seconds_count{method="LeaseGrant"}`}, 404},
	} {
		m := opsRE.FindStringSubmatch(tt.line)
		if m == nil || !strings.HasPrefix(m[1], "http://127.0.0.1:") {
			t.Fatalf("%s ready line %q: want ops=http://127.0.0.1:PORT", tt.name, tt.line)
		}
		testutil.WaitForEvery(t, 30*time.Second, pollEvery, tt.name+" ready", func() bool {
			code, body := get(m[1], "/readyz")
			return code == 200 && strings.Contains(body, tt.ready)
		})
		_, body := get(m[1], "/metrics")
		for _, want := range tt.metrics {
			if !strings.Contains(body, want) {
				t.Errorf("%s /metrics lacks %s", tt.name, want)
			}
		}
		if code, _ := get(m[1], "/debug/pprof/"); code != tt.pprof {
			t.Errorf("%s /debug/pprof/ = %d; want %d", tt.name, code, tt.pprof)
		}
	}
}
