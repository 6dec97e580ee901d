package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
)

// netProxy is a toxiproxy proxy (the library, in the test process) on a
// free loopback port, in front of one upstream address.
type netProxy struct {
	p *toxiproxy.Proxy
}

func startProxy(t *testing.T, name, upstream string) *netProxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return &netProxy{p: p}
}

// etcdProxy is a netProxy in front of the etcd at ep.
type etcdProxy struct {
	*netProxy
	ep string // the proxy's endpoint, as a URL like ep
}

func startEtcdProxy(t *testing.T, ep string) *etcdProxy {
	t.Helper()
	u, err := url.Parse(ep)
	if err != nil {
		t.Fatal(err)
	}
	x := startProxy(t, "etcd", u.Host)
	return &etcdProxy{netProxy: x, ep: u.Scheme + "://" + x.p.Listen}
}

// latency adds ms of latency each way.
func (x *netProxy) latency(t *testing.T, ms int) {
	t.Helper()
	x.toxic(t, "latency", fmt.Sprintf(`{"latency":%d}`, ms))
}

// blackhole drops every byte each way on the open connections, and new
// ones are accepted and then hear nothing: a partition in which no
// connection is refused or reset (toxiproxy's timeout toxic, timeout 0).
func (x *netProxy) blackhole(t *testing.T) {
	t.Helper()
	x.toxic(t, "timeout", `{"timeout":0}`)
}

// toxic adds a toxic of kind with attributes attrs on both streams.
func (x *netProxy) toxic(t *testing.T, kind, attrs string) {
	t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		doc := fmt.Sprintf(`{"name":"%s-%s","type":"%s","stream":"%s","attributes":%s}`, kind, stream, kind, stream, attrs)
		if _, err := x.p.Toxics.AddToxicJson(strings.NewReader(doc)); err != nil {
			t.Fatalf("toxiproxy %s: %v", kind, err)
		}
	}
}

// TestFaultNetworkExecutorsEtcd puts the network between the executors and
// etcd through toxiproxy: first 200 ms of latency each way, then a
// partition longer than the executors' lease TTL (3 s), then the network
// back. The control plane reaches etcd directly. Devices stay connected
// throughout; ONLINE_ONLY sends to them are delivered (the control plane
// reaches executors, and executors know their own streams, whatever etcd
// says of them); once the network is back, the executors register again,
// and the time it takes is reported.
func TestFaultNetworkExecutorsEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	devices, latencyFor, partitionFor := 40, 4*time.Second, 6*time.Second
	if fullFaults() {
		devices, latencyFor, partitionFor = 400, 30*time.Second, 30*time.Second
	}
	ep := startEtcd(t)
	proxy := startEtcdProxy(t, ep)
	priv, pub := keygen(t)
	cp := start(t, "controlplane", "controlplane", "--etcd", ep, "--signing-key", priv, "--listen", "127.0.0.1:0", "--open-enrollment")
	cpAddr := cp.addr()
	ctl(t, cpAddr, "group", "put", "group-1", "--capacity", strconv.Itoa(2*devices))
	var ids []string
	for i := 1; i <= 2; i++ {
		id := fmt.Sprintf("group-1-exec-%d", i)
		start(t, id, "executor", "--etcd", proxy.ep, "--group", "group-1", "--id", id, "--capacity", strconv.Itoa(devices),
			"--token-public-key", pub, "--lease-ttl", "3s", "--refresh", "1s", "--drain-timeout", "20s").addr()
		ids = append(ids, id)
	}
	waitRegistered(t, cpAddr, ids...)
	sim, _ := startSimulate(t, cpAddr, devices)
	devs := simIDs(devices)
	mc := messagingClient(t, cpAddr)
	sendsFor := func(phase string, d time.Duration) {
		t.Helper()
		var sent, failed int
		var slowest time.Duration
		for start := time.Now(); time.Since(start) < d; {
			id := devs[sent%devices]
			took, err := sendOnce(mc, id)
			sent++
			slowest = max(slowest, took)
			if err != nil {
				failed++
				if failed <= 3 {
					t.Errorf("%s: send to %s: %v (after %v)", phase, id, err, took)
				}
			}
		}
		figure(t, "net-executors-etcd/"+phase, "%d ONLINE_ONLY sends in %v, %d failed, slowest %v", sent, d, failed, slowest.Round(time.Millisecond))
	}
	sendsFor("before", time.Second)

	proxy.latency(t, 200)
	sendsFor("latency-200ms", latencyFor)
	proxy.p.Toxics.ResetToxics(t.Context())

	proxy.p.Stop() // partition: every executor-etcd connection cut, none accepted
	sendsFor("partition", partitionFor)
	if err := proxy.p.Start(); err != nil {
		t.Fatalf("toxiproxy restart: %v", err)
	}
	back := time.Now()
	waitRegistered(t, cpAddr, ids...)
	figure(t, "net-executors-etcd/recovery", "both executors registered again %v after the partition ended", time.Since(back).Round(10*time.Millisecond))
	sendsFor("after", time.Second)

	line := sim.waitNext(30*time.Second, "a summary", func(l string) bool { _, ok := parseSummary(l); return ok })
	s, _ := parseSummary(line)
	figure(t, "net-executors-etcd/devices", "%d of %d connected, %d stream establishments", s.fields["connected"], devices, s.fields["connects"])
	if s.fields["connects"] != devices {
		t.Errorf("%d stream establishments for %d devices: devices were dropped by the network fault", s.fields["connects"], devices)
	}
	sim.signal(syscall.SIGINT)
}

// freeLoopbackAddr returns a loopback address nothing listens on now (the
// port of a listener opened and closed), for a process told to listen on
// it next.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// sendOutcomes are the ONLINE_ONLY sends of one phase.
type sendOutcomes struct {
	sent, ok    int
	failed      map[codes.Code]int
	slowest     time.Duration // of every send
	slowestFail time.Duration
	firstErr    error
}

func (o sendOutcomes) String() string {
	fails := make([]string, 0, len(o.failed))
	for c, n := range o.failed {
		fails = append(fails, fmt.Sprintf("%d %s", n, c))
	}
	slices.Sort(fails)
	failed := "none failed"
	if len(fails) > 0 {
		failed = "failed: " + strings.Join(fails, ", ") + fmt.Sprintf(" (slowest failure %v)", o.slowestFail.Round(time.Millisecond))
	}
	return fmt.Sprintf("%d sends, %d ok, %s, slowest %v", o.sent, o.ok, failed, o.slowest.Round(time.Millisecond))
}

// sendFor sends to devs in turn, one at a time, each with a deadline of
// timeout, for d.
func sendFor(mc messagingv1.MessagingServiceClient, devs []string, d, timeout time.Duration) sendOutcomes {
	o := sendOutcomes{failed: map[codes.Code]int{}}
	for start := time.Now(); time.Since(start) < d; {
		took, err := sendWithin(mc, devs[o.sent%len(devs)], timeout)
		o.sent++
		o.slowest = max(o.slowest, took)
		if err != nil {
			o.failed[status.Code(err)]++
			o.slowestFail = max(o.slowestFail, took)
			if o.firstErr == nil {
				o.firstErr = err
			}
			continue
		}
		o.ok++
	}
	return o
}

// sendWithin is one ONLINE_ONLY Send to dev with a deadline of timeout.
func sendWithin(mc messagingv1.MessagingServiceClient, dev string, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	_, err := mc.Send(ctx, &messagingv1.SendRequest{DeviceId: dev, Payload: []byte("ping"), ContentType: "text/plain"})
	return time.Since(start), err
}

// recovery sends to devs in turn from a network's return until every
// device took one send in a row, within bound; it returns the time to the
// first send that succeeded and to the first of that last run of
// successes (every send ok from then on), and the sends that failed.
func recovery(t *testing.T, mc messagingv1.MessagingServiceClient, devs []string, bound time.Duration) (first, allOK time.Duration, failed int) {
	t.Helper()
	back := time.Now()
	first = -1
	streak, streakStart := 0, time.Duration(0)
	for i := 0; streak < len(devs); i++ {
		if time.Since(back) > bound {
			t.Fatalf("sends not all ok %v after the network came back (%d failed; first ok after %v)", bound, failed, first)
		}
		_, err := sendWithin(mc, devs[i%len(devs)], 5*time.Second)
		at := time.Since(back)
		if err != nil {
			failed++
			streak = 0
			continue
		}
		if first < 0 {
			first = at
		}
		if streak == 0 {
			streakStart = at
		}
		streak++
	}
	return first, streakStart, failed
}

// TestFaultNetworkControlPlaneExecutors puts the network between the
// control plane and the executors through toxiproxy, while devices reach
// the executors directly: each executor serves control planes on an
// internal listener (--internal-listen) that the control plane reaches
// through its proxy (--internal-advertise). ONLINE_ONLY sends run
// throughout: 200 ms of latency each way, a partition that refuses and
// cuts connections (the proxy stopped), the network back, a partition
// that drops every byte and refuses nothing (a black hole), the network
// back. Devices never notice (not one is dropped); sends succeed under
// latency; in a partition they fail fast with UNAVAILABLE when connections
// are refused, and with DEADLINE_EXCEEDED within the caller's deadline in
// a black hole; and they all succeed again within seconds of the network's
// return (the control plane reconnects at most 2 s apart).
func TestFaultNetworkControlPlaneExecutors(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	devices, latencyFor, partitionFor := 40, 4*time.Second, 4*time.Second
	if fullFaults() {
		devices, latencyFor, partitionFor = 400, 30*time.Second, 30*time.Second
	}
	// A black-holed Send waits for its deadline: this one, short, so that
	// a phase sees several.
	const blackholeDeadline = 2 * time.Second
	ep := startEtcd(t)
	priv, pub := keygen(t)
	cp := start(t, "controlplane", "controlplane", "--etcd", ep, "--signing-key", priv, "--listen", "127.0.0.1:0", "--open-enrollment")
	cpAddr := cp.addr()
	ctl(t, cpAddr, "group", "put", "group-1", "--capacity", strconv.Itoa(2*devices))
	var ids []string
	var proxies []*netProxy
	internal := map[string]string{} // executor → its advertised internal address
	for i := 1; i <= 2; i++ {
		id := fmt.Sprintf("group-1-exec-%d", i)
		listen := freeLoopbackAddr(t)
		x := startProxy(t, id, listen)
		start(t, id, "executor", "--etcd", ep, "--group", "group-1", "--id", id, "--capacity", strconv.Itoa(devices),
			"--token-public-key", pub, "--internal-listen", listen, "--internal-advertise", x.p.Listen).addr()
		ids, proxies, internal[id] = append(ids, id), append(proxies, x), x.p.Listen
	}
	waitRegistered(t, cpAddr, ids...)
	var recs []struct {
		ID       string `json:"id"`
		Address  string `json:"address"`
		Internal string `json:"internal_address"`
	}
	if err := json.Unmarshal([]byte(ctl(t, cpAddr, "executors", "-o", "json")), &recs); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Internal != internal[r.ID] || r.Address == r.Internal {
			t.Fatalf("executor %s: address %s, internal address %q; want the proxy's %s", r.ID, r.Address, r.Internal, internal[r.ID])
		}
	}
	sim, _ := startSimulate(t, cpAddr, devices)
	devs := simIDs(devices)
	mc := messagingClient(t, cpAddr)
	all := func(f func(*netProxy)) {
		for _, x := range proxies {
			f(x)
		}
	}
	phase := func(name string, d, timeout time.Duration) sendOutcomes {
		t.Helper()
		o := sendFor(mc, devs, d, timeout)
		figure(t, "net-controlplane-executors/"+name, "%v in %v", o, d)
		return o
	}
	recovered := func(name string) {
		t.Helper()
		first, allOK, failed := recovery(t, mc, devs, 60*time.Second)
		figure(t, "net-controlplane-executors/"+name, "first send ok %v after the network came back, every send ok from %v on (%d failed before)",
			first.Round(time.Millisecond), allOK.Round(time.Millisecond), failed)
		// Reconnects are at most execclient.ReconnectMaxDelay (2 s) apart:
		// the margin is for a loaded machine.
		if allOK > 10*time.Second {
			t.Errorf("%s: sends all ok only %v after the network came back; want within 10 s", name, allOK)
		}
	}

	if o := phase("before", time.Second, 15*time.Second); o.ok != o.sent {
		t.Fatalf("before the fault: %v; first error %v", o, o.firstErr)
	}

	all(func(x *netProxy) { x.latency(t, 200) })
	if o := phase("latency-200ms", latencyFor, 15*time.Second); o.ok != o.sent {
		t.Errorf("latency: %v; want every send ok (first error %v)", o, o.firstErr)
	}
	all(func(x *netProxy) { x.p.Toxics.ResetToxics(t.Context()) })

	all(func(x *netProxy) { x.p.Stop() }) // refused and cut
	o := phase("partition-refused", partitionFor, 15*time.Second)
	if o.sent == 0 || o.failed[codes.Unavailable] != o.sent-o.ok || o.slowestFail > 5*time.Second {
		t.Errorf("partition (refused): %v; want every failure UNAVAILABLE, within 5 s (first error %v)", o, o.firstErr)
	}
	all(func(x *netProxy) {
		if err := x.p.Start(); err != nil {
			t.Fatalf("toxiproxy restart: %v", err)
		}
	})
	recovered("recovery-refused")

	all(func(x *netProxy) { x.blackhole(t) })
	o = phase("partition-blackhole", partitionFor, blackholeDeadline)
	if o.sent == 0 || o.failed[codes.DeadlineExceeded]+o.failed[codes.Unavailable] != o.sent-o.ok || o.slowestFail > blackholeDeadline+time.Second {
		t.Errorf("partition (black hole): %v; want every failure DEADLINE_EXCEEDED or UNAVAILABLE within the %v deadline (first error %v)", o, blackholeDeadline, o.firstErr)
	}
	all(func(x *netProxy) { x.p.Toxics.ResetToxics(t.Context()) })
	recovered("recovery-blackhole")
	phase("after", time.Second, 15*time.Second)

	line := sim.waitNext(30*time.Second, "a summary", func(l string) bool { _, ok := parseSummary(l); return ok })
	s, _ := parseSummary(line)
	figure(t, "net-controlplane-executors/devices", "%d of %d connected, %d stream establishments (%d dropped)", s.fields["connected"], devices, s.fields["connects"], s.fields["connects"]-devices)
	if s.fields["connects"] != devices || s.fields["connected"] != devices {
		t.Errorf("%d connected, %d stream establishments for %d devices: devices were dropped by a fault on a path they do not use", s.fields["connected"], s.fields["connects"], devices)
	}
	sim.signal(syscall.SIGINT)
}
