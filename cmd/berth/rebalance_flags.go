package main

import (
	"github.com/spf13/pflag"

	"github.com/berthproject/berth/rebalance"
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

// config is the rebalancer's config of a replica: nil when it is off.
func (r *rebalanceFlags) config() *rebalance.Config {
	if !r.on {
		return nil
	}
	c := r.cfg
	return &c
}
