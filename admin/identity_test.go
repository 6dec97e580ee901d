package admin_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// TestEnrollmentsAndRevocations manages enrollments and revocations through
// AdminService on a real registry.
func TestEnrollmentsAndRevocations(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: embedded etcd")
	}
	reg := registry.New(testutil.EtcdClient(t, testutil.StartEtcd(t)), "/it")
	key, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	adm := startReplica(t, reg, "cp-1", key).admin
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	ca := testutil.NewTestCA(t, "factory")

	creates := []struct {
		name    string
		req     *adminv1.CreateEnrollmentRequest
		want    codes.Code
		wantKey bool
	}{
		{"symmetric", &adminv1.CreateEnrollmentRequest{EnrollmentId: "sensors", Kind: adminv1.EnrollmentKind_ENROLLMENT_KIND_SYMMETRIC_KEY}, codes.OK, true},
		{"x509", &adminv1.CreateEnrollmentRequest{EnrollmentId: "factory", Kind: adminv1.EnrollmentKind_ENROLLMENT_KIND_X509, CaPem: ca.PEM}, codes.OK, false},
		{"id taken", &adminv1.CreateEnrollmentRequest{EnrollmentId: "sensors", Kind: adminv1.EnrollmentKind_ENROLLMENT_KIND_SYMMETRIC_KEY}, codes.AlreadyExists, false},
		{"bad id", &adminv1.CreateEnrollmentRequest{EnrollmentId: "a/b", Kind: adminv1.EnrollmentKind_ENROLLMENT_KIND_SYMMETRIC_KEY}, codes.InvalidArgument, false},
		{"no kind", &adminv1.CreateEnrollmentRequest{EnrollmentId: "x"}, codes.InvalidArgument, false},
		{"x509 without a CA", &adminv1.CreateEnrollmentRequest{EnrollmentId: "x", Kind: adminv1.EnrollmentKind_ENROLLMENT_KIND_X509}, codes.InvalidArgument, false},
		{"x509 with a leaf, not a CA", &adminv1.CreateEnrollmentRequest{EnrollmentId: "x", Kind: adminv1.EnrollmentKind_ENROLLMENT_KIND_X509, CaPem: "not pem"}, codes.InvalidArgument, false},
		{"symmetric with a CA", &adminv1.CreateEnrollmentRequest{EnrollmentId: "x", Kind: adminv1.EnrollmentKind_ENROLLMENT_KIND_SYMMETRIC_KEY, CaPem: ca.PEM}, codes.InvalidArgument, false},
	}
	var symKey []byte
	for _, tc := range creates {
		t.Run("create "+tc.name, func(t *testing.T) {
			resp, err := adm.CreateEnrollment(ctx, tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("CreateEnrollment: %v, want %v", err, tc.want)
			}
			if got := len(resp.GetSymmetricKey()); (got == registry.SymmetricKeySize) != tc.wantKey {
				t.Errorf("symmetric key of %d bytes; want a %d-byte key: %v", got, registry.SymmetricKeySize, tc.wantKey)
			}
			if tc.wantKey {
				symKey = resp.GetSymmetricKey()
			}
		})
	}
	// The key is shown once: the listing carries none, and the store keeps
	// the one that was shown.
	list, err := adm.ListEnrollments(ctx, &adminv1.ListEnrollmentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetEnrollments()); n != 2 || list.GetEnrollments()[0].GetEnrollmentId() != "factory" {
		t.Fatalf("ListEnrollments = %v; want factory and sensors", list.GetEnrollments())
	}
	stored, err := reg.Enrollments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(stored[1].Key) != string(symKey) {
		t.Error("the stored key is not the one CreateEnrollment returned")
	}

	calls := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"disable", func() error {
			r, err := adm.DisableEnrollment(ctx, &adminv1.DisableEnrollmentRequest{EnrollmentId: "sensors"})
			if err == nil && !r.GetEnrollment().GetDisabled() {
				t.Error("DisableEnrollment answered an enabled enrollment")
			}
			return err
		}, codes.OK},
		{"enable", func() error {
			_, err := adm.EnableEnrollment(ctx, &adminv1.EnableEnrollmentRequest{EnrollmentId: "sensors"})
			return err
		}, codes.OK},
		{"disable unknown", func() error {
			_, err := adm.DisableEnrollment(ctx, &adminv1.DisableEnrollmentRequest{EnrollmentId: "nope"})
			return err
		}, codes.NotFound},
		{"delete", func() error {
			_, err := adm.DeleteEnrollment(ctx, &adminv1.DeleteEnrollmentRequest{EnrollmentId: "factory"})
			return err
		}, codes.OK},
		{"delete again", func() error {
			_, err := adm.DeleteEnrollment(ctx, &adminv1.DeleteEnrollmentRequest{EnrollmentId: "factory"})
			return err
		}, codes.NotFound},
		{"revoke", func() error {
			_, err := adm.RevokeDevice(ctx, &adminv1.RevokeDeviceRequest{DeviceId: "dev-1", Reason: "stolen"})
			return err
		}, codes.OK},
		{"revoke a bad id", func() error {
			_, err := adm.RevokeDevice(ctx, &adminv1.RevokeDeviceRequest{DeviceId: ".."})
			return err
		}, codes.InvalidArgument},
		{"revoke with a long reason", func() error {
			_, err := adm.RevokeDevice(ctx, &adminv1.RevokeDeviceRequest{DeviceId: "dev-2", Reason: string(make([]byte, 300))})
			return err
		}, codes.InvalidArgument},
		{"list revoked", func() error {
			r, err := adm.ListRevokedDevices(ctx, &adminv1.ListRevokedDevicesRequest{})
			if err == nil && (len(r.GetRevoked()) != 1 || r.GetRevoked()[0].GetReason() != "stolen") {
				t.Errorf("ListRevokedDevices = %v; want dev-1, stolen", r.GetRevoked())
			}
			return err
		}, codes.OK},
		{"unrevoke", func() error {
			_, err := adm.UnrevokeDevice(ctx, &adminv1.UnrevokeDeviceRequest{DeviceId: "dev-1"})
			return err
		}, codes.OK},
		{"unrevoke again", func() error {
			_, err := adm.UnrevokeDevice(ctx, &adminv1.UnrevokeDeviceRequest{DeviceId: "dev-1"})
			return err
		}, codes.NotFound},
	}
	for _, tc := range calls {
		if got := status.Code(tc.call()); got != tc.want {
			t.Errorf("%s: code %v, want %v", tc.name, got, tc.want)
		}
	}
}
