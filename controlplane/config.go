package controlplane

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/berthproject/berth/registry"
)

// Config tunes a control plane.
type Config struct {
	// ReplicaID names this control plane replica in the assignment records
	// it writes. Unique per replica.
	ReplicaID string
	// TokenTTL is how long an assignment token is valid. A device calls
	// Assign again after that, so it bounds how long a stale decision lasts.
	TokenTTL time.Duration
	// TokenCacheSize bounds the devices whose last token is kept for reuse
	// (0 disables): a device assigned the same group, label and weight again
	// while its token has more than half its life left gets the same token,
	// without a new signature. About 400 bytes per device.
	TokenCacheSize int
	// LabelMemoSize bounds the devices whose label rules' outcome is kept
	// with the inputs it came from (0 disables): a device that asks again
	// with the same inputs under the same policy version skips the rules.
	// About 1.3 KB per device with a few attributes.
	LabelMemoSize int
	// ReservationGrace is the fallback for executors whose record does not
	// report admitted reservations (fleet.Executor.Admitted) and for other
	// replicas' records without a ticket: how long after a count was
	// observed a device sent there is still counted as pending (at least
	// the time from Assign to the device's Hello plus the executor's write
	// interval). Reservations on executors that report them end exactly
	// when a count includes them.
	ReservationGrace time.Duration
	// ReservationUnlisted ends a reservation its executor has not listed
	// (fleet.Executor.Admitted) once a count observed that long after it
	// was made: the device connected without giving its ticket back (an
	// SDK that does not), or elsewhere, or not at all. Devices that give
	// their ticket back are listed within the executor's write interval.
	ReservationUnlisted time.Duration
	// ReservationMaxAge forgets a reservation whose device never connected
	// (or never gave its ticket back).
	ReservationMaxAge time.Duration
	// MaxInFlight bounds concurrent Assigns; above it Assign sheds with
	// RESOURCE_EXHAUSTED and a retry hint of RetryAfter.
	MaxInFlight int
	// AdmitRate bounds the Assigns a second this replica answers (0: no
	// bound); above it, bursts of AdmitBurst aside, Assign sheds with
	// RESOURCE_EXHAUSTED and a retry hint spread over the time the backlog
	// needs at that rate (see admission). It protects etcd and the replica
	// in reconnect storms; set it to what the replica sustains for new
	// devices (`berth bench assign`).
	AdmitRate float64
	// AdmitBurst is the bucket size of AdmitRate.
	AdmitBurst int
	// RetryAfter is the retry hint given when shedding.
	RetryAfter time.Duration
	// WriteTimeout bounds the write of an assignment record.
	WriteTimeout time.Duration
	// KeepWriteTimeout bounds it instead (when shorter) for a known device
	// whose recorded group is still usable: if etcd does not answer in
	// time, the device goes back to its recorded group, which needs no
	// write, rather than wait.
	KeepWriteTimeout time.Duration
	// Reconnect are the backoff hints sent to devices.
	Reconnect Backoff
}

// Backoff are reconnect hints: gRPC's connection backoff parameters.
type Backoff struct {
	BaseDelay  time.Duration
	Multiplier float64
	Jitter     float64
	MaxDelay   time.Duration
}

// DefaultConfig returns the settings of `berth controlplane`.
func DefaultConfig() Config {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return Config{
		ReplicaID:           "cp-" + hex.EncodeToString(b[:]),
		TokenTTL:            15 * time.Minute,
		TokenCacheSize:      100_000,
		LabelMemoSize:       100_000,
		ReservationGrace:    time.Second,
		ReservationMaxAge:   30 * time.Second,
		ReservationUnlisted: 10 * time.Second,
		MaxInFlight:         4096,
		AdmitBurst:          1000,
		RetryAfter:          time.Second,
		WriteTimeout:        5 * time.Second,
		KeepWriteTimeout:    time.Second,
		// gRPC's own connection backoff defaults.
		Reconnect: Backoff{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 120 * time.Second},
	}
}

// Validate checks c.
func (c Config) Validate() error {
	var errs []error
	if !registry.ValidID(c.ReplicaID) {
		errs = append(errs, fmt.Errorf("replica id %q: want 1-128 of [A-Za-z0-9._:@-]", c.ReplicaID))
	}
	if c.TokenTTL < time.Second {
		errs = append(errs, fmt.Errorf("token TTL %v: want at least 1s", c.TokenTTL))
	}
	if c.ReservationUnlisted <= 0 {
		errs = append(errs, fmt.Errorf("reservation unlisted %v: want > 0", c.ReservationUnlisted))
	}
	if c.ReservationGrace < 0 || c.ReservationMaxAge <= c.ReservationGrace {
		errs = append(errs, fmt.Errorf("reservation grace %v and max age %v: want 0 <= grace < max age", c.ReservationGrace, c.ReservationMaxAge))
	}
	if c.LabelMemoSize < 0 {
		errs = append(errs, fmt.Errorf("label memo size %d: want >= 0", c.LabelMemoSize))
	}
	if c.TokenCacheSize < 0 {
		errs = append(errs, fmt.Errorf("token cache size %d: want >= 0", c.TokenCacheSize))
	}
	if c.AdmitRate < 0 || c.AdmitRate > 0 && c.AdmitBurst < 1 {
		errs = append(errs, fmt.Errorf("admit rate %g, burst %d: want rate >= 0 and, with a rate, burst >= 1", c.AdmitRate, c.AdmitBurst))
	}
	if c.MaxInFlight <= 0 {
		errs = append(errs, fmt.Errorf("max in flight %d: want > 0", c.MaxInFlight))
	}
	if c.WriteTimeout <= 0 || c.KeepWriteTimeout <= 0 {
		errs = append(errs, fmt.Errorf("write timeouts %v, %v (keep): want > 0", c.WriteTimeout, c.KeepWriteTimeout))
	}
	b := c.Reconnect
	if b.BaseDelay <= 0 || b.MaxDelay < b.BaseDelay || b.Multiplier < 1 || b.Jitter < 0 || b.Jitter > 1 {
		errs = append(errs, fmt.Errorf("reconnect backoff %+v: want 0 < base <= max, multiplier >= 1, 0 <= jitter <= 1", b))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("controlplane: invalid config: %w", err)
	}
	return nil
}
