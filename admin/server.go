package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthproject/berth/access"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// maxPolicyDocument bounds a policy document.
const maxPolicyDocument = 256 << 10

// Cache is the replica's watch-fed view of the registry that AdminService
// reads. *registry.Cache implements it.
type Cache interface {
	// Snapshot returns the current immutable snapshot.
	Snapshot() *registry.Snapshot
	// Assignment returns a device's cached assignment record.
	Assignment(deviceID string) (registry.Assignment, bool)
	// RangeAssignments calls fn for every cached assignment record.
	RangeAssignments(fn func(registry.Assignment) bool)
	// History returns a device's cached traffic history record.
	History(deviceID string) (registry.History, bool)
}

// Policies gives the compiled placement policy in force for a snapshot,
// as Assign uses it. *controlplane.Server implements it.
type Policies interface {
	PolicyFor(snap *registry.Snapshot) *policy.Compiled
}

var _ Cache = (*registry.Cache)(nil)

// Deps are what a Server is built on.
type Deps struct {
	// Cache is the registry cache. Required; admin does not run it.
	Cache Cache
	// Policies is the policy in force. Required.
	Policies Policies
	// Store stores policies. Required. When it is also a PolicyMigrator
	// (*registry.Registry is), ApplyPolicy keeps the migrate mark in step.
	Store PolicyStore
	// Rebalance reads and writes the rebalancer's state and the drain
	// marks; nil answers those calls UNIMPLEMENTED.
	Rebalance RebalanceStore
	// Fleet writes groups and tenants; nil answers those calls
	// UNIMPLEMENTED.
	Fleet FleetStore
	// Access stores API keys and reads the audit trail; nil answers those
	// calls UNIMPLEMENTED.
	Access AccessStore
	// Keys, when set, is the replica's view of the API keys: a key
	// created or revoked here is in it when the call returns.
	Keys KeyView
	// Identity keeps enrollments and revocations; nil answers those calls
	// UNIMPLEMENTED.
	Identity IdentityStore
	// Log may be nil.
	Log *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Server implements AdminService on a control plane replica's cache and
// the registry.
type Server struct {
	adminv1.UnimplementedAdminServiceServer

	cache     Cache
	policies  Policies
	store     PolicyStore
	rebalance RebalanceStore // nil: no rebalancer store
	fleet     FleetStore     // nil: no group and tenant writes
	access    AccessStore    // nil: no API keys or audit trail
	keys      KeyView        // nil: no view to wait for
	identity  IdentityStore  // nil: no enrollments and revocations
	log       *slog.Logger
	now       func() time.Time
}

// New wires a Server. It starts nothing and does no I/O.
func New(deps Deps) (*Server, error) {
	if deps.Cache == nil || deps.Policies == nil || deps.Store == nil {
		return nil, errors.New("admin: a cache, the policies and a policy store are required")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	return &Server{cache: deps.Cache, policies: deps.Policies, store: deps.Store, rebalance: deps.Rebalance, fleet: deps.Fleet, identity: deps.Identity, access: deps.Access, keys: deps.Keys, log: deps.Log, now: deps.Now}, nil
}

// Register registers AdminService on s.
func (a *Server) Register(s grpc.ServiceRegistrar) {
	adminv1.RegisterAdminServiceServer(s, a)
}

// history returns the device's traffic history as of now (zero without a
// record).
func (a *Server) history(deviceID string) registry.History {
	h, ok := a.cache.History(deviceID)
	if !ok {
		return registry.History{}
	}
	return h.Decayed(a.now())
}

// GetPolicy implements AdminService.GetPolicy.
func (a *Server) GetPolicy(ctx context.Context, _ *adminv1.GetPolicyRequest) (*adminv1.GetPolicyResponse, error) {
	sp := a.cache.Snapshot().Policy
	if sp == nil {
		return nil, status.Error(codes.NotFound, "no policy applied; the built-in default (every device label \"default\", balanced by connections) is in force")
	}
	return &adminv1.GetPolicyResponse{Document: string(sp.Document), Version: sp.Version, AppliedAt: timestamppb.New(sp.AppliedAt), AppliedBy: sp.AppliedBy,
		Migrate: a.migrating(ctx, sp.Version)}, nil
}

// ApplyPolicy implements AdminService.ApplyPolicy.
func (a *Server) ApplyPolicy(ctx context.Context, req *adminv1.ApplyPolicyRequest) (*adminv1.ApplyPolicyResponse, error) {
	store, err := a.policyStoreFor(req.GetMigrate())
	if err != nil {
		return nil, err
	}
	// The authenticated caller, whatever applied_by says.
	by := access.Who(ctx, req.GetAppliedBy())
	version, warns, err := ApplyPolicy(ctx, store, a.cache.Snapshot(), []byte(req.GetDocument()), req.GetBasedOnVersion(), by, a.now())
	if err != nil {
		return nil, policyStatus(err)
	}
	a.log.Info("placement policy applied", "version", version, "by", by, "migrate", req.GetMigrate())
	return &adminv1.ApplyPolicyResponse{Version: version, Warnings: warns}, nil
}

// DryRunPolicy implements AdminService.DryRunPolicy.
func (a *Server) DryRunPolicy(_ context.Context, req *adminv1.DryRunPolicyRequest) (*adminv1.DryRunPolicyResponse, error) {
	if len(req.GetDocument()) > maxPolicyDocument {
		return nil, status.Errorf(codes.InvalidArgument, "document is %d bytes; at most %d", len(req.GetDocument()), maxPolicyDocument)
	}
	snap := a.cache.Snapshot()
	pol, warns, err := placement.ValidatePolicy([]byte(req.GetDocument()), snap)
	if err != nil {
		return nil, policyStatus(err)
	}
	r := placement.DryRun(snap, pol, a.cache.RangeAssignments, a.history)
	out := &adminv1.DryRunPolicyResponse{Devices: int64(r.Devices), LabelChanges: int64(r.LabelChanges), GroupChanges: int64(r.GroupChanges), Warnings: warns}
	for _, l := range r.ByLabel {
		out.ByLabel = append(out.ByLabel, &adminv1.LabelChange{Label: l.Label, Devices: int64(l.Devices), LabelChanges: int64(l.LabelChanges), GroupChanges: int64(l.GroupChanges)})
	}
	return out, nil
}

// Explain implements AdminService.Explain.
func (a *Server) Explain(_ context.Context, req *adminv1.ExplainRequest) (*adminv1.ExplainResponse, error) {
	if !registry.ValidID(req.GetDeviceId()) {
		return nil, status.Errorf(codes.InvalidArgument, "device_id %q: want 1-128 of [A-Za-z0-9._:@-]", req.GetDeviceId())
	}
	rec, ok := a.cache.Assignment(req.GetDeviceId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "device %s has no assignment record", req.GetDeviceId())
	}
	snap := a.cache.Snapshot()
	return ExplainResponse(snap, a.policies.PolicyFor(snap), rec, a.history(rec.DeviceID)), nil
}

// ExplainResponse decides again for rec, with its traffic history as of
// now, and describes every step.
func ExplainResponse(snap *registry.Snapshot, pol *policy.Compiled, rec registry.Assignment, traffic registry.History) *adminv1.ExplainResponse {
	d, err := placement.Explain(snap, pol, rec, traffic)
	in := rec.Inputs
	if in == nil {
		in = &registry.DeviceInputs{}
	}
	out := &adminv1.ExplainResponse{
		DeviceId:        rec.DeviceID,
		Input:           placement.PolicyInput(snap, rec.DeviceID, in, rec.GroupID, rec.Label, traffic),
		Rule:            d.Rule,
		Label:           d.Label,
		FromLabel:       d.FromLabel,
		Method:          d.Method,
		GroupId:         d.Group.ID,
		Reason:          d.Reason,
		PolicyVersion:   d.PolicyVersion,
		RecordedGroupId: rec.GroupID,
		RecordedLabel:   rec.Label,
		RecordedReason:  rec.Reason,
		RecordedAt:      timestamppb.New(rec.AssignedAt),
	}
	if err != nil {
		out.Reason = err.Error()
	}
	for _, c := range d.Candidates {
		out.Candidates = append(out.Candidates, &adminv1.CandidateGroup{
			GroupId: c.Group.ID, Label: c.Label, Utilization: c.Utilization(), Capacity: int64(c.Capacity),
			Kept: c.Dropped == "", Dropped: c.Dropped,
		})
	}
	return out
}

// PolicyStore stores policies. *registry.Registry implements it.
type PolicyStore interface {
	PutPolicy(ctx context.Context, p registry.StoredPolicy, basedOn int64) (int64, error)
}

// ApplyPolicy validates doc completely against snap and stores it as JSON
// if the stored policy is still at basedOn. Nothing is stored when the
// document is invalid (policy.ErrInvalid) or the version moved
// (registry.ErrConflict).
func ApplyPolicy(ctx context.Context, store PolicyStore, snap *registry.Snapshot, doc []byte, basedOn int64, by string, now time.Time) (int64, []string, error) {
	if len(doc) > maxPolicyDocument {
		return 0, nil, fmt.Errorf("%w: document is %d bytes; at most %d", policy.ErrInvalid, len(doc), maxPolicyDocument)
	}
	pol, warns, err := placement.ValidatePolicy(doc, snap)
	if err != nil {
		return 0, nil, err
	}
	js, err := protojson.Marshal(pol.Source())
	if err != nil {
		return 0, nil, fmt.Errorf("admin: encode policy: %w", err)
	}
	v, err := store.PutPolicy(ctx, registry.StoredPolicy{Document: js, AppliedAt: now.UTC(), AppliedBy: by}, basedOn)
	if err != nil {
		return 0, warns, err
	}
	return v, warns, nil
}

// policyStatus maps policy errors to statuses.
func policyStatus(err error) error {
	var ve *policy.ValidationError
	switch {
	case errors.As(err, &ve):
		st := status.New(codes.InvalidArgument, ve.Error())
		br := &errdetails.BadRequest{}
		for _, p := range ve.Problems {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: p.Where, Description: p.Reason})
		}
		if d, derr := st.WithDetails(br); derr == nil {
			return d.Err()
		}
		return st.Err()
	case errors.Is(err, policy.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, registry.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	default:
		return status.Error(codes.Unavailable, "registry unavailable: the policy could not be stored")
	}
}
