package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/internal/tlsfiles"
)

// TestTLSCluster runs a control plane and two executors serving TLS from
// `berth cert` files: a simulated fleet connects over TLS (verifying the
// servers; open enrollment: device certificates are TestX509Fleet's), a
// service authenticates with its client certificate (--operator-ca,
// --cert-role), the control plane reaches an executor over TLS to deliver
// its Send, and plaintext clients are refused.
func TestTLSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, args := range [][]string{
		{"cert", "ca", "--dir", dir},
		{"cert", "server", "--dir", dir, "--host", "127.0.0.1,localhost"},
		{"cert", "client", "ops", "--dir", dir},
	} {
		if err := start(t, "cert-"+args[1], args...).wait(30 * time.Second); err != nil {
			t.Fatalf("berth %s: %v", strings.Join(args, " "), err)
		}
	}
	serve := []string{"--tls-cert", p("server.pem"), "--tls-key", p("server-key.pem")}
	etcd := startEtcd(t)
	priv, pub := keygen(t)
	cp := start(t, "controlplane", append([]string{"controlplane", "--etcd", etcd, "--signing-key", priv,
		"--listen", "127.0.0.1:0", "--executor-ca", p("ca.pem"), "--open-enrollment",
		"--operator-ca", p("ca.pem"), "--cert-role", "ops=service"}, serve...)...)
	cpAddr := cp.addr()
	tlsCtl := func(args ...string) string { return ctl(t, cpAddr, append([]string{"--ca", p("ca.pem")}, args...)...) }
	tlsCtl("group", "put", "group-1", "--capacity", "100")
	var ids []string
	for _, id := range []string{"tls-exec-1", "tls-exec-2"} {
		ex := start(t, id, append([]string{"executor", "--etcd", etcd, "--group", "group-1", "--id", id,
			"--capacity", "50", "--token-public-key", pub, "--lease-ttl", "3s", "--refresh", "1s"}, serve...)...)
		ex.addr()
		ids = append(ids, id)
	}
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "executors registered", func() bool {
		out := tlsCtl("executors")
		return strings.Contains(out, ids[0]) && strings.Contains(out, ids[1])
	})

	const devices = 20
	sim := start(t, "simulate", "simulate", "--controlplane", cpAddr, "--devices", "20", "--every", "200ms",
		"--backoff-base", "50ms", "--backoff-max", "1s", "--ca", p("ca.pem"))
	sim.waitLine(60*time.Second, "20 devices connected over TLS on both executors", func(line string) bool {
		s, ok := parseSummary(line)
		return ok && s.fields["connected"] == devices && len(s.executors) == 2
	})

	// Messaging over mTLS: the control plane reaches the device's executor
	// over TLS with its service token.
	ccfg, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{CA: p("ca.pem"), Cert: p("client-ops.pem"), Key: p("client-ops-key.pem")}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(cpAddr, grpc.WithTransportCredentials(credentials.NewTLS(ccfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	mc := messagingv1.NewMessagingServiceClient(cc)
	id := simID(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var resp *messagingv1.SendResponse
	_ = testutil.Poll(ctx, 100*time.Millisecond, func() bool {
		resp, err = mc.Send(ctx, &messagingv1.SendRequest{DeviceId: id, Payload: []byte("over tls"), ContentType: "text/plain",
			Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY})
		return status.Code(err) != codes.Unavailable
	})
	if err != nil || resp.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED {
		t.Fatalf("send to %s over TLS: %v, %v; want DELIVERED", id, resp.GetStatus(), err)
	}

	// Plaintext is refused by the control plane.
	plain, err := grpc.NewClient(cpAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer pcancel()
	if _, err := messagingv1.NewMessagingServiceClient(plain).GetDevice(pctx, &messagingv1.GetDeviceRequest{DeviceId: id}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext GetDevice against a TLS control plane: %v, want UNAVAILABLE (no connection)", err)
	}
}
