package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// maxPolicyDocument bounds a policy document.
const maxPolicyDocument = 256 << 10

// adminServer implements AdminService on a control plane's cache and store.
type adminServer struct {
	adminv1.UnimplementedAdminServiceServer
	s *Server
}

// GetPolicy implements AdminService.GetPolicy.
func (a *adminServer) GetPolicy(ctx context.Context, _ *adminv1.GetPolicyRequest) (*adminv1.GetPolicyResponse, error) {
	sp := a.s.cache.Snapshot().Policy
	if sp == nil {
		return nil, status.Error(codes.NotFound, "no policy applied; the built-in default (every device label \"default\", balanced by connections) is in force")
	}
	return &adminv1.GetPolicyResponse{Document: string(sp.Document), Version: sp.Version, AppliedAt: timestamppb.New(sp.AppliedAt), AppliedBy: sp.AppliedBy,
		Migrate: a.migrating(ctx, sp.Version)}, nil
}

// ApplyPolicy implements AdminService.ApplyPolicy.
func (a *adminServer) ApplyPolicy(ctx context.Context, req *adminv1.ApplyPolicyRequest) (*adminv1.ApplyPolicyResponse, error) {
	store, err := a.policyStoreFor(req.GetMigrate())
	if err != nil {
		return nil, err
	}
	version, warns, err := ApplyPolicy(ctx, store, a.s.cache.Snapshot(), []byte(req.GetDocument()), req.GetBasedOnVersion(), req.GetAppliedBy(), a.s.now())
	if err != nil {
		return nil, policyStatus(err)
	}
	a.s.log.Info("placement policy applied", "version", version, "by", req.GetAppliedBy(), "migrate", req.GetMigrate())
	return &adminv1.ApplyPolicyResponse{Version: version, Warnings: warns}, nil
}

// DryRunPolicy implements AdminService.DryRunPolicy.
func (a *adminServer) DryRunPolicy(_ context.Context, req *adminv1.DryRunPolicyRequest) (*adminv1.DryRunPolicyResponse, error) {
	if len(req.GetDocument()) > maxPolicyDocument {
		return nil, status.Errorf(codes.InvalidArgument, "document is %d bytes; at most %d", len(req.GetDocument()), maxPolicyDocument)
	}
	snap := a.s.cache.Snapshot()
	pol, warns, err := placement.ValidatePolicy([]byte(req.GetDocument()), snap)
	if err != nil {
		return nil, policyStatus(err)
	}
	r := placement.DryRun(snap, pol, a.s.cache.RangeAssignments, a.s.history)
	out := &adminv1.DryRunPolicyResponse{Devices: int64(r.Devices), LabelChanges: int64(r.LabelChanges), GroupChanges: int64(r.GroupChanges), Warnings: warns}
	for _, l := range r.ByLabel {
		out.ByLabel = append(out.ByLabel, &adminv1.LabelChange{Label: l.Label, Devices: int64(l.Devices), LabelChanges: int64(l.LabelChanges), GroupChanges: int64(l.GroupChanges)})
	}
	return out, nil
}

// Explain implements AdminService.Explain.
func (a *adminServer) Explain(_ context.Context, req *adminv1.ExplainRequest) (*adminv1.ExplainResponse, error) {
	if !registry.ValidID(req.GetDeviceId()) {
		return nil, status.Errorf(codes.InvalidArgument, "device_id %q: want 1-128 of [A-Za-z0-9._:@-]", req.GetDeviceId())
	}
	rec, ok := a.s.cache.Assignment(req.GetDeviceId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "device %s has no assignment record", req.GetDeviceId())
	}
	snap := a.s.cache.Snapshot()
	return ExplainResponse(snap, a.s.policyFor(snap), rec, a.s.history(rec.DeviceID)), nil
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
		return 0, nil, fmt.Errorf("controlplane: encode policy: %w", err)
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
