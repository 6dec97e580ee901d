package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// serveControlPlane is Serve in controlplane mode: a control plane on the
// registry, in this process alone, so that the load generator's and etcd's
// goroutines and garbage do not share its two CPUs' scheduler and collector
// (they do in production neither). It prints its address once its cache is
// loaded; "stats" answers its counters, without forcing a collection.
func serveControlPlane(ctx context.Context, cfg ServeConfig, reg *registry.Registry, in io.Reader, out io.Writer, log *slog.Logger) error {
	if reg == nil {
		return errors.New("bench serve: controlplane mode needs a registry")
	}
	tc, err := cfg.serverTLS(log)
	if err != nil {
		return err
	}
	lis, err := rpcserver.Listen(cfg.Listen)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r, err := newBenchControlPlane(cfg.TokenCacheSize, cfg.LabelMemoSize, tc, reg, log)
	if err != nil {
		lis.Close()
		return err
	}
	cp, cache := r.ControlPlane(), r.Cache()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.Run(gctx, lis) })
	g.Go(func() error {
		if err := cache.WaitReady(gctx); err != nil {
			return err
		}
		if err := json.NewEncoder(out).Encode(readyLine{Addr: lis.Addr().String()}); err != nil {
			return fmt.Errorf("bench serve: %w", err)
		}
		return answer(gctx, in, out, func() (ServerStats, error) {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return ServerStats{
				HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc, StackInuse: ms.StackInuse, Goroutines: runtime.NumGoroutine(),
				Writes: cp.Stats().Writes, Assignments: cache.AssignmentCount(),
			}, nil
		}, cancel)
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// newBenchControlPlane wires a control plane replica (without the
// rebalancer) with a fresh signing key, and the given token cache and label
// memo sizes (-1 keeps the default). With tc it serves TLS and enrollment
// is closed: every Assign must prove its device's identity (the benchmark's
// devices present client certificates of an X.509 enrollment); without, it
// serves plaintext with open enrollment, as the benchmark's devices hold no
// credentials then.
func newBenchControlPlane(tokenCache, labelMemo int, tc *tls.Config, reg *registry.Registry, log *slog.Logger) (*node.Replica, error) {
	priv, err := token.GenerateKey()
	if err != nil {
		return nil, err
	}
	signer, err := token.NewSigner(priv, nil)
	if err != nil {
		return nil, err
	}
	cfg := node.DefaultReplicaConfig()
	cfg.Rebalance = nil
	// The load comes from one host and a few device ids: no rate limits.
	cfg.RateLimits = node.RateLimits{}
	cfg.OpenEnrollment = tc == nil
	cfg.RPC.TLS = tc
	if tokenCache >= 0 {
		cfg.ControlPlane.TokenCacheSize = tokenCache
	}
	if labelMemo >= 0 {
		cfg.ControlPlane.LabelMemoSize = labelMemo
	}
	return node.NewReplica(cfg, node.ReplicaDeps{Registry: reg, Signer: signer, Log: log})
}

// controlPlaneUnderTest is a control plane the benchmark measures: in a
// child process (Command set) or in this one.
type controlPlaneUnderTest struct {
	addr string
	// pid is the child's process id, 0 in this process.
	pid int
	// counters returns its writes and cached assignment records.
	counters func(ctx context.Context) (writes int64, assignments int, err error)
	// stop stops it and waits.
	stop func() error
}

// startControlPlaneUnderTest starts a control plane with the given token
// cache and label memo sizes (-1 keeps the default) on the registry at
// etcdAddr: a `bench serve` child when cfg.Command is set, else in this
// process. With pk it serves TLS with pk's server certificate, enrollment
// closed.
func startControlPlaneUnderTest(ctx context.Context, cfg AssignConfig, pk *benchTLS, reg *registry.Registry, etcdAddr string, tokenCache, labelMemo int, name string, log *slog.Logger) (*controlPlaneUnderTest, error) {
	var files ServeConfig
	if pk != nil {
		files.TLSCert, files.TLSKey = pk.certFile, pk.keyFile
	}
	if len(cfg.Command) == 0 {
		tc, err := files.serverTLS(log)
		if err != nil {
			return nil, err
		}
		r, err := newBenchControlPlane(tokenCache, labelMemo, tc, reg, log)
		if err != nil {
			return nil, err
		}
		lis, err := rpcserver.Listen("127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(runCtx, lis) }()
		return &controlPlaneUnderTest{
			addr: lis.Addr().String(),
			counters: func(context.Context) (int64, int, error) {
				return r.ControlPlane().Stats().Writes, r.Cache().AssignmentCount(), nil
			},
			stop: func() error { stop(); return <-done },
		}, nil
	}
	c, err := startChild(ctx, cfg.Command, cfg.Env, cfg.ChildStderr, ServeConfig{
		Mode: ModeControlPlane, Listen: "127.0.0.1:0", Etcd: etcdAddr, Prefix: registry.DefaultPrefix,
		TokenCacheSize: tokenCache, LabelMemoSize: labelMemo, LogLevel: "warn",
		TLSCert: files.TLSCert, TLSKey: files.TLSKey, CPUProfile: cfg.profile(name),
	})
	if err != nil {
		return nil, err
	}
	return &controlPlaneUnderTest{
		addr: c.addr,
		pid:  c.cmd.Process.Pid,
		counters: func(ctx context.Context) (int64, int, error) {
			st, err := c.stats(ctx)
			return st.Writes, st.Assignments, err
		},
		stop: func() error { return c.stop() },
	}, nil
}

// cpu is a probe of the processor time of this process and of the control
// planes cps (nil entries are skipped; none in a child: they run here).
func cpuOf(cps ...*controlPlaneUnderTest) *cpuProbe {
	p := &cpuProbe{}
	for _, cp := range cps {
		if cp != nil && cp.pid != 0 {
			p.pids = append(p.pids, cp.pid)
		}
	}
	return p
}

// leanUnderTest is bench assign's lean baseline server: grpc-go's defaults
// and the health service (ModeLean), in a child process (Command set) or
// in this one.
type leanUnderTest struct {
	addr string
	pid  int
	stop func() error
}

// startLean starts the lean baseline server, plaintext, like
// startControlPlaneUnderTest; its Assign answers with answer (an
// AssignResponse in the wire format; nil serves no Assign).
func startLean(ctx context.Context, cfg AssignConfig, answer []byte) (*leanUnderTest, error) {
	if len(cfg.Command) == 0 {
		srv, err := newLeanServer(nil, answer)
		if err != nil {
			return nil, err
		}
		lis, err := rpcserver.Listen("127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(lis) }()
		return &leanUnderTest{addr: lis.Addr().String(), stop: func() error {
			srv.Stop()
			if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("bench: lean server: %w", err)
			}
			return nil
		}}, nil
	}
	c, err := startChild(ctx, cfg.Command, cfg.Env, cfg.ChildStderr, ServeConfig{Mode: ModeLean, Listen: "127.0.0.1:0", LogLevel: "warn", LeanAnswer: answer, CPUProfile: cfg.profile("lean")})
	if err != nil {
		return nil, err
	}
	return &leanUnderTest{addr: c.addr, pid: c.cmd.Process.Pid, stop: c.stop}, nil
}
