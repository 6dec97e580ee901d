package devcluster_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/access"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/internal/devcluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRun starts the dev cluster, checks that it is ready with every
// executor, that Assign answers with a group and its endpoints, and that
// cancelling stops everything cleanly.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and servers")
	}
	cfg := devcluster.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ready := make(chan devcluster.Info, 1)
	done := make(chan error, 1)
	go func() { done <- devcluster.Run(ctx, cfg, nil, func(i devcluster.Info) { ready <- i }) }()
	var info devcluster.Info
	select {
	case info = <-ready:
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	}
	if len(info.Executors) != 4 || info.Etcd == "" || info.PublicKeyFile == "" {
		t.Fatalf("info = %+v, want 4 executors, an etcd and a public key", info)
	}
	cc, err := grpc.NewClient(info.ControlPlane, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := controlplanev1.NewControlPlaneServiceClient(cc).Assign(ctx, &controlplanev1.AssignRequest{DeviceId: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.GetDestination(); d.GetGroupId() == "" || len(d.GetEndpoints()) != 2 || d.GetToken() == "" {
		t.Errorf("Assign = %v, want a group with 2 endpoints and a token", d)
	}
	// The admin key is in its file, readable by its owner only, and opens
	// AdminService, which refuses a caller without it.
	fi, err := os.Stat(info.APIKeyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("api key file %s: %v, mode %v; want 0600", info.APIKeyFile, err, fi)
	}
	b, _ := os.ReadFile(info.APIKeyFile)
	if strings.TrimSpace(string(b)) != info.AdminAPIKey {
		t.Errorf("api key file holds %q; want the admin key", b)
	}
	if _, err := adminv1.NewAdminServiceClient(cc).ListGroups(ctx, &adminv1.ListGroupsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListGroups without a key = %v; want UNAUTHENTICATED", err)
	}
	keyed, err := grpc.NewClient(info.ControlPlane, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(access.APIKeyCredentials(info.AdminAPIKey)))
	if err != nil {
		t.Fatal(err)
	}
	defer keyed.Close()
	if _, err := adminv1.NewAdminServiceClient(keyed).ListGroups(ctx, &adminv1.ListGroupsRequest{}); err != nil {
		t.Errorf("ListGroups with the admin key = %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

func TestRunRejectsBadShape(t *testing.T) {
	cfg := devcluster.DefaultConfig()
	cfg.Groups = 0
	if err := devcluster.Run(context.Background(), cfg, nil, nil); err == nil {
		t.Error("Run with no group succeeded")
	}
}
