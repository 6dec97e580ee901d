package main

import (
	"context"
	"log/slog"
	"net"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/berthproject/berth/controlplane"
	"github.com/berthproject/berth/execclient"
	"github.com/berthproject/berth/rebalance"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// rebalanceFlags are the rebalancer's flags of `berth controlplane` and
// `berth dev`.
type rebalanceFlags struct {
	on  bool
	cfg rebalance.Config
}

func (r *rebalanceFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&r.on, "rebalance", r.on, "run the rebalancer (one replica leads it at a time) that moves connected devices off drained groups and executors, after policy changes, and between unbalanced groups")
	f.Float64Var(&r.cfg.Rate, "rebalance-rate", r.cfg.Rate, "most device moves per second, cluster wide")
	f.Float64Var(&r.cfg.Thresholds.Rel, "rebalance-rel-threshold", r.cfg.Thresholds.Rel, "a group is out of balance when its connections differ from its fair share by more than this fraction of it...")
	f.Float64Var(&r.cfg.Thresholds.Abs, "rebalance-abs-threshold", r.cfg.Thresholds.Abs, "...and by more than this many devices")
	f.DurationVar(&r.cfg.MinInterval, "rebalance-min-interval", r.cfg.MinInterval, "a moved device is not moved again within this interval")
	f.DurationVar(&r.cfg.Interval, "rebalance-interval", r.cfg.Interval, "how often the leader plans and stores its state")
	f.Float64Var(&r.cfg.MaxReconnectRate, "rebalance-max-reconnect-rate", r.cfg.MaxReconnectRate, "hold moves while more devices than this connect per second besides the moves")
	f.DurationVar(&r.cfg.RedirectSpread, "rebalance-redirect-spread", r.cfg.RedirectSpread, "max_delay of each move's Redirect")
	f.DurationVar(&r.cfg.LeaseTTL, "rebalance-lease-ttl", r.cfg.LeaseTTL, "lease of the rebalancer's leadership: how long a dead leader blocks the next")
}

// serveWithRebalancer runs srv on lis and, when on, the rebalancer next to
// it, until ctx is cancelled.
func (r *rebalanceFlags) serve(ctx context.Context, srv *controlplane.Server, lis net.Listener, replica string,
	reg *registry.Registry, cache *registry.Cache, signer *token.Signer, log *slog.Logger,
) error {
	if !r.on {
		return srv.Run(ctx, lis)
	}
	cfg := r.cfg
	cfg.ReplicaID = replica
	pcfg := execclient.DefaultConfig()
	pcfg.Subject = replica
	pool, err := execclient.New(pcfg, execclient.Deps{Signer: signer, Executors: cache, Log: log})
	if err != nil {
		lis.Close()
		return err
	}
	defer pool.Close()
	rb, err := rebalance.New(cfg, reg, cache, signer, rebalance.NewGRPCMover(pool), log.With("component", "rebalancer"))
	if err != nil {
		lis.Close()
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx, lis) })
	g.Go(func() error { return rb.Run(ctx) })
	return g.Wait()
}
