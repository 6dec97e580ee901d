package ops_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthproject/berth/internal/ops"
	"github.com/berthproject/berth/internal/tlsfiles"
	"github.com/berthproject/berth/pki"
)

// registry is a registry with one counter, so /metrics has a known line.
func registry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_test_total", Help: "A test counter."})
	c.Add(3)
	reg.MustRegister(c)
	return reg
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestEndpoints(t *testing.T) {
	srv, err := ops.New(ops.DefaultConfig(), registry(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.AddCheck("controlplane", func() (bool, string) { return true, "in sync" })
	h := srv.Handler()
	tests := []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/metrics", 200, "berth_test_total 3"},
		{"/healthz", 200, "ok"},
		{"/readyz", 200, "controlplane: ready: in sync"},
		{"/debug/pprof/", 404, ""},
		{"/debug/pprof/cmdline", 404, ""},
		{"/nothing", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body := get(t, h, tt.path)
			if code != tt.wantCode || !strings.Contains(body, tt.wantBody) {
				t.Errorf("GET %s = %d %q; want %d containing %q", tt.path, code, body, tt.wantCode, tt.wantBody)
			}
		})
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/metrics", strings.NewReader("x")))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics = %d; want 405: the listener is read-only", rec.Code)
	}
}

func TestPprofOnlyWhenAsked(t *testing.T) {
	cfg := ops.DefaultConfig()
	cfg.Pprof = true
	srv, err := ops.New(cfg, registry(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
		if code, body := get(t, srv.Handler(), p); code != 200 || body == "" {
			t.Errorf("GET %s with pprof on = %d (%d bytes); want 200 with a body", p, code, len(body))
		}
	}
}

// TestReadinessFlips follows a fake cache through its states: loading,
// in sync, degraded (etcd unreachable), in sync again, stopping.
func TestReadinessFlips(t *testing.T) {
	srv, err := ops.New(ops.DefaultConfig(), registry(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, srv.Handler(), "/readyz"); code != 503 || !strings.Contains(body, "starting") {
		t.Errorf("/readyz without checks = %d %q; want 503, starting", code, body)
	}
	type state struct {
		ready  bool
		detail string
	}
	var cache atomic.Pointer[state]
	srv.AddCheck("controlplane", func() (bool, string) { s := cache.Load(); return s.ready, s.detail })
	srv.AddCheck("executor e1", func() (bool, string) { return true, "registered" })
	steps := []struct {
		s        state
		wantCode int
		want     string
	}{
		{state{false, "starting: loading the registry cache"}, 503, "controlplane: not ready: starting"},
		{state{true, "in sync with etcd at revision 7"}, 200, "controlplane: ready: in sync"},
		{state{false, "degraded: etcd unreachable, serving the last snapshot (revision 7)"}, 503, "controlplane: not ready: degraded: etcd unreachable"},
		{state{true, "in sync with etcd at revision 9"}, 200, "revision 9"},
		{state{false, "stopping"}, 503, "controlplane: not ready: stopping"},
	}
	for _, st := range steps {
		cache.Store(&st.s)
		code, body := get(t, srv.Handler(), "/readyz")
		if code != st.wantCode || !strings.Contains(body, st.want) || !strings.Contains(body, "executor e1: ready: registered") {
			t.Errorf("/readyz with %+v = %d %q; want %d containing %q and the executor's line", st.s, code, body, st.wantCode, st.want)
		}
	}
}

func TestListenRefusesPlaintextOffLoopback(t *testing.T) {
	cfg := ops.DefaultConfig()
	cfg.Addr = "0.0.0.0:0"
	if lis, err := ops.Listen(cfg); err == nil {
		lis.Close()
		t.Fatal("plaintext on 0.0.0.0 accepted without Insecure")
	}
	cfg.Insecure = true
	lis, err := ops.Listen(cfg)
	if err != nil {
		t.Fatalf("plaintext on 0.0.0.0 with Insecure: %v", err)
	}
	lis.Close()
	cfg = ops.DefaultConfig()
	cfg.Addr, cfg.TLS = "0.0.0.0:0", &tls.Config{MinVersion: tls.VersionTLS13}
	lis, err = ops.Listen(cfg)
	if err != nil {
		t.Fatalf("TLS on 0.0.0.0: %v", err)
	}
	lis.Close()
}

// run serves srv on a loopback listener until the test ends.
func run(t *testing.T, srv *ops.Server, cfg ops.Config) string {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	lis, err := ops.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v; want nil after cancel", err)
		}
	})
	return lis.Addr().String()
}

func TestRunPlaintext(t *testing.T) {
	cfg := ops.DefaultConfig()
	srv, err := ops.New(cfg, registry(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := run(t, srv, cfg)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "berth_test_total 3") {
		t.Errorf("GET /metrics = %d %q", resp.StatusCode, b)
	}
}

// TestRunTLS serves with a gRPC server's TLS configuration (ALPN h2 only,
// client certificates verified when given): HTTP/1.1 and HTTP/2 clients
// are both served.
func TestRunTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.IssueServer([]string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "s.pem"), filepath.Join(dir, "s-key.pem")
	if err := ca.Write(caFile, filepath.Join(dir, "ca-key.pem"), false); err != nil {
		t.Fatal(err)
	}
	if err := sc.Write(certFile, keyFile, false); err != nil {
		t.Fatal(err)
	}
	tc, err := tlsfiles.ServerConfig(tlsfiles.ServerFiles{Cert: certFile, Key: keyFile, ClientCA: caFile}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ops.DefaultConfig()
	cfg.TLS = tc
	srv, err := ops.New(cfg, registry(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.AddCheck("x", func() (bool, string) { return true, "fine" })
	addr := run(t, srv, cfg)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, ForceAttemptHTTP2: h2, DisableKeepAlives: true}
		if !h2 {
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		resp, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/readyz")
		if err != nil {
			t.Fatalf("h2=%v: %v", h2, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "x: ready: fine") {
			t.Errorf("h2=%v: GET /readyz = %d %q", h2, resp.StatusCode, b)
		}
		if h2 && resp.ProtoMajor != 2 {
			t.Errorf("h2 client served over %s", resp.Proto)
		}
		tr.CloseIdleConnections()
	}
	// net/http answers a plaintext request on a TLS listener with 400.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := c.Get("http://" + addr + "/readyz"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(b), "ready") {
			t.Errorf("plaintext GET on the TLS listener = %d %q; want 400", resp.StatusCode, b)
		}
	}
}
