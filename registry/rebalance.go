package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The rebalancer's keys. Its state is written only by its leader, fenced by
// the leadership; the pause by operators; the migrate mark with the policy
// it belongs to, in the same transaction.
const (
	rebalanceStateKey   = "/rebalance/state"
	rebalancePauseKey   = "/rebalance/pause"
	rebalanceMigrateKey = "/rebalance/migrate"
)

// RebalanceElection is the name of the rebalancer's election.
const RebalanceElection = "rebalancer"

// RebalanceState is what the rebalancer's leader last stored: its plan,
// progress and limits. A new leader reads it to carry the progress on.
type RebalanceState struct {
	// Leader is the control plane replica that stored it.
	Leader string `json:"leader"`
	// Term is the leadership's revision (grows with each new leader).
	Term int64 `json:"term"`
	// UpdatedAt is when it was stored.
	UpdatedAt time.Time `json:"updated_at"`
	// Held says why the leader holds moves by itself ("" when it does not).
	Held string `json:"held,omitempty"`
	// Paused echoes the operator's pause as the leader saw it.
	Paused bool `json:"paused,omitempty"`
	// Plan is the last plan.
	Plan RebalancePlan `json:"plan"`
	// Progress is what was done since the current migration began.
	Progress RebalanceProgress `json:"progress"`
	// Settings are the leader's limits.
	Settings RebalanceSettings `json:"settings"`
	// Groups are every group as the plan saw it, by id.
	Groups []GroupBalance `json:"groups,omitempty"`
}

// RebalancePlan counts the devices to move now, by reason.
type RebalancePlan struct {
	// Total is Policy + Drain + Balance.
	Total int `json:"total"`
	// Policy counts devices whose group is no longer a candidate for them.
	Policy int `json:"policy"`
	// Drain counts devices on draining or disabled groups or drained
	// executors.
	Drain int `json:"drain"`
	// Balance counts devices to move off groups above their fair share.
	Balance int `json:"balance"`
	// BalanceMinimum is the fewest moves that bring every group within the
	// thresholds.
	BalanceMinimum int `json:"balance_minimum"`
	// Waiting counts devices that must move but wait (minimum interval,
	// move in flight).
	Waiting int `json:"waiting"`
	// Unmigrated counts devices whose label changed under a policy applied
	// without migrate.
	Unmigrated int `json:"unmigrated"`
	// NoTarget counts devices that must move but have nowhere to go.
	NoTarget int `json:"no_target"`
	// PolicyVersion is the policy the plan was computed with.
	PolicyVersion int64 `json:"policy_version"`
	// ComputedAt is when.
	ComputedAt time.Time `json:"computed_at"`
}

// RebalanceProgress is the work of the current migration: from the first
// non-empty plan after an empty one.
type RebalanceProgress struct {
	// StartedAt is when the migration began (zero: none yet), FinishedAt
	// when it ended (zero while it is under way).
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Moved counts confirmed moves, Failed the others.
	Moved  int64 `json:"moved"`
	Failed int64 `json:"failed"`
	// InFlight counts moves asked for and not yet confirmed.
	InFlight int `json:"in_flight"`
	// Rate is moves per second over the last ten seconds.
	Rate float64 `json:"rate"`
	// ETASeconds is the time left for the plan at the rate limit.
	ETASeconds float64 `json:"eta_s"`
}

// RebalanceSettings are the rebalancer's limits.
type RebalanceSettings struct {
	// RateLimit is moves per second, cluster wide.
	RateLimit float64 `json:"rate_limit"`
	// RelThreshold and AbsThreshold bound a group's distance from its fair
	// share.
	RelThreshold float64 `json:"rel_threshold"`
	AbsThreshold int     `json:"abs_threshold"`
	// MinIntervalSeconds is how long a moved device is left alone.
	MinIntervalSeconds float64 `json:"min_interval_s"`
}

// GroupBalance is one group as a plan saw it.
type GroupBalance struct {
	ID    string     `json:"id"`
	State GroupState `json:"state"`
	// Connected counts devices present on it.
	Connected int `json:"connected"`
	// Fair is its fair share (0 when it takes no devices).
	Fair float64 `json:"fair"`
	// Capacity is its effective capacity.
	Capacity int `json:"capacity"`
}

// RebalancePause is an operator's pause of the rebalancer.
type RebalancePause struct {
	// By and Reason are free text, shown by status.
	By     string    `json:"by,omitempty"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// RebalanceControl is what operators decide for the rebalancer.
type RebalanceControl struct {
	// Pause is set while the rebalancer is paused.
	Pause *RebalancePause
	// MigrateVersion is the version of the policy applied with migrate (0:
	// none). The rebalancer migrates label changes only while it equals the
	// version in force.
	MigrateVersion int64
}

// RebalanceState reads the rebalancer's state; ErrNotFound when no leader
// ever stored one.
func (r *Registry) RebalanceState(ctx context.Context) (RebalanceState, error) {
	var st RebalanceState
	err := r.getJSON(ctx, r.prefix+rebalanceStateKey, &st)
	return st, err
}

// RebalanceControl reads the pause and the migrate mark in one round trip.
func (r *Registry) RebalanceControl(ctx context.Context) (RebalanceControl, error) {
	resp, err := r.cli.Txn(ctx).Then(
		clientv3.OpGet(r.prefix+rebalancePauseKey),
		clientv3.OpGet(r.prefix+rebalanceMigrateKey),
	).Commit()
	if err != nil {
		return RebalanceControl{}, fmt.Errorf("registry: read rebalance control: %w", err)
	}
	var c RebalanceControl
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		var p RebalancePause
		if err := json.Unmarshal(kvs[0].Value, &p); err != nil {
			// A pause that does not decode is still a pause.
			p = RebalancePause{Reason: "undecodable pause record"}
		}
		c.Pause = &p
	}
	if kvs := resp.Responses[1].GetResponseRange().GetKvs(); len(kvs) > 0 {
		c.MigrateVersion = kvs[0].ModRevision
	}
	return c, nil
}

// SetRebalancePause pauses the rebalancer (p non-nil) or resumes it.
func (r *Registry) SetRebalancePause(ctx context.Context, p *RebalancePause) error {
	if p == nil {
		if _, err := r.cli.Delete(ctx, r.prefix+rebalancePauseKey); err != nil {
			return fmt.Errorf("registry: resume rebalancer: %w", err)
		}
		return nil
	}
	return r.putJSON(ctx, r.prefix+rebalancePauseKey, p)
}

// migrateRecord is the value of the migrate mark.
type migrateRecord struct {
	By string    `json:"by,omitempty"`
	At time.Time `json:"at"`
}

// PutPolicyMigrating is PutPolicy that also sets (migrate) or clears the
// migrate mark in the same transaction, so that the mark's revision is the
// new policy's version.
func (r *Registry) PutPolicyMigrating(ctx context.Context, p StoredPolicy, basedOn int64, migrate bool) (int64, error) {
	mkey := r.prefix + rebalanceMigrateKey
	mark := clientv3.OpDelete(mkey)
	if migrate {
		mb, err := json.Marshal(migrateRecord{By: p.AppliedBy, At: p.AppliedAt})
		if err != nil {
			return 0, fmt.Errorf("registry: encode migrate mark: %w", err)
		}
		mark = clientv3.OpPut(mkey, string(mb))
	}
	return r.putPolicy(ctx, p, basedOn, mark)
}

// PutRebalanceState stores the rebalancer's state, fenced by l.
func (l *Leadership) PutRebalanceState(ctx context.Context, st RebalanceState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("registry: encode rebalance state: %w", err)
	}
	return l.fenced(ctx, clientv3.OpPut(l.reg.prefix+rebalanceStateKey, string(b)))
}

// PutAssignments writes assignment records in one transaction fenced by l
// (at most maxTxnOps of them).
func (l *Leadership) PutAssignments(ctx context.Context, as []Assignment) error {
	if len(as) > maxTxnOps {
		return fmt.Errorf("%w: %d assignment records in one transaction; at most %d", ErrInvalid, len(as), maxTxnOps)
	}
	ops := make([]clientv3.Op, 0, len(as))
	for _, a := range as {
		if err := a.Validate(); err != nil {
			return err
		}
		b, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("registry: encode assignment of %s: %w", a.DeviceID, err)
		}
		ops = append(ops, clientv3.OpPut(l.reg.assignmentKey(a.DeviceID), string(b)))
	}
	return l.fenced(ctx, ops...)
}
