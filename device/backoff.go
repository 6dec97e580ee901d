package device

import (
	"errors"
	"time"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/status"
)

// backoffDelay returns how long to wait before attempt number retries+1,
// following gRPC's connection backoff: BaseDelay * Multiplier^retries, capped
// at MaxDelay, then spread by ±Jitter. rnd returns a number in [0, 1); it is
// a parameter so that tests can fix it.
func backoffDelay(cfg backoff.Config, retries int, rnd func() float64) time.Duration {
	d, limit := float64(cfg.BaseDelay), float64(cfg.MaxDelay)
	for ; d < limit && retries > 0; retries-- {
		d *= cfg.Multiplier
	}
	if d > limit {
		d = limit
	}
	return jitter(time.Duration(d), cfg.Jitter, rnd)
}

// jitter spreads d by ±j (a fraction), using rnd in [0, 1).
func jitter(d time.Duration, j float64, rnd func() float64) time.Duration {
	f := float64(d) * (1 + j*(rnd()*2-1))
	if f < 0 {
		return 0
	}
	return time.Duration(f)
}

// applyHints returns base with the fields that h sets replaced, or base
// unchanged when h is nil or the result would not be a sane backoff.
func applyHints(base backoff.Config, h *controlplanev1.ReconnectHints) backoff.Config {
	if h == nil {
		return base
	}
	c := base
	if h.GetBaseDelay() != nil {
		c.BaseDelay = h.GetBaseDelay().AsDuration()
	}
	if h.GetMultiplier() != 0 {
		c.Multiplier = h.GetMultiplier()
	}
	if h.GetJitter() != 0 {
		c.Jitter = h.GetJitter()
	}
	if h.GetMaxDelay() != nil {
		c.MaxDelay = h.GetMaxDelay().AsDuration()
	}
	if validBackoff(c) != nil {
		return base
	}
	return c
}

// retryDelay returns the RetryInfo delay a server attached to err's status,
// or zero when there is none.
func retryDelay(err error) time.Duration {
	if err == nil {
		return 0
	}
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return 0
	}
	for _, d := range se.GRPCStatus().Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return max(ri.GetRetryDelay().AsDuration(), 0)
		}
	}
	return 0
}
