package devcluster_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berthproject/berth/device"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/internal/devcluster"
	"github.com/berthproject/berth/internal/tlsfiles"
)

// runTLS runs a one-executor TLS dev cluster in dir until fn returns.
func runTLS(t *testing.T, dir string, fn func(devcluster.Info)) {
	t.Helper()
	cfg := devcluster.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = dir
	cfg.Groups, cfg.ExecutorsPerGroup, cfg.GroupCapacity = 1, 1, 100
	cfg.Replica.Rebalance = nil
	cfg.TLS = true
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ready := make(chan devcluster.Info, 1)
	done := make(chan error, 1)
	go func() { done <- devcluster.Run(ctx, cfg, nil, func(i devcluster.Info) { ready <- i }) }()
	select {
	case info := <-ready:
		fn(info)
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

// TestRunTLS: the dev cluster serves TLS from a CA in its data directory,
// a device connects over TLS, plaintext is refused, and a second run
// reuses the CA.
func TestRunTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and servers")
	}
	dir := t.TempDir()
	var firstCA []byte
	runTLS(t, dir, func(info devcluster.Info) {
		if info.CAFile == "" {
			t.Fatal("Info.CAFile empty with TLS on")
		}
		var err error
		if firstCA, err = os.ReadFile(info.CAFile); err != nil {
			t.Fatal(err)
		}
		ccfg, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{CA: info.CAFile}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		connectOverTLS(t, info.ControlPlane, ccfg)
		tc, err := grpc.NewClient(info.ControlPlane, grpc.WithTransportCredentials(credentials.NewTLS(ccfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer acancel()
		resp, err := controlplanev1.NewControlPlaneServiceClient(tc).Assign(actx, &controlplanev1.AssignRequest{DeviceId: "dev-2"})
		if err != nil {
			t.Fatalf("Assign over TLS: %v", err)
		}
		for _, ep := range resp.GetDestination().GetEndpoints() {
			if got, want := ep.GetTlsServerName(), "127.0.0.1"; got != want {
				t.Errorf("endpoint %s: tls_server_name %q, want %q", ep.GetExecutorId(), got, want)
			}
		}

		plain, err := grpc.NewClient(info.ControlPlane, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := controlplanev1.NewControlPlaneServiceClient(plain).Assign(ctx, &controlplanev1.AssignRequest{DeviceId: "dev-plain"}); err == nil {
			t.Error("plaintext Assign against the TLS dev cluster succeeded")
		}
	})
	runTLS(t, dir, func(info devcluster.Info) {
		got, err := os.ReadFile(info.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, firstCA) {
			t.Error("second run: the CA was made again, want the one in the data directory reused")
		}
	})
}

// connectOverTLS connects a device with the SDK over TLS, the control
// plane's and the executor's connection both.
func connectOverTLS(t *testing.T, cp string, ccfg *tls.Config) {
	t.Helper()
	connected := make(chan struct{}, 1)
	cfg := device.DefaultConfig()
	cfg.ControlPlane = cp
	cfg.DeviceID = "dev-tls"
	cfg.TLS = ccfg
	cfg.OnStateChange = func(sc device.StateChange) {
		if sc.To == device.Connected {
			select {
			case connected <- struct{}{}:
			default:
			}
		}
	}
	d, err := device.Connect(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		t.Fatal("device not connected over TLS within 30s")
	}
}
