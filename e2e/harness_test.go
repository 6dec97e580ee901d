package e2e

// The shared harness of the e2e tests, apart from the processes themselves
// (proc_test.go) and the fleets (fleet_harness_test.go): a cluster of real
// processes, its keys, reading what berth ctl prints, the MessagingService
// from the tests' side, and small helpers of concurrency.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/berthproject/berth/access"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/testutil"
)

// pollEvery is how often the e2e waits check a condition that has no
// channel to wait on: each check costs RPCs or a berth ctl process.
const pollEvery = 50 * time.Millisecond

// keygen writes a signing key pair with `berth keygen` into a directory of
// the test, and returns the paths of the private and the public key.
func keygen(t *testing.T) (priv, pub string) {
	t.Helper()
	dir := t.TempDir()
	priv, pub = filepath.Join(dir, "signing.pem"), filepath.Join(dir, "public.pem")
	if err := start(t, "keygen", "keygen", "--private", priv, "--public", pub).wait(30 * time.Second); err != nil {
		t.Fatalf("keygen: %v", err)
	}
	return priv, pub
}

// cluster is a control plane and executors, all real processes.
type cluster struct {
	t         *testing.T
	etcd      string
	privKey   string
	pubKey    string
	cp        *proc
	cpAddr    string
	executors map[string]*proc
}

// startCluster starts a control plane and, per group, n executors of the
// given capacity.
func startCluster(t *testing.T, groups, perGroup, execCapacity int) *cluster {
	t.Helper()
	return startClusterOn(t, startEtcd(t), groups, perGroup, execCapacity, "3s")
}

// startClusterOn is startCluster on the etcd at etcdEP, which already has
// the admin key (see bootstrapAdminKey).
// Executors keep their records under leases of leaseTTL.
func startClusterOn(t *testing.T, etcdEP string, groups, perGroup, execCapacity int, leaseTTL string) *cluster {
	t.Helper()
	c := &cluster{t: t, etcd: etcdEP, executors: map[string]*proc{}}
	priv, pub := keygen(t)
	c.privKey, c.pubKey = priv, pub
	c.cp = start(t, "controlplane", "controlplane", "--etcd", c.etcd, "--signing-key", priv, "--listen", "127.0.0.1:0", "--open-enrollment")
	c.cpAddr = c.cp.addr()
	for g := 1; g <= groups; g++ {
		ctl(t, c.cpAddr, "group", "put", fmt.Sprintf("group-%d", g), "--capacity", strconv.Itoa(perGroup*execCapacity))
	}
	for g := 1; g <= groups; g++ {
		for i := 1; i <= perGroup; i++ {
			id := fmt.Sprintf("group-%d-exec-%d", g, i)
			c.executors[id] = start(t, id, "executor", "--etcd", c.etcd, "--group", fmt.Sprintf("group-%d", g),
				"--id", id, "--capacity", strconv.Itoa(execCapacity), "--token-public-key", pub,
				"--lease-ttl", leaseTTL, "--refresh", "1s", "--drain-timeout", "20s")
			c.executors[id].addr()
		}
	}
	var ids []string
	for id := range c.executors {
		ids = append(ids, id)
	}
	waitRegistered(t, c.cpAddr, ids...)
	return c
}

// restartControlPlane starts a new control plane on the cluster's etcd and
// signing key, and returns its address.
func (c *cluster) restartControlPlane(t *testing.T) string {
	t.Helper()
	c.cp = start(t, "controlplane-2", "controlplane", "--etcd", c.etcd, "--signing-key", c.privKey, "--listen", "127.0.0.1:0", "--open-enrollment")
	c.cpAddr = c.cp.addr()
	waitServing(t, c.cpAddr)
	return c.cpAddr
}

// waitServing waits until the control plane at addr reports SERVING (its
// views of etcd loaded): it prints its address before.
func waitServing(t *testing.T, addr string) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "control plane "+addr+" serving", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
}

// messagingClient dials a control plane's MessagingService with the test's
// admin key (BERTH_API_KEY, see startEtcd); the connection
// is closed when the test ends.
func messagingClient(t *testing.T, addr string) messagingv1.MessagingServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.APIKeyCredentials(os.Getenv("BERTH_API_KEY"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return messagingv1.NewMessagingServiceClient(cc)
}

// getDevice asks for a device's state, bounded.
func getDevice(mc messagingv1.MessagingServiceClient, id string) (*messagingv1.GetDeviceResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return mc.GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: id})
}

// sendQueued queues n messages "<prefix>-<i>" for dev, one after the
// other, and checks that each answered QUEUED. The device may never have
// been assigned yet (allow_unassigned).
func sendQueued(t *testing.T, mc messagingv1.MessagingServiceClient, dev, prefix string, n int) {
	t.Helper()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := mc.Send(ctx, &messagingv1.SendRequest{DeviceId: dev, Payload: fmt.Appendf(nil, "%s-%d", prefix, i),
			ContentType: "text/plain", Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE, Ttl: durationpb.New(time.Hour), AllowUnassigned: true})
		cancel()
		if err != nil || resp.GetStatus() != messagingv1.SendStatus_SEND_STATUS_QUEUED {
			t.Fatalf("queue message %d for %s: %v, %v; want QUEUED", i, dev, resp.GetStatus(), err)
		}
	}
}

// checkOrder checks that got is "<prefix>-0" to "<prefix>-<n-1>", in order.
func checkOrder(t *testing.T, got []string, prefix string, n int) {
	t.Helper()
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	if !slices.Equal(got, want) {
		t.Errorf("device received %q, want %q", got, want)
	}
}

// writeFile writes content to path, failing the test if it cannot.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// rbRecord is an assignment record as `ctl devices -o json` prints it.
type rbRecord struct {
	Device  string    `json:"device"`
	Group   string    `json:"group"`
	Label   string    `json:"label"`
	Reason  string    `json:"reason"`
	Writer  string    `json:"writer"`
	MovedAt time.Time `json:"moved_at"`
}

// rbStatus is the part of `ctl rebalance status -o json` TestRebalance
// reads.
type rbStatus struct {
	Leader string `json:"leader"`
	Held   string `json:"held"`
	Plan   struct {
		Total string `json:"total"`
	} `json:"plan"`
	Progress struct {
		Moved string `json:"moved"`
	} `json:"progress"`
}

// rbRecords reads every assignment record with `ctl devices -o json`.
func rbRecords(t *testing.T, cp string) []rbRecord {
	t.Helper()
	var recs []rbRecord
	if err := json.Unmarshal([]byte(ctl(t, cp, "devices", "-o", "json")), &recs); err != nil {
		t.Fatal(err)
	}
	return recs
}

// rbStatusOf reads the rebalancer's state with `ctl rebalance status -o
// json`.
func rbStatusOf(t *testing.T, cp string) rbStatus {
	t.Helper()
	var st rbStatus
	if err := json.Unmarshal([]byte(ctl(t, cp, "rebalance", "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// explainedMessagesPerDay is the messages_per_day `berth ctl explain` shows
// for the device (0 before its first assignment record).
func explainedMessagesPerDay(t *testing.T, cp, deviceID string) float64 {
	t.Helper()
	var out struct {
		Input struct {
			History struct {
				MessagesPerDay json.Number `json:"messagesPerDay"`
			} `json:"history"`
		} `json:"input"`
	}
	raw := ctl(t, cp, "explain", deviceID, "-o", "json")
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("explain -o json: %v\n%s", err, raw)
	}
	s := strings.Trim(string(out.Input.History.MessagesPerDay), `"`)
	if s == "" {
		return 0
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(fmt.Errorf("messagesPerDay %q: %w", s, err))
	}
	return f
}

// maxInWindow is the most times within any window of length w.
func maxInWindow(at []time.Time, w time.Duration) int {
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	best, j := 0, 0
	for i := range at {
		for j < len(at) && at[j].Sub(at[i]) < w {
			j++
		}
		best = max(best, j-i)
	}
	return best
}

// parallel calls fn(0..n-1) from workers goroutines and waits for them.
func parallel(workers, n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}

// onceError keeps the first error it is given.
type onceError struct {
	mu  sync.Mutex
	err error
}

// set keeps err if it is the first.
func (o *onceError) set(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = err
	}
}

// get returns the first error set, nil when none was.
func (o *onceError) get() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}
