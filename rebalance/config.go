package rebalance

import (
	"errors"
	"fmt"
	"time"

	"github.com/berthproject/berth/registry"
)

// Config tunes a Rebalancer.
type Config struct {
	// ReplicaID names this control plane replica: its candidacy in the
	// election, and (as "rebalancer@" + ReplicaID) the writer of the
	// assignment records of the devices it moves.
	ReplicaID string
	// Rate is the most moves per second, cluster wide (only the leader
	// moves).
	Rate float64
	// Thresholds bound the balance between the groups of a pool.
	Thresholds Thresholds
	// MinInterval is how long a moved device is left where it went.
	MinInterval time.Duration
	// Interval is how often the leader plans, and stores its state.
	Interval time.Duration
	// MoveTimeout is how long a move may take before it counts as failed:
	// from the Move call until the device's presence names another
	// executor.
	MoveTimeout time.Duration
	// MaxInFlight bounds the moves asked for and not yet confirmed.
	MaxInFlight int
	// MaxReconnectRate holds moves while more devices than this connect
	// per second (over the last few seconds) without being moved: a storm
	// is under way, or executors are failing.
	MaxReconnectRate float64
	// EtcdSlow holds moves while an etcd round trip of the leader takes
	// longer.
	EtcdSlow time.Duration
	// HoldFor is how long a hold lasts after its cause was last seen.
	HoldFor time.Duration
	// LeaseTTL is the leadership's lease: how long a dead leader blocks
	// its successor.
	LeaseTTL time.Duration
	// RedirectSpread is the max_delay of each Redirect: devices wait a
	// random part of it before they go (0: at once; the rate already
	// spreads them).
	RedirectSpread time.Duration
	// TokenTTL is the life of the tokens a Redirect carries.
	TokenTTL time.Duration
	// CallTimeout bounds each etcd write and each Move call.
	CallTimeout time.Duration
}

// DefaultConfig returns the settings of `berth controlplane`.
func DefaultConfig() Config {
	return Config{
		Rate:             50,
		Thresholds:       Thresholds{Rel: 0.1, Abs: 100},
		MinInterval:      10 * time.Minute,
		Interval:         time.Second,
		MoveTimeout:      10 * time.Second,
		MaxInFlight:      500,
		MaxReconnectRate: 200,
		EtcdSlow:         time.Second,
		HoldFor:          5 * time.Second,
		LeaseTTL:         5 * time.Second,
		TokenTTL:         15 * time.Minute,
		CallTimeout:      5 * time.Second,
	}
}

// Validate checks c.
func (c Config) Validate() error {
	var errs []error
	if !registry.ValidID(c.ReplicaID) {
		errs = append(errs, fmt.Errorf("replica id %q: want 1-128 of [A-Za-z0-9._:@-]", c.ReplicaID))
	}
	if c.Rate <= 0 {
		errs = append(errs, fmt.Errorf("rate %v: want > 0 moves per second", c.Rate))
	}
	if c.Thresholds.Rel < 0 || c.Thresholds.Abs < 0 || (c.Thresholds.Rel == 0 && c.Thresholds.Abs < 1) {
		errs = append(errs, fmt.Errorf("thresholds %+v: want rel >= 0 and abs >= 0, not both below one device", c.Thresholds))
	}
	if c.MinInterval < 0 {
		errs = append(errs, fmt.Errorf("min interval %v: want >= 0", c.MinInterval))
	}
	if c.Interval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("interval %v: want at least 10ms", c.Interval))
	}
	if c.MoveTimeout <= 0 || c.CallTimeout <= 0 || c.EtcdSlow <= 0 || c.HoldFor < 0 {
		errs = append(errs, errors.New("move timeout, call timeout and etcd slow must be positive, hold for not negative"))
	}
	if c.MaxInFlight <= 0 || c.MaxReconnectRate <= 0 {
		errs = append(errs, fmt.Errorf("max in flight %d and max reconnect rate %v: want > 0", c.MaxInFlight, c.MaxReconnectRate))
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("lease TTL %v: want at least 1s", c.LeaseTTL))
	}
	if c.RedirectSpread < 0 || c.TokenTTL < time.Minute {
		errs = append(errs, fmt.Errorf("redirect spread %v and token TTL %v: want spread >= 0, TTL >= 1m", c.RedirectSpread, c.TokenTTL))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rebalance: invalid config: %w", err)
	}
	return nil
}

// settings are c as the state shows them.
func (c Config) settings() registry.RebalanceSettings {
	return registry.RebalanceSettings{RateLimit: c.Rate, RelThreshold: c.Thresholds.Rel, AbsThreshold: int(c.Thresholds.Abs), MinIntervalSeconds: c.MinInterval.Seconds()}
}
