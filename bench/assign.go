package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/berthproject/berth/controlplane"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/internal/embedetcd"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// Case names of the assign benchmark, in the order they run.
const (
	CaseNoop        = "noop"
	CaseAssignKnown = "assign-known"
	CaseAssignNew   = "assign-new"
)

// AssignConfig tunes RunAssign.
type AssignConfig struct {
	// Duration is the measured period of each case.
	Duration time.Duration
	// Warmup is the unmeasured period before each case.
	Warmup time.Duration
	// Concurrency is the number of workers calling back to back.
	Concurrency int
	// Devices is the number of known devices assign-known cycles over; they
	// are assigned once before the case, unmeasured.
	Devices int
	// Conns is the number of client connections the workers share.
	Conns int
	// TempDir is where the temporary etcd data directory is made ("" is
	// the system's default).
	TempDir string
}

// DefaultAssignConfig returns what `berth bench assign` runs.
func DefaultAssignConfig() AssignConfig {
	return AssignConfig{Duration: 5 * time.Second, Warmup: time.Second, Concurrency: 64, Devices: 10000, Conns: 4}
}

// Validate checks c.
func (c AssignConfig) Validate() error {
	switch {
	case c.Duration <= 0:
		return fmt.Errorf("bench: duration %v: must be positive", c.Duration)
	case c.Warmup < 0:
		return fmt.Errorf("bench: warm-up %v: must not be negative", c.Warmup)
	case c.Concurrency <= 0:
		return fmt.Errorf("bench: concurrency %d: must be positive", c.Concurrency)
	case c.Devices <= 0:
		return fmt.Errorf("bench: devices %d: must be positive", c.Devices)
	case c.Conns <= 0:
		return fmt.Errorf("bench: conns %d: must be positive", c.Conns)
	}
	return nil
}

// Shape of the cluster RunAssign measures. assign-known must measure the
// steady-state reconnect, where the decision matches the device's record
// and nothing is written, whatever the placement policy's stickiness: so
// group-1 is nearly empty with a very large capacity and group-2 reports
// itself half full, and every placement picks group-1. Both groups are
// still evaluated on every Assign.
const (
	assignGroups        = 2
	assignExecsPerGroup = 2
	bigCapacity         = 1 << 30
	busyCapacity        = 1000
)

// AssignReport is the outcome of RunAssign.
type AssignReport struct {
	Env    Env
	Config AssignConfig
	// Groups and ExecutorRecords describe the registry the control plane
	// read.
	Groups, ExecutorRecords int
	// Cases are noop, assign-known and assign-new, in that order.
	Cases []Result
}

// Case returns the result named name.
func (r *AssignReport) Case(name string) (Result, bool) {
	for _, c := range r.Cases {
		if c.Name == name {
			return c, true
		}
	}
	return Result{}, false
}

// RunAssign starts an embedded etcd and a control plane with two groups of
// two executor records, then measures, with the same clients, a health
// Check (a no-op through the same server stack), Assign of known devices,
// and Assign of new devices. Everything it started is stopped and removed
// when it returns.
func RunAssign(ctx context.Context, cfg AssignConfig, log *slog.Logger) (rep *AssignReport, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp(cfg.TempDir, "berth-bench-assign-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	etcd, err := embedetcd.Start(ctx, embedetcd.Config{Dir: filepath.Join(dir, "etcd")})
	if err != nil {
		return nil, err
	}
	defer etcd.Close()
	cli, err := etcd.Client()
	if err != nil {
		return nil, fmt.Errorf("bench: etcd client: %w", err)
	}
	defer cli.Close()
	reg := registry.New(cli, "")

	// Everything that runs in the background stops when RunAssign returns,
	// before etcd does.
	bgCtx, stop := context.WithCancel(ctx)
	var bg errgroup.Group
	defer func() {
		stop()
		if berr := bg.Wait(); berr != nil && err == nil {
			err = berr
		}
	}()

	if err := registerAssignCluster(ctx, bgCtx, &bg, reg, log); err != nil {
		return nil, err
	}
	cp, cache, addr, err := startControlPlane(bgCtx, &bg, reg, log)
	if err != nil {
		return nil, err
	}

	conns := make([]*grpc.ClientConn, cfg.Conns)
	defer func() {
		for _, cc := range conns {
			if cc != nil {
				cc.Close()
			}
		}
	}()
	for i := range conns {
		if conns[i], err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	healths := make([]healthpb.HealthClient, cfg.Concurrency)
	assigns := make([]controlplanev1.ControlPlaneServiceClient, cfg.Concurrency)
	for w := range cfg.Concurrency {
		healths[w] = healthpb.NewHealthClient(conns[w%len(conns)])
		assigns[w] = controlplanev1.NewControlPlaneServiceClient(conns[w%len(conns)])
	}
	if err := waitServing(ctx, healths[0], controlplanev1.ControlPlaneService_ServiceDesc.ServiceName); err != nil {
		return nil, err
	}

	rep = &AssignReport{Env: CurrentEnv(), Config: cfg, Groups: assignGroups, ExecutorRecords: assignGroups * assignExecsPerGroup}
	load := Load{Workers: cfg.Concurrency, Warmup: cfg.Warmup, Duration: cfg.Duration}

	// noop: the standard health Check, through the same interceptors.
	load.Op = func(ctx context.Context, w int) error {
		_, err := healths[w].Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := rep.run(ctx, load, CaseNoop, nil); err != nil {
		return nil, err
	}

	// assign-known: every device was assigned once before, so the decision
	// matches its record and nothing is written.
	known, err := primeDevices(ctx, assigns, cfg.Devices)
	if err != nil {
		return nil, err
	}
	if err := waitAssignments(ctx, cache, cfg.Devices); err != nil {
		return nil, err
	}
	var next atomic.Uint64
	load.Op = func(ctx context.Context, w int) error {
		_, err := assigns[w].Assign(ctx, known[next.Add(1)%uint64(len(known))])
		return err
	}
	if err := rep.run(ctx, load, CaseAssignKnown, cp); err != nil {
		return nil, err
	}

	// assign-new: every call is a device never seen, so each writes its
	// assignment record to etcd.
	var fresh atomic.Uint64
	load.Op = func(ctx context.Context, w int) error {
		id := strconv.AppendUint([]byte("bench-new-"), fresh.Add(1), 10)
		_, err := assigns[w].Assign(ctx, assignRequest(string(id), nil))
		return err
	}
	if err := rep.run(ctx, load, CaseAssignNew, cp); err != nil {
		return nil, err
	}
	return rep, nil
}

// run measures one case; with cp it counts the records written.
func (r *AssignReport) run(ctx context.Context, l Load, name string, cp *controlplane.Server) error {
	var before int64
	if cp != nil {
		before = cp.Stats().Writes
	}
	res, err := l.Run(ctx, name)
	if err != nil {
		return err
	}
	if cp != nil {
		res.RecordsWritten = cp.Stats().Writes - before
	}
	r.Cases = append(r.Cases, res)
	return nil
}

// registerAssignCluster writes the groups and keeps their executor records
// alive in bg until bgCtx ends; it returns once all are visible in etcd.
func registerAssignCluster(ctx, bgCtx context.Context, bg *errgroup.Group, reg *registry.Registry, log *slog.Logger) error {
	for g := range assignGroups {
		gid := fmt.Sprintf("group-%d", g+1)
		capacity := bigCapacity
		if g > 0 {
			capacity = busyCapacity
		}
		if err := reg.PutGroup(ctx, registry.Group{ID: gid, Labels: []string{"default"}, Capacity: capacity, State: registry.GroupActive}); err != nil {
			return err
		}
		for i := range assignExecsPerGroup {
			e := registry.Executor{
				ID:       fmt.Sprintf("%s-exec-%d", gid, i+1),
				GroupID:  gid,
				Address:  fmt.Sprintf("127.0.0.1:%d", 1+g*assignExecsPerGroup+i),
				Capacity: capacity / assignExecsPerGroup,
			}
			if g > 0 {
				e.Connections = e.Capacity / 2
			}
			rr, err := reg.NewRegistration(e, registry.DefaultRegistrationConfig(), log.With("component", "registration", "executor", e.ID))
			if err != nil {
				return err
			}
			bg.Go(func() error { return rr.Run(bgCtx) })
		}
	}
	return poll(ctx, 30*time.Second, "executor records in etcd", func() bool {
		es, err := reg.Executors(ctx)
		return err == nil && len(es) == assignGroups*assignExecsPerGroup
	})
}

// startControlPlane runs a control plane on a free loopback port in bg.
func startControlPlane(bgCtx context.Context, bg *errgroup.Group, reg *registry.Registry, log *slog.Logger) (*controlplane.Server, *registry.Cache, string, error) {
	priv, err := token.GenerateKey()
	if err != nil {
		return nil, nil, "", err
	}
	signer, err := token.NewSigner(priv, nil)
	if err != nil {
		return nil, nil, "", err
	}
	cache := reg.NewCache(log.With("component", "cache"))
	cp, err := controlplane.New(controlplane.DefaultConfig(), cache, reg, signer, log.With("component", "controlplane"))
	if err != nil {
		return nil, nil, "", err
	}
	lis, err := rpcserver.Listen("127.0.0.1:0")
	if err != nil {
		return nil, nil, "", err
	}
	bg.Go(func() error { return cp.Run(bgCtx, lis) })
	return cp, cache, lis.Addr().String(), nil
}

// assignRequest is what a benchmark device sends.
func assignRequest(id string, prev *controlplanev1.PreviousAssignment) *controlplanev1.AssignRequest {
	return &controlplanev1.AssignRequest{
		DeviceId: id,
		Spec:     &controlplanev1.DeviceSpec{Model: "bench-printer", Firmware: "1.0.0"},
		Previous: prev,
	}
}

// primeDevices assigns n known devices once, with every worker, and
// returns the requests they will send again: each remembers its group.
func primeDevices(ctx context.Context, clients []controlplanev1.ControlPlaneServiceClient, n int) ([]*controlplanev1.AssignRequest, error) {
	reqs := make([]*controlplanev1.AssignRequest, n)
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range clients {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return nil
				}
				id := fmt.Sprintf("bench-dev-%06d", i)
				resp, err := c.Assign(gctx, assignRequest(id, nil))
				if err != nil {
					return fmt.Errorf("bench: assigning known device %s: %w", id, err)
				}
				d := resp.GetDestination()
				reqs[i] = assignRequest(id, &controlplanev1.PreviousAssignment{GroupId: d.GetGroupId(), Label: d.GetLabel()})
			}
		})
	}
	return reqs, g.Wait()
}

// waitAssignments waits until the control plane's cache holds n records.
func waitAssignments(ctx context.Context, cache *registry.Cache, n int) error {
	return poll(ctx, 60*time.Second, fmt.Sprintf("%d assignment records in the control plane's cache", n), func() bool {
		return cache.AssignmentCount() >= n
	})
}

// waitServing waits until the health service says service is SERVING.
func waitServing(ctx context.Context, hc healthpb.HealthClient, service string) error {
	var last error
	err := poll(ctx, 30*time.Second, service+" SERVING", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{Service: service})
		last = err
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
	if err != nil && last != nil {
		err = fmt.Errorf("%w (last check: %v)", err, last)
	}
	return err
}

// errTimeout is wrapped by the errors of poll.
var errTimeout = errors.New("bench: timed out")

// poll calls cond every 10ms until it is true, ctx ends or timeout passes.
func poll(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("%w after %v waiting for %s", errTimeout, timeout, what)
		case <-tk.C:
		}
	}
	return nil
}
