// Package ops serves a process's operations HTTP listener: /metrics (the
// process's Prometheus registry, text format), /healthz (liveness: the
// process answers), /readyz (readiness: every registered check is ready;
// the body says what each check sees, a degraded state included) and, only
// when configured, /debug/pprof/*. A server may add handlers of its own
// (Handle): a control plane replica's fleet page.
//
// The listener serves read-only data and takes no input beyond the path
// and the query of pprof. Who may reach it is decided by where it listens:
// plaintext is refused off loopback unless the operator says --insecure,
// and with a server TLS configuration it serves HTTPS with it (the one the
// gRPC listener uses). Its HTTP server is bounded: header and body read
// timeouts, a write timeout, an idle timeout and a header size limit.
package ops

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berthproject/berth/internal/tlsfiles"
)

// Config tunes the operations listener.
type Config struct {
	// Addr is where it listens ("127.0.0.1:0" picks a free port); empty:
	// no listener.
	Addr string
	// TLS, when set, serves HTTPS with it (client certificates are
	// requested as the gRPC listener does, never required). Nil serves
	// plaintext, refused off loopback unless Insecure.
	TLS *tls.Config
	// Insecure allows plaintext on a non-loopback address.
	Insecure bool
	// Pprof serves /debug/pprof/* (off by default: profiles show code
	// paths and cost CPU while taken).
	Pprof bool
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout bound
	// each connection; with Pprof on, WriteTimeout is raised to
	// PprofWriteTimeout so a 30 s CPU profile fits.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header.
	MaxHeaderBytes int
	// StopTimeout bounds the graceful shutdown.
	StopTimeout time.Duration
}

// PprofWriteTimeout is the write timeout while pprof is served.
const PprofWriteTimeout = 2 * time.Minute

// DefaultConfig returns the bounds every berth server uses; Addr is empty
// (no listener).
func DefaultConfig() Config {
	return Config{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		StopTimeout:       5 * time.Second,
	}
}

// Check reports whether one part of the process is ready and, in a few
// words, what it sees ("in sync at revision 42", "degraded: …").
type Check func() (ready bool, detail string)

// Server is the operations listener. Build it with New, add checks, then
// Run it.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux

	mu     sync.Mutex
	names  []string
	checks map[string]Check
}

// New builds the listener's handlers over g (the process's registry). It
// does no I/O.
func New(cfg Config, g prometheus.Gatherer, log *slog.Logger) (*Server, error) {
	if g == nil {
		return nil, errors.New("ops: a gatherer is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, mux: http.NewServeMux(), checks: map[string]Check{}}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:            slogErrorLog{log},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if cfg.Pprof {
		s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		s.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return s, nil
}

// AddCheck adds a readiness check under name (a server: "controlplane",
// "executor group-1-exec-1"). A name given twice replaces its check.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.checks[name]; !ok {
		s.names = append(s.names, name)
	}
	s.checks[name] = c
}

// Ready runs the checks: ready when every one is (and there is at least
// one), with one line per check.
func (s *Server) Ready() (bool, []string) {
	s.mu.Lock()
	names := append([]string(nil), s.names...)
	checks := make([]Check, len(names))
	for i, n := range names {
		checks[i] = s.checks[n]
	}
	s.mu.Unlock()
	if len(names) == 0 {
		return false, []string{"starting: nothing to check yet"}
	}
	ready := true
	lines := make([]string, len(names))
	for i, c := range checks {
		ok, detail := c()
		state := "ready"
		if !ok {
			state, ready = "not ready", false
		}
		lines[i] = fmt.Sprintf("%s: %s: %s", names[i], state, detail)
	}
	return ready, lines
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, lines := s.Ready()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}

// Handle serves h for pattern (a net/http ServeMux pattern) on the
// listener, next to /metrics and the health endpoints: a replica's fleet
// page (/fleet/). It must be called before Run; h decides who may see it.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
}

// Handler returns the listener's handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.mux }

// Listen opens the listener of cfg: a TCP listener on cfg.Addr, refused
// for plaintext off loopback unless cfg.Insecure (as the gRPC listeners
// decide, tlsfiles.CheckPlaintext).
func Listen(cfg Config) (net.Listener, error) {
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("ops: listen %s: %w", cfg.Addr, err)
	}
	if cfg.TLS == nil {
		if err := tlsfiles.CheckPlaintext(lis.Addr(), cfg.Insecure); err != nil {
			lis.Close()
			return nil, fmt.Errorf("ops: refusing to serve plaintext on %s, which is not a loopback address: configure TLS, or allow it with --insecure", lis.Addr())
		}
	}
	return lis, nil
}

// Run serves on lis until ctx is cancelled, then shuts down within
// StopTimeout and returns nil. Run closes lis.
func (s *Server) Run(ctx context.Context, lis net.Listener) error {
	cfg := s.cfg
	wt := cfg.WriteTimeout
	if cfg.Pprof && wt < PprofWriteTimeout {
		wt = PprofWriteTimeout
	}
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      wt,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slogErrorLog{s.log}.logger(),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if cfg.TLS != nil {
		lis = tls.NewListener(lis, httpTLS(cfg.TLS))
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("ops: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.StopTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("ops: serve: %w", err)
	}
	return nil
}

// httpProtos are the ALPN protocols of the HTTPS listener.
var httpProtos = []string{"h2", "http/1.1"}

// httpTLS adapts a gRPC server's TLS configuration (ALPN "h2" only) to
// HTTP: HTTP/1.1 clients (curl --http1.1, scrapers) are served too. The
// certificate, its reloading and client certificate checks stay the
// configuration's own.
func httpTLS(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.NextProtos = httpProtos
	if get := base.GetConfigForClient; get != nil {
		c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			cc, err := get(hello)
			if err != nil || cc == nil {
				return cc, err
			}
			cc = cc.Clone()
			cc.NextProtos = httpProtos
			return cc, nil
		}
	}
	return c
}

// slogErrorLog writes promhttp's and net/http's errors to a slog.Logger at
// warn level.
type slogErrorLog struct{ log *slog.Logger }

// Println implements promhttp.Logger.
func (l slogErrorLog) Println(v ...any) { l.log.Warn("ops: " + strings.TrimSpace(fmt.Sprintln(v...))) }

func (l slogErrorLog) logger() *stdlog.Logger {
	return slog.NewLogLogger(l.log.Handler(), slog.LevelWarn)
}
