package main

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/berthproject/berth/internal/metrics"
	"github.com/berthproject/berth/internal/ops"
)

// opsFlags are a server's operations listener flags.
type opsFlags struct {
	cfg ops.Config
}

func newOpsFlags() opsFlags { return opsFlags{cfg: ops.DefaultConfig()} }

// register adds --ops-listen and --pprof.
func (o *opsFlags) register(f *pflag.FlagSet) {
	f.StringVar(&o.cfg.Addr, "ops-listen", "", "address of the operations HTTP listener: /metrics, /healthz, /readyz (default: none); HTTPS with --tls-cert, plaintext only on loopback unless --insecure")
	f.BoolVar(&o.cfg.Pprof, "pprof", false, "also serve /debug/pprof/* on the operations listener")
}

// opsRun is a server's operations listener, opened; the zero value (no
// --ops-listen) serves nothing and has no metrics.
type opsRun struct {
	met *metrics.Metrics
	srv *ops.Server
	lis net.Listener
}

// open builds the process's metrics and opens the listener, serving TLS
// with tlsCfg (the gRPC listener's) when set; nothing without
// --ops-listen.
func (o *opsFlags) open(tlsCfg *tls.Config, insecure bool, log *slog.Logger) (*opsRun, error) {
	if o.cfg.Addr == "" {
		if o.cfg.Pprof {
			return nil, errors.New("--pprof needs --ops-listen")
		}
		return &opsRun{}, nil
	}
	cfg := o.cfg
	cfg.TLS, cfg.Insecure = tlsCfg, insecure
	met := metrics.New()
	srv, err := ops.New(cfg, met.Registry, log.With("component", "ops"))
	if err != nil {
		return nil, err
	}
	lis, err := ops.Listen(cfg)
	if err != nil {
		return nil, err
	}
	return &opsRun{met: met, srv: srv, lis: lis}, nil
}

// addCheck adds a readiness check, if there is a listener.
func (r *opsRun) addCheck(name string, c ops.Check) {
	if r.srv != nil {
		r.srv.AddCheck(name, c)
	}
}

// handle serves h for pattern on the listener, if there is one.
func (r *opsRun) handle(pattern string, h http.Handler) {
	if r.srv != nil {
		r.srv.Handle(pattern, h)
	}
}

// close closes the listener if it was not run.
func (r *opsRun) close() {
	if r.lis != nil {
		r.lis.Close()
	}
}

// readyField is the ready line's " ops=URL" part, empty without a listener.
func (r *opsRun) readyField(tlsCfg *tls.Config) string {
	if r.lis == nil {
		return ""
	}
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	return " ops=" + scheme + "://" + r.lis.Addr().String()
}

// run runs serve and the listener until serve returns; the listener stops
// then.
func (r *opsRun) run(ctx context.Context, serve func(context.Context) error) error {
	if r.srv == nil {
		return serve(ctx)
	}
	opsCtx, stop := context.WithCancel(ctx)
	var g errgroup.Group
	g.Go(func() error { return r.srv.Run(opsCtx, r.lis) })
	err := serve(ctx)
	stop()
	return errors.Join(err, g.Wait())
}
