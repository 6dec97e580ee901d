package e2e

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// etcdProxy is a toxiproxy proxy (the library, in the test process) in
// front of the etcd at ep, on a free loopback port.
type etcdProxy struct {
	p  *toxiproxy.Proxy
	ep string // the proxy's endpoint, as a URL like ep
}

func startEtcdProxy(t *testing.T, ep string) *etcdProxy {
	t.Helper()
	u, err := url.Parse(ep)
	if err != nil {
		t.Fatal(err)
	}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "etcd", "127.0.0.1:0", u.Host)
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return &etcdProxy{p: p, ep: u.Scheme + "://" + p.Listen}
}

// latency adds ms of latency each way.
func (x *etcdProxy) latency(t *testing.T, ms int) {
	t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		doc := fmt.Sprintf(`{"name":"latency-%s","type":"latency","stream":"%s","attributes":{"latency":%d}}`, stream, stream, ms)
		if _, err := x.p.Toxics.AddToxicJson(strings.NewReader(doc)); err != nil {
			t.Fatalf("toxiproxy latency: %v", err)
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
