package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/access"
	"github.com/berthproject/berth/device"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/internal/tlsfiles"
)

// revocationBound is how soon a revocation must close the device's stream
// (issue 10: within 2 s on every replica; the rest is the ctl process and
// the SDK seeing the Goodbye).
const revocationBound = 5 * time.Second

// x509Device is a device of TestX509Fleet connected with the Go SDK; its
// state changes are kept for the test to wait on.
type x509Device struct {
	id      string
	dev     *device.Device
	changes chan device.StateChange
	// received holds the payloads of the messages the device acknowledged.
	received chan string
}

// TestX509Fleet runs, as real processes, a control plane with enrollment
// closed and two executors, all on TLS from `berth cert` files, and an
// x509 enrollment made with `berth ctl`: devices with their own client
// certificates connect with the Go SDK and receive a message sent through
// MessagingService; an impostor using another device's id, a certificate
// of another CA and a token replayed over another connection are refused;
// revoking a device closes its stream and keeps it out.
func TestX509Fleet(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	dir, otherDir := t.TempDir(), t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	ids := []string{"dev-1", "dev-2", "dev-3", "dev-4"}
	certCmds := [][]string{
		{"cert", "ca", "--dir", dir},
		{"cert", "server", "--dir", dir, "--host", "127.0.0.1,localhost"},
		{"cert", "ca", "--dir", otherDir, "--name", "another CA"},
		{"cert", "device", "dev-5", "--dir", otherDir},
	}
	for _, id := range ids {
		certCmds = append(certCmds, []string{"cert", "device", id, "--dir", dir})
	}
	for i, args := range certCmds {
		if err := start(t, fmt.Sprintf("cert-%d", i), args...).wait(30 * time.Second); err != nil {
			t.Fatalf("berth %s: %v", strings.Join(args, " "), err)
		}
	}
	deviceTLS := func(t *testing.T, certDir, id string) *tls.Config {
		t.Helper()
		files := tlsfiles.ClientFiles{CA: p("ca.pem")}
		if id != "" {
			files.Cert = filepath.Join(certDir, "device-"+id+".pem")
			files.Key = filepath.Join(certDir, "device-"+id+"-key.pem")
		}
		cfg, err := tlsfiles.ClientConfig(files, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	serve := []string{"--tls-cert", p("server.pem"), "--tls-key", p("server-key.pem")}
	etcd := startEtcd(t)
	priv, pub := keygen(t)
	cp := start(t, "controlplane", append([]string{"controlplane", "--etcd", etcd, "--signing-key", priv,
		"--listen", "127.0.0.1:0", "--executor-ca", p("ca.pem")}, serve...)...).addr()
	tlsCtl := func(args ...string) string { return ctl(t, cp, append([]string{"--ca", p("ca.pem")}, args...)...) }
	tlsCtl("group", "put", "group-1", "--capacity", "100")
	execs := []string{"x509-exec-1", "x509-exec-2"}
	for _, id := range execs {
		start(t, id, append([]string{"executor", "--etcd", etcd, "--group", "group-1", "--id", id,
			"--capacity", "10", "--token-public-key", pub, "--lease-ttl", "3s", "--refresh", "1s"}, serve...)...).addr()
	}
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "executors registered", func() bool {
		out := tlsCtl("executors")
		return strings.Contains(out, execs[0]) && strings.Contains(out, execs[1])
	})
	tlsCtl("enrollment", "create", "factory", "--kind", "x509", "--ca-file", p("ca.pem"))

	// The fleet: dev-1, dev-3 and dev-4 connect with their own
	// certificates. dev-2 never calls Assign itself, so that any record of
	// it would be the impostor's.
	connectCtx, stopDevices := context.WithCancel(context.Background())
	t.Cleanup(stopDevices)
	fleet := map[string]*x509Device{}
	for _, id := range []string{"dev-1", "dev-3", "dev-4"} {
		xd := &x509Device{id: id, changes: make(chan device.StateChange, 256), received: make(chan string, 16)}
		cfg := device.DefaultConfig()
		cfg.ControlPlane, cfg.DeviceID, cfg.TLS = cp, id, deviceTLS(t, dir, id)
		cfg.Backoff.BaseDelay, cfg.Backoff.MaxDelay = 50*time.Millisecond, 500*time.Millisecond
		cfg.OnStateChange = func(sc device.StateChange) {
			select {
			case xd.changes <- sc:
			default: // the test reads only the first changes it waits for
			}
		}
		d, err := device.Connect(connectCtx, cfg)
		if err != nil {
			t.Fatalf("device.Connect %s: %v", id, err)
		}
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			for m := range d.Messages() {
				select {
				case xd.received <- string(m.Payload):
				default:
				}
				// A failed Ack (the stream went) is fine: the test
				// checks the payload it got.
				_ = m.Ack(context.Background())
			}
		}()
		t.Cleanup(func() {
			_ = d.Close()
			<-readerDone
		})
		xd.dev = d
		fleet[id] = xd
	}
	for id, xd := range fleet {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := xd.dev.WaitForState(ctx, device.Connected)
		cancel()
		if err != nil {
			t.Fatalf("%s did not connect over mTLS: %v", id, err)
		}
	}

	// MessagingService over TLS with the harness's admin API key.
	mcfg, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{CA: p("ca.pem")}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mconn, err := grpc.NewClient(cp, grpc.WithTransportCredentials(credentials.NewTLS(mcfg)),
		grpc.WithPerRPCCredentials(access.APIKeyCredentials(apiKey(t))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mconn.Close() })
	mc := messagingv1.NewMessagingServiceClient(mconn)
	for _, id := range []string{"dev-1", "dev-3", "dev-4"} {
		payload := "hello " + id
		sendOnline(t, mc, id, payload)
		select {
		case got := <-fleet[id].received:
			if got != payload {
				t.Errorf("%s received %q, want %q", id, got, payload)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s received nothing within 10s of a DELIVERED send", id)
		}
	}

	cpConn := func(t *testing.T, cfg *tls.Config) controlplanev1.ControlPlaneServiceClient {
		t.Helper()
		cc, err := grpc.NewClient(cp, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return controlplanev1.NewControlPlaneServiceClient(cc)
	}
	assign := func(client controlplanev1.ControlPlaneServiceClient, id string) (*controlplanev1.AssignResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return client.Assign(ctx, &controlplanev1.AssignRequest{DeviceId: id})
	}
	recorded := func(t *testing.T) []string {
		t.Helper()
		var recs []rbRecord
		if err := json.Unmarshal([]byte(tlsCtl("devices", "-o", "json")), &recs); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, r.Device)
		}
		return got
	}

	t.Run("impostors refused, nothing written", func(t *testing.T) {
		cases := []struct {
			name    string
			tls     *tls.Config
			claimed string
			want    codes.Code
		}{
			{"dev-1's certificate claiming dev-2", deviceTLS(t, dir, "dev-1"), "dev-2", codes.PermissionDenied},
			{"a certificate of another CA", deviceTLS(t, otherDir, "dev-5"), "dev-5", codes.Unauthenticated},
			{"no certificate", deviceTLS(t, dir, ""), "dev-2", codes.Unauthenticated},
		}
		for _, tc := range cases {
			_, err := assign(cpConn(t, tc.tls), tc.claimed)
			if got := status.Code(err); got != tc.want {
				t.Errorf("Assign %s with %s: %v, want %v", tc.claimed, tc.name, err, tc.want)
			}
		}
		got := recorded(t)
		for _, id := range []string{"dev-2", "dev-5"} {
			if slices.Contains(got, id) {
				t.Errorf("ctl devices lists %s after its refused Assigns: %q", id, got)
			}
		}
		if !slices.Contains(got, "dev-1") {
			t.Errorf("ctl devices lists %q, want dev-1 among them (the listing works)", got)
		}
	})

	t.Run("token replayed over another connection refused", func(t *testing.T) {
		resp, err := assign(cpConn(t, deviceTLS(t, dir, "dev-1")), "dev-1")
		if err != nil {
			t.Fatalf("Assign dev-1 with its own certificate: %v", err)
		}
		dest := resp.GetDestination()
		if len(dest.GetEndpoints()) == 0 || dest.GetToken() == "" {
			t.Fatalf("Assign dev-1 answered %v, want endpoints and a token", dest)
		}
		ep := dest.GetEndpoints()[0]
		drain(fleet["dev-1"].changes)
		cases := []struct {
			name string
			tls  *tls.Config
			want codes.Code
		}{
			{"dev-2's certificate", deviceTLS(t, dir, "dev-2"), codes.Unauthenticated},
			{"no certificate", deviceTLS(t, dir, ""), codes.Unauthenticated},
			// The same token on dev-1's own certificate is welcomed: the
			// refusals above are the binding's. It replaces dev-1's SDK
			// session, which reconnects.
			{"dev-1's own certificate", deviceTLS(t, dir, "dev-1"), codes.OK},
		}
		for _, tc := range cases {
			if got := helloCode(t, ep, tc.tls, dest.GetToken(), "dev-1"); got != tc.want {
				t.Errorf("Connect with dev-1's token on %s: %v, want %v", tc.name, got, tc.want)
			}
		}
		// The SDK's session was replaced by the welcomed stream; it
		// reconnects.
		xd := fleet["dev-1"]
		sc := xd.waitChange(t, 30*time.Second, "dev-1's SDK session replaced", func(sc device.StateChange) bool {
			return sc.From == device.Connected && sc.To != device.Connected
		})
		if ge := (*device.GoodbyeError)(nil); !errors.As(sc.Err, &ge) || ge.Reason != device.GoodbyeReplaced {
			t.Errorf("dev-1's SDK session ended with %v, want Goodbye REPLACED", sc.Err)
		}
		xd.waitChange(t, 30*time.Second, "dev-1's SDK connected again", func(sc device.StateChange) bool { return sc.To == device.Connected })
	})

	t.Run("revocation disconnects", func(t *testing.T) {
		xd := fleet["dev-3"]
		drain(xd.changes)
		revokedAt := time.Now()
		tlsCtl("device", "revoke", "dev-3", "--reason", "e2e")
		sc := xd.waitChange(t, revocationBound+10*time.Second, "dev-3's stream closed after its revocation", func(sc device.StateChange) bool {
			return sc.From == device.Connected && sc.To != device.Connected
		})
		if ge := (*device.GoodbyeError)(nil); !errors.As(sc.Err, &ge) || ge.Reason != device.GoodbyeRevoked {
			t.Fatalf("dev-3's stream ended with %v, want Goodbye REVOKED", sc.Err)
		}
		if took := time.Since(revokedAt); took > revocationBound {
			t.Errorf("dev-3's stream closed %v after the revoke command started, want within %v", took, revocationBound)
		}
		sc = xd.waitChange(t, 10*time.Second, "dev-3's SDK refused at its next Assign", func(sc device.StateChange) bool {
			return sc.From == device.Assigning && sc.Err != nil
		})
		if status.Code(sc.Err) != codes.PermissionDenied {
			t.Errorf("dev-3's SDK: next Assign failed with %v, want PERMISSION_DENIED", sc.Err)
		}
		if _, err := assign(cpConn(t, deviceTLS(t, dir, "dev-3")), "dev-3"); status.Code(err) != codes.PermissionDenied {
			t.Errorf("Assign dev-3 after its revocation: %v, want PERMISSION_DENIED", err)
		}
		for _, id := range []string{"dev-1", "dev-4"} {
			if st := fleet[id].dev.State(); st != device.Connected {
				t.Errorf("%s is %v after dev-3's revocation, want connected", id, st)
			}
		}
	})
}

// waitChange waits, bounded, for the device's next state change that
// satisfies match and returns it.
func (xd *x509Device) waitChange(t *testing.T, timeout time.Duration, what string, match func(device.StateChange) bool) device.StateChange {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case sc := <-xd.changes:
			if match(sc) {
				return sc
			}
		case <-deadline:
			t.Fatalf("no %s within %v (state %v)", what, timeout, xd.dev.State())
			return device.StateChange{}
		}
	}
}

// apiKey is the harness's admin API key (see startEtcd).
func apiKey(t *testing.T) string {
	t.Helper()
	out := os.Getenv("BERTH_API_KEY")
	if out == "" {
		t.Fatal("BERTH_API_KEY not set by startEtcd")
	}
	return out
}

// sendOnline sends payload to a connected device, retrying while the
// control plane does not yet see it connected, and checks it was
// DELIVERED.
func sendOnline(t *testing.T, mc messagingv1.MessagingServiceClient, id, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var resp *messagingv1.SendResponse
	var err error
	_ = testutil.Poll(ctx, pollEvery, func() bool {
		resp, err = mc.Send(ctx, &messagingv1.SendRequest{DeviceId: id, Payload: []byte(payload), ContentType: "text/plain",
			Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY})
		return err == nil || (status.Code(err) != codes.Unavailable && status.Code(err) != codes.FailedPrecondition)
	})
	if err != nil || resp.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED {
		t.Fatalf("send to %s: %v, %v; want DELIVERED", id, resp.GetStatus(), err)
	}
}

// helloCode opens Connect to ep over TLS with cfg, sends Hello with token
// for deviceID and returns the code of the executor's answer: OK for a
// Welcome, else the stream's status.
func helloCode(t *testing.T, ep *controlplanev1.Endpoint, cfg *tls.Config, token, deviceID string) codes.Code {
	t.Helper()
	cfg = cfg.Clone()
	cfg.ServerName = ep.GetTlsServerName()
	cc, err := grpc.NewClient(ep.GetAddress(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := executorv1.NewExecutorServiceClient(cc).Connect(ctx)
	if err != nil {
		return status.Code(err)
	}
	if err := cs.Send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Hello{
		Hello: &executorv1.Hello{Token: token, DeviceId: deviceID}}}); err != nil {
		t.Logf("send Hello: %v (the answer follows)", err)
	}
	resp, err := cs.Recv()
	if err != nil {
		return status.Code(err)
	}
	if resp.GetWelcome() == nil {
		t.Fatalf("executor's first frame is %T, want a Welcome or an error", resp.GetFrame())
	}
	return codes.OK
}

// drain empties ch of what it holds now.
func drain(ch <-chan device.StateChange) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
