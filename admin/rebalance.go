package admin

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthproject/berth/access"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/registry"
)

// RebalanceStore is what the rebalancing part of AdminService reads and
// writes. *registry.Registry implements it; a Server without one answers
// those calls UNIMPLEMENTED.
type RebalanceStore interface {
	RebalanceState(ctx context.Context) (registry.RebalanceState, error)
	RebalanceControl(ctx context.Context) (registry.RebalanceControl, error)
	SetRebalancePause(ctx context.Context, p *registry.RebalancePause) error
	SetGroupState(ctx context.Context, id string, state registry.GroupState) (registry.Group, error)
	PutExecutorDrain(ctx context.Context, d registry.ExecutorDrain) error
	DeleteExecutorDrain(ctx context.Context, id string) (bool, error)
	Leader(ctx context.Context, election string) (string, error)
}

// PolicyMigrator stores a policy together with its migrate mark.
// *registry.Registry implements it.
type PolicyMigrator interface {
	PutPolicyMigrating(ctx context.Context, p registry.StoredPolicy, basedOn int64, migrate bool) (int64, error)
}

var (
	_ RebalanceStore = (*registry.Registry)(nil)
	_ PolicyMigrator = (*registry.Registry)(nil)
)

// migratingStore is a PolicyStore that sets or clears the migrate mark with
// every policy it stores.
type migratingStore struct {
	s       PolicyMigrator
	migrate bool
}

// PutPolicy implements PolicyStore.
func (m migratingStore) PutPolicy(ctx context.Context, p registry.StoredPolicy, basedOn int64) (int64, error) {
	return m.s.PutPolicyMigrating(ctx, p, basedOn, m.migrate)
}

// ApplyPolicyMigrating is ApplyPolicy that also says whether the rebalancer
// moves the connected devices whose label the policy changes (migrate), or
// leaves them until they reconnect.
func ApplyPolicyMigrating(ctx context.Context, store PolicyMigrator, snap *registry.Snapshot, doc []byte, basedOn int64, by string, now time.Time, migrate bool) (int64, []string, error) {
	return ApplyPolicy(ctx, migratingStore{s: store, migrate: migrate}, snap, doc, basedOn, by, now)
}

// policyStoreFor is the store ApplyPolicy uses for a request: one that
// keeps the migrate mark in step when the store can.
func (a *Server) policyStoreFor(migrate bool) (PolicyStore, error) {
	if pm, ok := a.store.(PolicyMigrator); ok {
		return migratingStore{s: pm, migrate: migrate}, nil
	}
	if migrate {
		return nil, status.Error(codes.Unimplemented, "this control plane cannot store a policy with migrate")
	}
	return a.store, nil
}

// migrating reports whether the policy of version v was applied with
// migrate (false when it cannot tell).
func (a *Server) migrating(ctx context.Context, v int64) bool {
	if a.rebalance == nil {
		return false
	}
	c, err := a.rebalance.RebalanceControl(ctx)
	return err == nil && c.MigrateVersion != 0 && c.MigrateVersion == v
}

func (a *Server) rebalanceStore() (RebalanceStore, error) {
	if a.rebalance == nil {
		return nil, status.Error(codes.Unimplemented, "this control plane has no rebalancer store")
	}
	return a.rebalance, nil
}

// DrainGroup implements AdminService.DrainGroup.
func (a *Server) DrainGroup(ctx context.Context, req *adminv1.DrainGroupRequest) (*adminv1.DrainGroupResponse, error) {
	g, err := a.setGroupState(ctx, req.GetGroupId(), registry.GroupDraining)
	if err != nil {
		return nil, err
	}
	a.log.Info("group draining", "group", g.ID)
	return &adminv1.DrainGroupResponse{State: string(g.State)}, nil
}

// UndrainGroup implements AdminService.UndrainGroup.
func (a *Server) UndrainGroup(ctx context.Context, req *adminv1.UndrainGroupRequest) (*adminv1.UndrainGroupResponse, error) {
	g, err := a.setGroupState(ctx, req.GetGroupId(), registry.GroupActive)
	if err != nil {
		return nil, err
	}
	a.log.Info("group active again", "group", g.ID)
	return &adminv1.UndrainGroupResponse{State: string(g.State)}, nil
}

func (a *Server) setGroupState(ctx context.Context, id string, st registry.GroupState) (registry.Group, error) {
	if !registry.ValidID(id) {
		return registry.Group{}, status.Errorf(codes.InvalidArgument, "group_id %q: want 1-128 of [A-Za-z0-9._:@-]", id)
	}
	rs, err := a.rebalanceStore()
	if err != nil {
		return registry.Group{}, err
	}
	g, err := rs.SetGroupState(ctx, id, st)
	if err != nil {
		return registry.Group{}, rebalanceStatus(err, "group "+id)
	}
	return g, nil
}

// DrainExecutor implements AdminService.DrainExecutor.
func (a *Server) DrainExecutor(ctx context.Context, req *adminv1.DrainExecutorRequest) (*adminv1.DrainExecutorResponse, error) {
	id := req.GetExecutorId()
	if !registry.ValidID(id) {
		return nil, status.Errorf(codes.InvalidArgument, "executor_id %q: want 1-128 of [A-Za-z0-9._:@-]", id)
	}
	rs, err := a.rebalanceStore()
	if err != nil {
		return nil, err
	}
	_, registered := a.cache.Snapshot().Executors[id]
	if !registered && !req.GetAllowUnregistered() {
		return nil, status.Errorf(codes.NotFound, "executor %s is not registered (allow_unregistered marks one about to start)", id)
	}
	if err := rs.PutExecutorDrain(ctx, registry.ExecutorDrain{ExecutorID: id, By: access.Who(ctx, req.GetDrainedBy()), At: a.now().UTC()}); err != nil {
		return nil, rebalanceStatus(err, "executor "+id)
	}
	a.log.Info("executor drain mark set", "executor", id, "by", access.Who(ctx, req.GetDrainedBy()), "registered", registered)
	return &adminv1.DrainExecutorResponse{Registered: registered}, nil
}

// UndrainExecutor implements AdminService.UndrainExecutor.
func (a *Server) UndrainExecutor(ctx context.Context, req *adminv1.UndrainExecutorRequest) (*adminv1.UndrainExecutorResponse, error) {
	id := req.GetExecutorId()
	if !registry.ValidID(id) {
		return nil, status.Errorf(codes.InvalidArgument, "executor_id %q: want 1-128 of [A-Za-z0-9._:@-]", id)
	}
	rs, err := a.rebalanceStore()
	if err != nil {
		return nil, err
	}
	was, err := rs.DeleteExecutorDrain(ctx, id)
	if err != nil {
		return nil, rebalanceStatus(err, "executor "+id)
	}
	return &adminv1.UndrainExecutorResponse{WasDrained: was}, nil
}

// GetRebalanceStatus implements AdminService.GetRebalanceStatus.
func (a *Server) GetRebalanceStatus(ctx context.Context, _ *adminv1.GetRebalanceStatusRequest) (*adminv1.GetRebalanceStatusResponse, error) {
	rs, err := a.rebalanceStore()
	if err != nil {
		return nil, err
	}
	resp, err := RebalanceStatus(ctx, rs)
	if err != nil {
		return nil, rebalanceStatus(err, "rebalancer state")
	}
	return resp, nil
}

// PauseRebalance implements AdminService.PauseRebalance.
func (a *Server) PauseRebalance(ctx context.Context, req *adminv1.PauseRebalanceRequest) (*adminv1.PauseRebalanceResponse, error) {
	if len(req.GetPausedBy()) > 256 || len(req.GetReason()) > 1024 {
		return nil, status.Error(codes.InvalidArgument, "paused_by is at most 256 bytes, reason at most 1024")
	}
	rs, err := a.rebalanceStore()
	if err != nil {
		return nil, err
	}
	if err := rs.SetRebalancePause(ctx, &registry.RebalancePause{By: access.Who(ctx, req.GetPausedBy()), Reason: req.GetReason(), At: a.now().UTC()}); err != nil {
		return nil, rebalanceStatus(err, "pause")
	}
	a.log.Info("rebalancer paused", "by", access.Who(ctx, req.GetPausedBy()), "reason", req.GetReason())
	return &adminv1.PauseRebalanceResponse{}, nil
}

// ResumeRebalance implements AdminService.ResumeRebalance.
func (a *Server) ResumeRebalance(ctx context.Context, _ *adminv1.ResumeRebalanceRequest) (*adminv1.ResumeRebalanceResponse, error) {
	rs, err := a.rebalanceStore()
	if err != nil {
		return nil, err
	}
	if err := rs.SetRebalancePause(ctx, nil); err != nil {
		return nil, rebalanceStatus(err, "resume")
	}
	a.log.Info("rebalancer resumed")
	return &adminv1.ResumeRebalanceResponse{}, nil
}

// RebalanceStatus reads the rebalancer's state, pause and leader. A state
// never stored reads as empty.
func RebalanceStatus(ctx context.Context, rs RebalanceStore) (*adminv1.GetRebalanceStatusResponse, error) {
	st, err := rs.RebalanceState(ctx)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return nil, err
	}
	c, err := rs.RebalanceControl(ctx)
	if err != nil {
		return nil, err
	}
	leader, err := rs.Leader(ctx, registry.RebalanceElection)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return nil, err
	}
	out := &adminv1.GetRebalanceStatusResponse{
		Leader: leader,
		Held:   st.Held,
		Plan: &adminv1.RebalancePlan{
			Total: int64(st.Plan.Total), Policy: int64(st.Plan.Policy), Drain: int64(st.Plan.Drain), Balance: int64(st.Plan.Balance),
			Waiting: int64(st.Plan.Waiting), Unmigrated: int64(st.Plan.Unmigrated), PolicyVersion: st.Plan.PolicyVersion,
			ComputedAt: optTime(st.Plan.ComputedAt),
		},
		Progress: &adminv1.RebalanceProgress{
			StartedAt: optTime(st.Progress.StartedAt), FinishedAt: optTime(st.Progress.FinishedAt),
			Moved: st.Progress.Moved, Failed: st.Progress.Failed, InFlight: int64(st.Progress.InFlight), Rate: st.Progress.Rate,
			Eta: durationpb.New(time.Duration(st.Progress.ETASeconds * float64(time.Second))),
		},
		Settings: &adminv1.RebalanceSettings{
			RateLimit: st.Settings.RateLimit, RelativeThreshold: st.Settings.RelThreshold, AbsoluteThreshold: int64(st.Settings.AbsThreshold),
			MinInterval: durationpb.New(time.Duration(st.Settings.MinIntervalSeconds * float64(time.Second))),
		},
		UpdatedAt: optTime(st.UpdatedAt),
	}
	if c.Pause != nil {
		out.Paused, out.PausedBy, out.PausedReason = true, c.Pause.By, c.Pause.Reason
	}
	for _, g := range st.Groups {
		out.Groups = append(out.Groups, &adminv1.GroupBalance{GroupId: g.ID, State: string(g.State), Connected: int64(g.Connected), Fair: g.Fair, Capacity: int64(g.Capacity)})
	}
	return out, nil
}

func optTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// rebalanceStatus maps registry errors to statuses.
func rebalanceStatus(err error, what string) error {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s not found", what)
	case errors.Is(err, registry.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "registry did not answer in time")
	}
	return status.Errorf(codes.Unavailable, "registry unavailable: %s could not be read or written", what)
}
