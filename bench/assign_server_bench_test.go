package bench

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// BenchmarkAssignServer measures, per call, a health Check (the no-op) and
// an Assign of a known device through gRPC on loopback, against the
// control plane replica `berth bench assign` runs in process (its whole
// interceptor chain, the benchmark's cluster, tenants and 20-rule policy),
// from 64 concurrent callers. ns/op, cpu-ns/op (this process's processor time,
// which the wall time on loopback hides) and allocs/op are of the client
// and the server together (both run here, with etcd idle); the difference
// between the two sub-benchmarks is what an Assign costs beyond the stack.
// writes/op must stay 0: a known device's Assign writes nothing.
func BenchmarkAssignServer(b *testing.B) {
	const devices = 1000
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	reg := registry.New(testutil.EtcdClient(b, testutil.StartEtcd(b)), "")

	bgCtx, stopBg := context.WithCancel(context.Background())
	var bg errgroup.Group
	b.Cleanup(func() {
		stopBg()
		if err := bg.Wait(); err != nil && !errors.Is(err, context.Canceled) {
			b.Errorf("background: %v", err)
		}
	})
	rules := DefaultAssignConfig().Rules
	if err := registerAssignCluster(ctx, bgCtx, &bg, reg, benchLabels(rules), log); err != nil {
		b.Fatal(err)
	}
	for _, t := range benchTenantRecords() {
		if err := reg.PutTenant(ctx, t); err != nil {
			b.Fatal(err)
		}
	}
	r, err := newBenchControlPlane(-1, -1, nil, reg, log)
	if err != nil {
		b.Fatal(err)
	}
	lis, err := rpcserver.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx, lis) }()
	b.Cleanup(func() {
		stopRun()
		if err := <-done; err != nil {
			b.Errorf("replica: %v", err)
		}
	})
	cl, err := dial(lis.Addr().String(), AssignConfig{Conns: 1, Concurrency: 1}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.close)
	if err := waitServing(ctx, cl.healths[0], controlplanev1.ControlPlaneService_ServiceDesc.ServiceName); err != nil {
		b.Fatal(err)
	}
	if _, err := applyBenchPolicy(ctx, reg, rules, log); err != nil {
		b.Fatal(err)
	}
	if err := waitPolicy(ctx, cl.assigns[0]); err != nil {
		b.Fatal(err)
	}
	reqs, _, err := primeDevices(ctx, cl.assigns, devices)
	if err != nil {
		b.Fatal(err)
	}
	// Known devices: their records are in the replica's cache.
	cache := r.Cache()
	testutil.WaitFor(b, testutil.DefaultTimeout, "the known devices' records in the cache", func() bool { return cache.AssignmentCount() > devices })

	// Calls come from 64 goroutines, as `berth bench assign`'s workers
	// (on one connection: the per-call cost, not the spread over
	// connections, is measured).
	const workers = 64
	// run runs call b.N times from the workers, and reports this process's
	// processor time per call.
	run := func(b *testing.B, call func(i int) error) {
		b.Helper()
		b.ReportAllocs()
		b.SetParallelism(max(1, workers/runtime.GOMAXPROCS(0)))
		before, err := processCPU(0)
		if err != nil {
			b.Fatal(err)
		}
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := call(int(next.Add(1))); err != nil {
					b.Error(err)
					return
				}
			}
		})
		after, err := processCPU(0)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(after-before)/float64(b.N), "cpu-ns/op")
	}
	b.Run("noop", func(b *testing.B) {
		hc, req := cl.healths[0], &healthpb.HealthCheckRequest{}
		run(b, func(int) error {
			_, err := hc.Check(ctx, req)
			return err
		})
	})
	b.Run("assign-known", func(b *testing.B) {
		c := cl.assigns[0]
		writes := r.ControlPlane().Stats().Writes
		run(b, func(i int) error {
			_, err := c.Assign(ctx, reqs[i%len(reqs)])
			return err
		})
		b.ReportMetric(float64(r.ControlPlane().Stats().Writes-writes)/float64(b.N), "writes/op")
	})
}
