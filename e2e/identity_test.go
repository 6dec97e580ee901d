package e2e

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/device"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
)

// TestSymmetricKeyFleet runs a control plane with enrollment closed: a
// fleet provisioned from a symmetric-key enrollment connects; an impostor
// without credentials, or signing with another device's key, is refused;
// revoking a device disconnects it and keeps it out, the others staying.
func TestSymmetricKeyFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	const devices = 20
	etcd := startEtcd(t)
	priv, pub := keygen(t)
	cp := start(t, "controlplane", "controlplane", "--etcd", etcd, "--signing-key", priv, "--listen", "127.0.0.1:0").addr()
	ctl(t, cp, "group", "put", "group-1", "--capacity", "100")
	start(t, "exec-1", "executor", "--etcd", etcd, "--group", "group-1", "--id", "exec-1", "--capacity", "100",
		"--token-public-key", pub, "--lease-ttl", "3s", "--refresh", "1s").addr()
	waitRegistered(t, cp, "exec-1")

	keyFile := filepath.Join(t.TempDir(), "sensors.key")
	ctl(t, cp, "enrollment", "create", "sensors", "--kind", "symmetric", "--key-out", keyFile)
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}

	sim := start(t, "simulate", "simulate", "--controlplane", cp, "--devices", "20", "--every", "200ms",
		"--backoff-base", "50ms", "--backoff-max", "500ms", "--enrollment", "sensors", "--enrollment-key-file", keyFile)
	connected := func(n int) func(string) bool {
		return func(line string) bool {
			s, ok := parseSummary(line)
			return ok && s.fields["connected"] == n
		}
	}
	sim.waitLine(60*time.Second, "the enrolled fleet connected", connected(devices))

	cc, err := grpc.NewClient(cp, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := controlplanev1.NewControlPlaneServiceClient(cc)
	victim := simID(1)
	impostors := []struct {
		name string
		md   metadata.MD
		want codes.Code
	}{
		{"no credentials", nil, codes.Unauthenticated},
		{"another device's key", metadata.Pairs(device.SignatureHeader,
			(&device.SymmetricKey{EnrollmentID: "sensors", DeviceKey: device.DeriveDeviceKey(key, simID(2))}).Sign(victim, time.Now())), codes.Unauthenticated},
		{"the device's own key", metadata.Pairs(device.SignatureHeader,
			(&device.SymmetricKey{EnrollmentID: "sensors", DeviceKey: device.DeriveDeviceKey(key, victim)}).Sign(victim, time.Now())), codes.OK},
	}
	for _, tc := range impostors {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if tc.md != nil {
			ctx = metadata.NewOutgoingContext(ctx, tc.md)
		}
		_, err := client.Assign(ctx, &controlplanev1.AssignRequest{DeviceId: victim})
		cancel()
		if got := status.Code(err); got != tc.want {
			t.Errorf("Assign as %s with %s: %v, want %v", victim, tc.name, err, tc.want)
		}
	}

	ctl(t, cp, "device", "revoke", simID(3), "--reason", "e2e")
	sim.waitLine(30*time.Second, "the revoked device disconnected, the others staying", newLines(sim, connected(devices-1)))
	// It stays out: three summaries later it is still not connected.
	seen := 0
	sim.waitLine(30*time.Second, "three more summaries without the revoked device", newLines(sim, func(line string) bool {
		s, ok := parseSummary(line)
		if !ok {
			return false
		}
		if s.fields["connected"] != devices-1 {
			t.Errorf("summary after the revocation: %s", line)
		}
		seen++
		return seen == 3
	}))
	ctl(t, cp, "device", "unrevoke", simID(3))
	sim.waitLine(30*time.Second, "the device back after its revocation was lifted", newLines(sim, connected(devices)))
}

// newLines makes match of waitLine skip the lines p printed before now
// (waitLine reads every line from the first).
func newLines(p *proc, match func(string) bool) func(string) bool {
	p.mu.Lock()
	n := len(p.lines)
	p.mu.Unlock()
	i := 0
	return func(line string) bool {
		i++
		return i > n && match(line)
	}
}
