// Package devcluster runs a whole berth cluster in one process: an embedded
// etcd, a control plane and groups of executors on free loopback ports, with
// a fresh signing key, each server built by its composition root (package
// internal/node). It is `berth dev`, and the fixture of benchmarks.
package devcluster

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/berthproject/berth/access"
	"github.com/berthproject/berth/controlplane"
	"github.com/berthproject/berth/internal/embedetcd"
	"github.com/berthproject/berth/internal/fleetpage"
	"github.com/berthproject/berth/internal/metrics"
	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/ops"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/internal/tracing"
	"github.com/berthproject/berth/internal/zapslog"
	"github.com/berthproject/berth/rebalance"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// Config describes the cluster.
type Config struct {
	// DataDir holds etcd's data; empty means a temporary directory removed
	// on exit.
	DataDir string
	// Listen is the control plane's address.
	Listen string
	// Prefix is the registry prefix.
	Prefix string
	// Groups and ExecutorsPerGroup shape the fleet of executors.
	Groups, ExecutorsPerGroup int
	// GroupCapacity is each group's capacity; each executor gets an equal
	// share of it.
	GroupCapacity int
	// Executor tunes every executor; ID, GroupID, Address and Capacity are
	// filled in per executor.
	Executor node.ExecutorConfig
	// Replica tunes the control plane replica; its Rebalance runs the
	// rebalancer next to it (nil: off).
	Replica node.ReplicaConfig
	// TLS serves every listener over TLS with a throwaway CA and a server
	// certificate for loopback, made in DataDir/tls or reused from there
	// (Info.CAFile); the control plane reaches executors over TLS too.
	// False: plaintext (`berth dev --insecure`, in-process tests).
	TLS bool
	// Ops is the operations listener (/metrics, /healthz, /readyz, pprof
	// when asked) of the whole process, on a loopback address; it serves
	// HTTPS when TLS is on. Empty Addr: none.
	Ops ops.Config
	// Tracing, when set, traces the control plane's and the executors'
	// calls (internal/tracing). Nil: off.
	Tracing *tracing.Tracing
}

// DefaultConfig is what `berth dev` runs: two groups of two executors.
func DefaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:7070",
		Prefix:            registry.DefaultPrefix,
		Groups:            2,
		ExecutorsPerGroup: 2,
		GroupCapacity:     10000,
		Executor:          node.DefaultExecutorConfig(),
		Replica:           devReplicaConfig(),
		Ops:               devOpsConfig(),
	}
}

// devOpsConfig is the operations listener of `berth dev`: a free loopback
// port.
func devOpsConfig() ops.Config {
	c := ops.DefaultConfig()
	c.Addr = "127.0.0.1:0"
	return c
}

// devReplicaConfig is the control plane of `berth dev`: the defaults, with
// the rebalancer of DevRebalanceConfig.
func devReplicaConfig() node.ReplicaConfig {
	c := node.DefaultReplicaConfig()
	c.Rebalance = DevRebalanceConfig()
	// berth dev keeps enrollment open so the first examples need no
	// credentials; its ready line says so.
	c.OpenEnrollment = true
	return c
}

// DevRebalanceConfig is the rebalancer of `berth dev`: thresholds for
// fleets of hundreds of devices, a short minimum interval.
func DevRebalanceConfig() *rebalance.Config {
	c := rebalance.DefaultConfig()
	c.Thresholds = rebalance.Thresholds{Rel: 0.1, Abs: 10}
	c.MinInterval = time.Minute
	return &c
}

// Info tells where the pieces of a running cluster are.
type Info struct {
	// Etcd is the embedded etcd's client URL.
	Etcd string
	// ControlPlane is the control plane's address.
	ControlPlane string
	// Executors are the executors' addresses by id.
	Executors map[string]string
	// PublicKeyFile holds the token verification key (PEM).
	PublicKeyFile string
	// APIKeyFile holds the admin API key made at start (mode 0600);
	// AdminAPIKey is that key. AdminService and MessagingService need it.
	APIKeyFile, AdminAPIKey string
	// CAFile holds the CA that signed the servers' certificates (PEM);
	// empty when the cluster serves plaintext.
	CAFile string
	// Ops is the operations listener's URL ("https://127.0.0.1:40123");
	// empty when there is none.
	Ops string
}

// Run starts the cluster, calls ready once every server serves and every
// executor is registered, and runs until ctx is cancelled; then it stops
// executors (draining them), the control plane and etcd, in that order.
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(Info)) error {
	if cfg.Groups <= 0 || cfg.ExecutorsPerGroup <= 0 || cfg.GroupCapacity < cfg.ExecutorsPerGroup {
		return fmt.Errorf("devcluster: need at least one group of one executor, and capacity >= executors")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := cfg.DataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "berth-dev-")
		if err != nil {
			return fmt.Errorf("devcluster: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	etcd, err := embedetcd.Start(ctx, embedetcd.Config{Dir: filepath.Join(dir, "etcd"), AutoCompactionRetention: time.Hour})
	if err != nil {
		return err
	}
	defer etcd.Close()
	var met *metrics.Metrics
	if cfg.Ops.Addr != "" {
		met = metrics.New()
	}
	cli, err := etcd.ClientWith(zapslog.New(log.With("component", "etcd-client"), zapcore.WarnLevel), met.EtcdDialOptions()...)
	if err != nil {
		return fmt.Errorf("devcluster: etcd client: %w", err)
	}
	defer cli.Close()
	reg := registry.New(cli, cfg.Prefix)

	priv, err := token.GenerateKey()
	if err != nil {
		return err
	}
	pubFile, err := writePublicKey(dir, priv.Public().(ed25519.PublicKey))
	if err != nil {
		return err
	}
	signer, err := token.NewSigner(priv, nil)
	if err != nil {
		return err
	}
	verifier, err := token.NewVerifier(nil, priv.Public().(ed25519.PublicKey))
	if err != nil {
		return err
	}

	keyFile, adminKey, err := writeAdminKey(ctx, reg, dir)
	if err != nil {
		return err
	}

	var dt *devTLS
	if cfg.TLS {
		if dt, err = setupTLS(dir, cfg.Listen, log); err != nil {
			return err
		}
		cfg.Replica.RPC.TLS = dt.server
		cfg.Replica.Executors.TLS = dt.client
		cfg.Executor.Executor.RPC.TLS = dt.server
		cfg.Executor.Executor.TLSName = "127.0.0.1"
	}
	opsSrv, opsLis, err := openOps(cfg, dt, met, log)
	if err != nil {
		return err
	}
	if opsLis != nil {
		defer opsLis.Close()
	}
	cpLis, err := rpcserver.Listen(cfg.Listen)
	if err != nil {
		return err
	}
	cp, err := node.NewReplica(cfg.Replica, node.ReplicaDeps{Registry: reg, Signer: signer, Log: log, Metrics: met, Tracing: cfg.Tracing})
	if err != nil {
		cpLis.Close()
		return err
	}
	info := Info{Etcd: etcd.Endpoint(), ControlPlane: cpLis.Addr().String(), Executors: map[string]string{}, PublicKeyFile: pubFile, APIKeyFile: keyFile, AdminAPIKey: adminKey}
	if opsSrv != nil {
		opsSrv.AddCheck("controlplane", cp.Ready)
		opsSrv.Handle(fleetpage.Prefix, cp.FleetPage())
		info.Ops = "http://" + opsLis.Addr().String()
		if dt != nil {
			info.Ops = "https://" + opsLis.Addr().String()
		}
	}
	transport := insecure.NewCredentials()
	if dt != nil {
		info.CAFile = dt.caFile
		transport = credentials.NewTLS(dt.client)
	}

	type exec struct {
		ex  *node.Executor
		lis net.Listener
	}
	var execs []exec
	defer func() {
		for _, e := range execs {
			e.lis.Close()
		}
	}()
	for g := range cfg.Groups {
		gid := fmt.Sprintf("group-%d", g+1)
		if err := reg.PutGroup(ctx, registry.Group{ID: gid, Labels: []string{"default"}, Capacity: cfg.GroupCapacity, State: registry.GroupActive}); err != nil {
			cpLis.Close()
			return err
		}
		for i := range cfg.ExecutorsPerGroup {
			lis, err := rpcserver.Listen("127.0.0.1:0")
			if err != nil {
				cpLis.Close()
				return err
			}
			ec := cfg.Executor
			ec.Executor.ID = fmt.Sprintf("%s-exec-%d", gid, i+1)
			ec.Executor.GroupID = gid
			ec.Executor.Address = lis.Addr().String()
			ec.Executor.Capacity = cfg.GroupCapacity / cfg.ExecutorsPerGroup
			ex, err := node.NewExecutor(ec, node.ExecutorDeps{Registry: reg, Verifier: verifier, Log: log.With("component", "executor"), Metrics: met, Tracing: cfg.Tracing})
			if err != nil {
				lis.Close()
				cpLis.Close()
				return err
			}
			if opsSrv != nil {
				opsSrv.AddCheck("executor "+ec.Executor.ID, ex.Ready)
			}
			execs = append(execs, exec{ex, lis})
			info.Executors[ec.Executor.ID] = ec.Executor.Address
		}
	}

	// Executors stop before the control plane, so that devices they redirect
	// find it still answering.
	cpCtx, stopCP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCP()
	var cpGroup errgroup.Group
	cpGroup.Go(func() error { return cp.Run(cpCtx, cpLis) })

	// The operations listener outlives the servers, so their stop shows in
	// /readyz.
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	defer stopOps()
	var opsGroup errgroup.Group
	if opsSrv != nil {
		opsGroup.Go(func() error { return opsSrv.Run(opsCtx, opsLis) })
	}

	g, gctx := errgroup.WithContext(ctx)
	for _, e := range execs {
		g.Go(func() error { return e.ex.Run(gctx, e.lis) })
	}
	g.Go(func() error {
		if err := waitReady(gctx, reg, cp.ControlPlane(), info, transport); err != nil {
			return err
		}
		if ready != nil {
			ready(info)
		}
		return nil
	})
	err = g.Wait()
	stopCP()
	if cerr := cpGroup.Wait(); err == nil {
		err = cerr
	}
	stopOps()
	if oerr := opsGroup.Wait(); err == nil {
		err = oerr
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// openOps builds the operations listener of cfg.Ops, nil when it has no
// address; it serves HTTPS with the cluster's server certificate when TLS
// is on.
func openOps(cfg Config, dt *devTLS, met *metrics.Metrics, log *slog.Logger) (*ops.Server, net.Listener, error) {
	if cfg.Ops.Addr == "" {
		return nil, nil, nil
	}
	oc := cfg.Ops
	if dt != nil {
		oc.TLS = dt.server
	}
	srv, err := ops.New(oc, met.Registry, log.With("component", "ops"))
	if err != nil {
		return nil, nil, err
	}
	lis, err := ops.Listen(oc)
	if err != nil {
		return nil, nil, err
	}
	return srv, lis, nil
}

// waitReady waits until every server reports SERVING, every executor is
// registered, and the control plane's cache has seen them all.
func waitReady(ctx context.Context, reg *registry.Registry, cp *controlplane.Server, info Info, transport credentials.TransportCredentials) error {
	addrs := []string{info.ControlPlane}
	for _, a := range info.Executors {
		addrs = append(addrs, a)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := allServing(ctx, addrs, transport)
		if err != nil {
			return err
		}
		if ok {
			es, err := reg.Executors(ctx)
			if err == nil && len(es) >= len(info.Executors) && cp.KnownExecutors() >= len(info.Executors) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// allServing reports whether every address answers SERVING to a health check.
func allServing(ctx context.Context, addrs []string, transport credentials.TransportCredentials) (bool, error) {
	for _, a := range addrs {
		cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(transport))
		if err != nil {
			return false, fmt.Errorf("devcluster: %w", err)
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		cc.Close()
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return false, nil
		}
	}
	return true, nil
}

// writePublicKey stores the verification key where operators can find it.
func writePublicKey(dir string, pub ed25519.PublicKey) (string, error) {
	b, err := token.MarshalPublicKey(pub)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "token-public.pem")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return "", fmt.Errorf("devcluster: %w", err)
	}
	return p, nil
}

// writeAdminKey creates an admin API key and stores its secret in dir,
// readable by its owner only.
func writeAdminKey(ctx context.Context, reg *registry.Registry, dir string) (file, secret string, err error) {
	k, secret, err := access.NewAPIKey("berth dev admin", []string{string(access.Admin)}, nil, nil, "berth dev", time.Now())
	if err != nil {
		return "", "", err
	}
	if err := reg.CreateAPIKey(ctx, k); err != nil {
		return "", "", err
	}
	file = filepath.Join(dir, "admin.key")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("devcluster: %w", err)
	}
	return file, secret, nil
}
