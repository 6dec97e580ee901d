package node_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/identity"
	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// TestIdentityAcrossReplicas runs two control plane replicas with
// enrollment closed and an executor on one etcd: a device signing with its
// symmetric enrollment key is assigned by both and connects; once revoked
// (in etcd, as `berth ctl device revoke` does) both replicas refuse it and
// the executor closes its stream, each within 2 s; lifted, it is assigned
// again; its enrollment disabled, it is refused again.
func TestIdentityAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	reg := newRegistry(t)
	k := newKeys(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*testutil.DefaultTimeout)
	defer cancel()
	key := make([]byte, registry.SymmetricKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := reg.CreateEnrollment(ctx, registry.Enrollment{ID: "sensors", Kind: registry.EnrollmentSymmetric, Key: key, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}

	elis := listen(t)
	ex, err := node.NewExecutor(executorConfig(elis.Addr().String(), false), node.ExecutorDeps{Registry: reg, Verifier: k.verifier})
	if err != nil {
		t.Fatal(err)
	}
	erun := start(ex.Run, elis)
	defer func() {
		if err := erun.stop(); err != nil {
			t.Errorf("executor Run: %v", err)
		}
	}()

	var clients []controlplanev1.ControlPlaneServiceClient
	for i := range 2 {
		cfg := node.DefaultReplicaConfig()
		cfg.ControlPlane.ReplicaID = fmt.Sprintf("cp-%d", i)
		cfg.Rebalance = nil
		r, err := node.NewReplica(cfg, node.ReplicaDeps{Registry: reg, Signer: k.signer})
		if err != nil {
			t.Fatal(err)
		}
		lis := listen(t)
		run := start(r.Run, lis)
		defer func() {
			if err := run.stop(); err != nil {
				t.Errorf("replica Run: %v", err)
			}
		}()
		testutil.WaitFor(t, testutil.DefaultTimeout, "the replica seeing the executor", func() bool { return r.ControlPlane().KnownExecutors() == 1 })
		clients = append(clients, controlplanev1.NewControlPlaneServiceClient(dial(t, lis.Addr().String())))
	}
	devKey := identity.DeviceKey(key, "dev-1")
	assign := func(c controlplanev1.ControlPlaneServiceClient, signed bool) (*controlplanev1.AssignResponse, error) {
		cctx := ctx
		if signed {
			cctx = metadata.AppendToOutgoingContext(ctx, identity.SignatureHeader, identity.Sign("sensors", devKey, "dev-1", time.Now().Add(time.Minute)))
		}
		return c.Assign(cctx, &controlplanev1.AssignRequest{DeviceId: "dev-1"})
	}
	// waitCode waits, at most 2 s, until every replica answers with code.
	waitCode := func(what string, want codes.Code) {
		t.Helper()
		testutil.WaitFor(t, 2*time.Second, what, func() bool {
			for _, c := range clients {
				if _, err := assign(c, true); status.Code(err) != want {
					return false
				}
			}
			return true
		})
	}

	for i, c := range clients {
		if _, err := assign(c, false); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("replica %d: Assign without credentials: %v, want Unauthenticated", i, err)
		}
	}
	waitCode("both replicas assigning the signed device", codes.OK)
	resp, err := assign(clients[0], true)
	if err != nil {
		t.Fatal(err)
	}
	st := connect(ctx, t, dial(t, elis.Addr().String()), "dev-1", resp.GetDestination().GetToken())

	revokedAt := time.Now()
	if err := reg.PutRevocation(ctx, registry.Revocation{DeviceID: "dev-1", Reason: "stolen", At: revokedAt}); err != nil {
		t.Fatal(err)
	}
	// The executor closes the stream with Goodbye{REVOKED}.
	var goodbye *executorv1.Goodbye
	for goodbye == nil {
		f, err := st.Recv()
		if err != nil {
			t.Fatalf("stream ended (%v) before a Goodbye", err)
		}
		goodbye = f.GetGoodbye()
	}
	if goodbye.GetReason() != executorv1.GoodbyeReason_GOODBYE_REASON_REVOKED {
		t.Errorf("Goodbye reason %v, want REVOKED", goodbye.GetReason())
	}
	if took := time.Since(revokedAt); took > 2*time.Second {
		t.Errorf("the executor closed the stream %v after the revocation; want within 2s", took)
	}
	waitCode("both replicas refusing the revoked device", codes.PermissionDenied)

	if _, err := reg.DeleteRevocation(ctx, "dev-1"); err != nil {
		t.Fatal(err)
	}
	waitCode("both replicas assigning the device again", codes.OK)

	if _, err := reg.SetEnrollmentDisabled(ctx, "sensors", true); err != nil {
		t.Fatal(err)
	}
	waitCode("both replicas refusing a device of the disabled enrollment", codes.PermissionDenied)
}
