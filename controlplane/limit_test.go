package controlplane_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/controlplane"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/identity"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// callerAuth authenticates every caller as the device it names, except a
// context marked as an impostor's.
type callerAuth struct{}

type impostorKey struct{}

func (callerAuth) Authenticate(ctx context.Context, requested string) (identity.Identity, error) {
	if ctx.Value(impostorKey{}) != nil {
		return identity.Identity{}, fmt.Errorf("%w: no credentials", identity.ErrUnauthenticated)
	}
	return identity.Identity{DeviceID: requested, Kind: identity.KindOpen}, nil
}

// countingLimiter records the identities checked and refuses those in
// refuse.
type countingLimiter struct {
	checked []string
	refuse  map[string]bool
}

func (l *countingLimiter) Check(_ context.Context, method, id string) error {
	if method != controlplanev1.ControlPlaneService_Assign_FullMethodName {
		return fmt.Errorf("checked method %s", method)
	}
	l.checked = append(l.checked, id)
	if l.refuse[id] {
		return status.Error(codes.ResourceExhausted, "rate limit")
	}
	return nil
}

var _ controlplane.Limiter = (*countingLimiter)(nil)

// A device's Assign allowance is counted against its authenticated id: a
// refused impostor naming it spends nothing, and a device over its limit
// is refused with RESOURCE_EXHAUSTED.
func TestAssignLimitedAfterAuthentication(t *testing.T) {
	key, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := token.NewSigner(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	groups, execs := twoGroups()
	cache := &fakeCache{snap: registry.NewSnapshot(1, groups, execs), records: map[string]registry.Assignment{}}
	lim := &countingLimiter{refuse: map[string]bool{"device:dev-busy": true}}
	srv, err := controlplane.New(controlplane.DefaultConfig(), cache, &fakeStore{cache: cache}, signer, nil,
		controlplane.WithAuthenticator(callerAuth{}), controlplane.WithLimiter(lim))
	if err != nil {
		t.Fatal(err)
	}
	impostor := context.WithValue(context.Background(), impostorKey{}, true)
	tests := []struct {
		name   string
		ctx    context.Context
		device string
		want   codes.Code
		counts []string // the identities checked after this call
	}{
		{"impostor naming dev-1: refused, not counted", impostor, "dev-1", codes.Unauthenticated, nil},
		{"dev-1 itself: counted against it", context.Background(), "dev-1", codes.OK, []string{"device:dev-1"}},
		{"a device over its limit", context.Background(), "dev-busy", codes.ResourceExhausted, []string{"device:dev-1", "device:dev-busy"}},
	}
	for _, tt := range tests {
		_, err := srv.Assign(tt.ctx, &controlplanev1.AssignRequest{DeviceId: tt.device})
		if got := status.Code(err); got != tt.want {
			t.Fatalf("%s: Assign = %v; want %v", tt.name, err, tt.want)
		}
		if fmt.Sprint(lim.checked) != fmt.Sprint(tt.counts) {
			t.Errorf("%s: limiter checked %v; want %v", tt.name, lim.checked, tt.counts)
		}
	}
}
