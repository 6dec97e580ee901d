package admin

import (
	"context"
	"crypto/rand"
	"errors"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/registry"
)

// IdentityStore keeps enrollments and revocations. *registry.Registry
// implements it; a Server without one (Deps.Identity nil) answers those
// calls UNIMPLEMENTED.
type IdentityStore interface {
	CreateEnrollment(ctx context.Context, e registry.Enrollment) error
	Enrollments(ctx context.Context) ([]registry.Enrollment, error)
	SetEnrollmentDisabled(ctx context.Context, id string, disabled bool) (registry.Enrollment, error)
	DeleteEnrollment(ctx context.Context, id string) (bool, error)
	PutRevocation(ctx context.Context, r registry.Revocation) error
	DeleteRevocation(ctx context.Context, deviceID string) (bool, error)
	Revocations(ctx context.Context) ([]registry.Revocation, error)
}

var _ IdentityStore = (*registry.Registry)(nil)

func (a *Server) identityStore() (IdentityStore, error) {
	if a.identity == nil {
		return nil, status.Error(codes.Unimplemented, "this control plane cannot manage enrollments or revocations")
	}
	return a.identity, nil
}

// identityStatus maps the registry's errors for the identity calls.
func identityStatus(err error, what string) error {
	if errors.Is(err, registry.ErrConflict) {
		return status.Errorf(codes.AlreadyExists, "%s exists", what)
	}
	return rebalanceStatus(err, what)
}

// CreateEnrollment implements AdminService.CreateEnrollment.
func (a *Server) CreateEnrollment(ctx context.Context, req *adminv1.CreateEnrollmentRequest) (*adminv1.CreateEnrollmentResponse, error) {
	st, err := a.identityStore()
	if err != nil {
		return nil, err
	}
	if err := checkID("enrollment_id", req.GetEnrollmentId()); err != nil {
		return nil, err
	}
	e := registry.Enrollment{ID: req.GetEnrollmentId(), CreatedAt: a.now().UTC()}
	switch req.GetKind() {
	case adminv1.EnrollmentKind_ENROLLMENT_KIND_X509:
		e.Kind = registry.EnrollmentX509
		if len(req.GetCaPem()) > registry.MaxCAPEM {
			return nil, invalidField("ca_pem", "is %d bytes; at most %d", len(req.GetCaPem()), registry.MaxCAPEM)
		}
		if _, err := registry.ParseCAPool(req.GetCaPem()); err != nil {
			return nil, invalidField("ca_pem", "%v", err)
		}
		e.CAPEM = req.GetCaPem()
	case adminv1.EnrollmentKind_ENROLLMENT_KIND_SYMMETRIC_KEY:
		if req.GetCaPem() != "" {
			return nil, invalidField("ca_pem", "must be empty for a symmetric-key enrollment")
		}
		e.Kind = registry.EnrollmentSymmetric
		e.Key = make([]byte, registry.SymmetricKeySize)
		if _, err := rand.Read(e.Key); err != nil {
			return nil, status.Error(codes.Internal, "internal error")
		}
	default:
		return nil, invalidField("kind", "%v: want ENROLLMENT_KIND_X509 or ENROLLMENT_KIND_SYMMETRIC_KEY", req.GetKind())
	}
	if err := st.CreateEnrollment(ctx, e); err != nil {
		return nil, identityStatus(err, "enrollment "+e.ID)
	}
	a.log.Info("enrollment created", "enrollment", e.ID, "kind", e.Kind)
	return &adminv1.CreateEnrollmentResponse{Enrollment: enrollmentProto(e), SymmetricKey: e.Key}, nil
}

// ListEnrollments implements AdminService.ListEnrollments.
func (a *Server) ListEnrollments(ctx context.Context, req *adminv1.ListEnrollmentsRequest) (*adminv1.ListEnrollmentsResponse, error) {
	pg, err := newPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	st, err := a.identityStore()
	if err != nil {
		return nil, err
	}
	all, err := st.Enrollments(ctx)
	if err != nil {
		return nil, identityStatus(err, "enrollments")
	}
	es, next := pageOf(pg, func(e registry.Enrollment) string { return e.ID }, slices.Values(all))
	out := &adminv1.ListEnrollmentsResponse{NextPageToken: next}
	for _, e := range es {
		out.Enrollments = append(out.Enrollments, enrollmentProto(e))
	}
	return out, nil
}

// DisableEnrollment implements AdminService.DisableEnrollment.
func (a *Server) DisableEnrollment(ctx context.Context, req *adminv1.DisableEnrollmentRequest) (*adminv1.DisableEnrollmentResponse, error) {
	e, err := a.setEnrollmentDisabled(ctx, req.GetEnrollmentId(), true)
	if err != nil {
		return nil, err
	}
	return &adminv1.DisableEnrollmentResponse{Enrollment: e}, nil
}

// EnableEnrollment implements AdminService.EnableEnrollment.
func (a *Server) EnableEnrollment(ctx context.Context, req *adminv1.EnableEnrollmentRequest) (*adminv1.EnableEnrollmentResponse, error) {
	e, err := a.setEnrollmentDisabled(ctx, req.GetEnrollmentId(), false)
	if err != nil {
		return nil, err
	}
	return &adminv1.EnableEnrollmentResponse{Enrollment: e}, nil
}

func (a *Server) setEnrollmentDisabled(ctx context.Context, id string, disabled bool) (*adminv1.Enrollment, error) {
	if err := checkID("enrollment_id", id); err != nil {
		return nil, err
	}
	st, err := a.identityStore()
	if err != nil {
		return nil, err
	}
	e, err := st.SetEnrollmentDisabled(ctx, id, disabled)
	if err != nil {
		return nil, identityStatus(err, "enrollment "+id)
	}
	a.log.Info("enrollment changed", "enrollment", id, "disabled", disabled)
	return enrollmentProto(e), nil
}

// DeleteEnrollment implements AdminService.DeleteEnrollment.
func (a *Server) DeleteEnrollment(ctx context.Context, req *adminv1.DeleteEnrollmentRequest) (*adminv1.DeleteEnrollmentResponse, error) {
	id := req.GetEnrollmentId()
	if err := checkID("enrollment_id", id); err != nil {
		return nil, err
	}
	st, err := a.identityStore()
	if err != nil {
		return nil, err
	}
	found, err := st.DeleteEnrollment(ctx, id)
	if err != nil {
		return nil, identityStatus(err, "enrollment "+id)
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "enrollment %s not found", id)
	}
	a.log.Info("enrollment deleted", "enrollment", id)
	return &adminv1.DeleteEnrollmentResponse{}, nil
}

// RevokeDevice implements AdminService.RevokeDevice.
func (a *Server) RevokeDevice(ctx context.Context, req *adminv1.RevokeDeviceRequest) (*adminv1.RevokeDeviceResponse, error) {
	id := req.GetDeviceId()
	if err := checkID("device_id", id); err != nil {
		return nil, err
	}
	if n := len(req.GetReason()); n > registry.MaxRevocationReason {
		return nil, invalidField("reason", "is %d bytes; at most %d", n, registry.MaxRevocationReason)
	}
	st, err := a.identityStore()
	if err != nil {
		return nil, err
	}
	rv := registry.Revocation{DeviceID: id, Reason: req.GetReason(), At: a.now().UTC()}
	if err := st.PutRevocation(ctx, rv); err != nil {
		return nil, identityStatus(err, "revocation of "+id)
	}
	a.log.Info("device revoked", "device", id, "reason", rv.Reason)
	return &adminv1.RevokeDeviceResponse{Revoked: revokedProto(rv)}, nil
}

// UnrevokeDevice implements AdminService.UnrevokeDevice.
func (a *Server) UnrevokeDevice(ctx context.Context, req *adminv1.UnrevokeDeviceRequest) (*adminv1.UnrevokeDeviceResponse, error) {
	id := req.GetDeviceId()
	if err := checkID("device_id", id); err != nil {
		return nil, err
	}
	st, err := a.identityStore()
	if err != nil {
		return nil, err
	}
	found, err := st.DeleteRevocation(ctx, id)
	if err != nil {
		return nil, identityStatus(err, "revocation of "+id)
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "device %s is not revoked", id)
	}
	a.log.Info("device revocation lifted", "device", id)
	return &adminv1.UnrevokeDeviceResponse{}, nil
}

// ListRevokedDevices implements AdminService.ListRevokedDevices.
func (a *Server) ListRevokedDevices(ctx context.Context, req *adminv1.ListRevokedDevicesRequest) (*adminv1.ListRevokedDevicesResponse, error) {
	pg, err := newPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	st, err := a.identityStore()
	if err != nil {
		return nil, err
	}
	all, err := st.Revocations(ctx)
	if err != nil {
		return nil, identityStatus(err, "revocations")
	}
	rs, next := pageOf(pg, func(r registry.Revocation) string { return r.DeviceID }, slices.Values(all))
	out := &adminv1.ListRevokedDevicesResponse{NextPageToken: next}
	for _, r := range rs {
		out.Revoked = append(out.Revoked, revokedProto(r))
	}
	return out, nil
}

// enrollmentProto converts an enrollment, leaving its key out.
func enrollmentProto(e registry.Enrollment) *adminv1.Enrollment {
	kind := adminv1.EnrollmentKind_ENROLLMENT_KIND_UNSPECIFIED
	switch e.Kind {
	case registry.EnrollmentX509:
		kind = adminv1.EnrollmentKind_ENROLLMENT_KIND_X509
	case registry.EnrollmentSymmetric:
		kind = adminv1.EnrollmentKind_ENROLLMENT_KIND_SYMMETRIC_KEY
	}
	return &adminv1.Enrollment{EnrollmentId: e.ID, Kind: kind, CaPem: e.CAPEM, Disabled: e.Disabled, CreatedAt: timestamppb.New(e.CreatedAt)}
}

func revokedProto(r registry.Revocation) *adminv1.RevokedDevice {
	return &adminv1.RevokedDevice{DeviceId: r.DeviceID, Reason: r.Reason, RevokedAt: timestamppb.New(r.At)}
}
