package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/embedetcd"
	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/rebalance"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// RebalanceConfig sets up `berth bench rebalance`.
type RebalanceConfig struct {
	// Devices connect first to Groups groups; then one more, empty, group
	// is added and the rebalancer fills it.
	Devices, Groups int
	// Fleets is the number of `berth simulate` processes the devices are
	// split over (each device holds one TCP connection).
	Fleets int
	// Rate, Thresholds and MinInterval tune the rebalancer.
	Rate        float64
	Thresholds  rebalance.Thresholds
	MinInterval time.Duration
	// ConnectTimeout bounds the fleet's first connection, RebalanceTimeout
	// the rebalance.
	ConnectTimeout, RebalanceTimeout time.Duration
	// ExecutorCommand starts an executor child (`berth bench serve`),
	// SimulateCommand a fleet (`berth simulate`).
	ExecutorCommand, SimulateCommand []string
	// ChildStderr receives the children's logs.
	ChildStderr io.Writer
}

// DefaultRebalanceConfig is what `berth bench rebalance` runs.
func DefaultRebalanceConfig() RebalanceConfig {
	d := rebalance.DefaultConfig()
	return RebalanceConfig{
		Devices: 20000, Groups: 4, Fleets: 2,
		Rate: 200, Thresholds: d.Thresholds, MinInterval: d.MinInterval,
		ConnectTimeout: 5 * time.Minute, RebalanceTimeout: 5 * time.Minute,
	}
}

// Validate checks c.
func (c RebalanceConfig) Validate() error {
	switch {
	case c.Devices <= 0 || c.Groups <= 0 || c.Fleets <= 0:
		return errors.New("bench rebalance: devices, groups and fleets must be positive")
	case c.Devices/c.Fleets > 15000:
		return fmt.Errorf("bench rebalance: %d devices per fleet process; at most 15000 (one open file each)", c.Devices/c.Fleets)
	case len(c.ExecutorCommand) == 0 || len(c.SimulateCommand) == 0:
		return errors.New("bench rebalance: executor and simulate commands are required")
	}
	return nil
}

// RebalanceReport is the outcome.
type RebalanceReport struct {
	Config RebalanceConfig
	Env    Env
	// ConnectTime is how long the fleet took to connect; ConnectPeak the
	// most devices that connected in one second meanwhile.
	ConnectTime time.Duration
	ConnectPeak int
	// Before and After count devices per group when the group was added
	// and at the end.
	Before, After map[string]int
	// Minimum is the fewest moves that bring every group within the
	// thresholds, computed here from Before; PlannerMinimum is what the
	// rebalancer's first plan said.
	Minimum, PlannerMinimum int
	// Moves are the Move calls the rebalancer made; Confirmed and Failed
	// its own counts.
	Moves             int
	Confirmed, Failed int64
	// ToThreshold is the time from adding the group until every group was
	// within the thresholds; Settled until the plan was empty with no move
	// in flight.
	ToThreshold, Settled time.Duration
	// PeakConnects is the most devices that connected in one second during
	// the rebalance, as the control plane's presence watch saw them; Assigns
	// are the Assign calls it answered meanwhile.
	PeakConnects int
	Assigns      int64
	// PeakMoves is the most Move calls in one second.
	PeakMoves int
	// Routes count the moves by "from -> to" group.
	Routes map[string]int
}

// RunRebalance starts an embedded etcd, a control plane with its
// rebalancer (in this process), an executor per group and the fleets (child
// processes), connects the fleet, adds an empty group and measures the
// rebalance.
func RunRebalance(ctx context.Context, cfg RebalanceConfig, log *slog.Logger) (*RebalanceReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ChildStderr == nil {
		cfg.ChildStderr = io.Discard
	}
	rep := &RebalanceReport{Config: cfg, Env: CurrentEnv()}
	dir, err := os.MkdirTemp("", "berth-bench-rebalance-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	etcd, err := embedetcd.Start(ctx, embedetcd.Config{Dir: filepath.Join(dir, "etcd"), AutoCompactionRetention: time.Hour})
	if err != nil {
		return nil, err
	}
	defer etcd.Close()
	cli, err := etcd.Client()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	const prefix = "/bench-rebalance"
	reg := registry.New(cli, prefix)

	priv, err := token.GenerateKey()
	if err != nil {
		return nil, err
	}
	signer, err := token.NewSigner(priv, nil)
	if err != nil {
		return nil, err
	}
	pubFile := filepath.Join(dir, "public.pem")
	pb, err := token.MarshalPublicKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(pubFile, pb, 0o644); err != nil {
		return nil, err
	}

	// Executors: one per group, each its own process, sized for the whole
	// fleet.
	groupCap := cfg.Devices
	var children []*child
	defer func() {
		for _, c := range children {
			_ = c.stop()
		}
	}()
	startExec := func(g string) error {
		c, err := startChild(ctx, cfg.ExecutorCommand, nil, cfg.ChildStderr, ServeConfig{
			Mode: ModeBerth, Listen: "127.0.0.1:0", Etcd: etcd.Endpoint(), Prefix: prefix, PublicKeyFile: pubFile,
			ExecutorID: g + "-exec", GroupID: g, Capacity: groupCap, LogLevel: "warn",
		})
		if err != nil {
			return err
		}
		children = append(children, c)
		return nil
	}
	groups := make([]string, cfg.Groups+1)
	for i := range groups {
		groups[i] = fmt.Sprintf("group-%d", i+1)
	}
	for _, g := range groups[:cfg.Groups] {
		if err := reg.PutGroup(ctx, registry.Group{ID: g, Labels: []string{"default"}, Capacity: groupCap, State: registry.GroupActive}); err != nil {
			return nil, err
		}
		if err := startExec(g); err != nil {
			return nil, err
		}
	}

	// The control plane and its rebalancer, in this process.
	rcfg := node.DefaultReplicaConfig()
	rcfg.ControlPlane.ReplicaID = "bench-cp"
	rcfg.RateLimits = node.RateLimits{} // the load comes from one host
	rcfg.OpenEnrollment = true          // the benchmarks' devices hold no credentials
	rb := rebalance.DefaultConfig()
	rb.Rate, rb.Thresholds, rb.MinInterval = cfg.Rate, cfg.Thresholds, cfg.MinInterval
	rb.MaxInFlight = max(rb.MaxInFlight, int(5*cfg.Rate))
	rcfg.Rebalance = &rb
	mover := &countingMover{routes: map[string]int{}}
	r, err := node.NewReplica(rcfg, node.ReplicaDeps{Registry: reg, Signer: signer, Log: log,
		WrapMover: func(m rebalance.Mover) rebalance.Mover { mover.m = m; return mover }})
	if err != nil {
		return nil, err
	}
	cp := r.ControlPlane()
	lis, err := rpcserver.Listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	runCtx, stopRun := context.WithCancel(ctx)
	var run errgroup.Group
	defer func() {
		stopRun()
		_ = run.Wait()
	}()
	run.Go(func() error { return r.Run(runCtx, lis) })

	// The control plane's view of who connects, per second.
	view := reg.NewPresenceView(log.With("component", "presence"))
	mover.from = func(device string) string { p, _ := view.Get(device); return p.GroupID }
	conns := &perSecond{}
	view.OnChange(func(_ string, p *registry.Presence) {
		if p != nil {
			conns.add(time.Now())
		}
	})
	run.Go(func() error { return view.Run(runCtx) })
	if err := view.WaitReady(ctx); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, time.Minute, "the control plane to see every executor", func() bool { return cp.KnownExecutors() == cfg.Groups }); err != nil {
		return nil, err
	}

	// The fleet.
	start := time.Now()
	per := cfg.Devices / cfg.Fleets
	var fleets []*exec.Cmd
	defer func() {
		for _, f := range fleets {
			_ = f.Process.Signal(os.Interrupt)
		}
		for _, f := range fleets {
			_ = f.Wait()
		}
	}()
	for i := range cfg.Fleets {
		n := per
		if i == cfg.Fleets-1 {
			n = cfg.Devices - per*(cfg.Fleets-1)
		}
		args := append(slices.Clone(cfg.SimulateCommand[1:]), "--log-level", "warn", "--controlplane", lis.Addr().String(), "--devices", fmt.Sprint(n),
			"--id-prefix", fmt.Sprintf("f%d-", i), "--every", "0", "--start-rate", "2000", "--backoff-base", "100ms", "--backoff-max", "5s")
		cmd := exec.CommandContext(ctx, cfg.SimulateCommand[0], args...)
		cmd.Stdout, cmd.Stderr = io.Discard, cfg.ChildStderr
		cmd.WaitDelay = childStopTimeout
		dieWithParent(cmd)
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("bench rebalance: start fleet: %w", err)
		}
		fleets = append(fleets, cmd)
	}
	if err := waitFor(ctx, cfg.ConnectTimeout, fmt.Sprintf("%d devices to connect", cfg.Devices), func() bool { return view.Len() == cfg.Devices }); err != nil {
		return nil, err
	}
	rep.ConnectTime = time.Since(start)
	rep.ConnectPeak = conns.peak(start, time.Now())
	log.Info("fleet connected", "devices", cfg.Devices, "took", rep.ConnectTime)
	// Quiet: no storm hold, nothing to do.
	if err := waitFor(ctx, time.Minute, "the rebalancer to settle", func() bool {
		st, err := reg.RebalanceState(ctx)
		return err == nil && st.Held == "" && st.Plan.Total == 0 && time.Since(st.UpdatedAt) < 2*time.Second
	}); err != nil {
		return nil, err
	}

	// The new group.
	newGroup := groups[cfg.Groups]
	if err := startExec(newGroup); err != nil {
		return nil, err
	}
	rep.Before = countByGroup(view)
	rep.Minimum = minimumMoves(rep.Before, groups, cfg.Thresholds)
	assigns0 := cp.Stats().Assigns
	t0 := time.Now()
	if err := reg.PutGroup(ctx, registry.Group{ID: newGroup, Labels: []string{"default"}, Capacity: groupCap, State: registry.GroupActive}); err != nil {
		return nil, err
	}
	plannerMinimum := func() {
		if st, err := reg.RebalanceState(ctx); err == nil && rep.PlannerMinimum == 0 && st.UpdatedAt.After(t0) && st.Plan.BalanceMinimum > 0 {
			rep.PlannerMinimum = st.Plan.BalanceMinimum
		}
	}
	if err := waitFor(ctx, cfg.RebalanceTimeout, "every group within the thresholds", func() bool {
		plannerMinimum()
		return minimumMoves(countByGroup(view), groups, cfg.Thresholds) == 0
	}); err != nil {
		return nil, err
	}
	rep.ToThreshold = time.Since(t0)
	var last registry.RebalanceState
	if err := waitFor(ctx, cfg.RebalanceTimeout, "the rebalancer to finish", func() bool {
		st, err := reg.RebalanceState(ctx)
		if err != nil {
			return false
		}
		last = st
		return st.UpdatedAt.After(t0) && st.Plan.Total == 0 && st.Progress.InFlight == 0
	}); err != nil {
		return nil, err
	}
	rep.Settled = time.Since(t0)
	end := time.Now()
	rep.After = countByGroup(view)
	rep.Moves, rep.PeakMoves = mover.result(t0, end)
	mover.mu.Lock()
	rep.Routes = maps.Clone(mover.routes)
	mover.mu.Unlock()
	rep.Confirmed, rep.Failed = last.Progress.Moved, last.Progress.Failed
	rep.PeakConnects = conns.peak(t0, end)
	rep.Assigns = cp.Stats().Assigns - assigns0
	// The rebalancer stops before the fleet does, so that it does not
	// chase devices that are leaving.
	stopRun()
	_ = run.Wait()
	return rep, nil
}

// countByGroup counts present devices per group.
func countByGroup(v *registry.PresenceView) map[string]int {
	n := map[string]int{}
	v.Range(func(p registry.Presence) bool {
		n[p.GroupID]++
		return true
	})
	return n
}

// minimumMoves is the fewest moves that bring every group of groups (equal
// capacities) within th of the mean: max(excess above the upper bounds,
// shortfall below the lower bounds).
func minimumMoves(by map[string]int, groups []string, th rebalance.Thresholds) int {
	total := 0
	for _, g := range groups {
		total += by[g]
	}
	fair := float64(total) / float64(len(groups))
	t := max(th.Abs, th.Rel*fair)
	var over, under float64
	for _, g := range groups {
		d := float64(by[g]) - fair
		over += max(0, d-t)
		under += max(0, -d-t)
	}
	return int(math.Ceil(max(over, under) - 1e-9))
}

// waitFor polls cond every 100ms until it holds, timeout passes (an error
// naming what) or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	tk := time.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("bench rebalance: waited %v for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tk.C:
		}
	}
	return nil
}

// perSecond counts events by wall-clock second.
type perSecond struct {
	mu sync.Mutex
	n  map[int64]int
}

func (p *perSecond) add(t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == nil {
		p.n = map[int64]int{}
	}
	p.n[t.Unix()]++
}

// peak is the most events in one second from from to to.
func (p *perSecond) peak(from, to time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	best := 0
	for s := from.Unix(); s <= to.Unix(); s++ {
		best = max(best, p.n[s])
	}
	return best
}

// countingMover counts the moves the rebalancer asks for, by second.
type countingMover struct {
	m    rebalance.Mover
	from func(device string) string

	mu     sync.Mutex
	at     []time.Time
	routes map[string]int // "from -> to"
}

func (c *countingMover) Move(ctx context.Context, addr string, req *executorv1.MoveRequest) error {
	from := c.from(req.GetDeviceId())
	err := c.m.Move(ctx, addr, req)
	if err == nil {
		c.mu.Lock()
		c.at = append(c.at, time.Now())
		c.routes[from+" -> "+req.GetDestination().GetGroupId()]++
		c.mu.Unlock()
	}
	return err
}

// result counts the moves from from to to, and the most in one second
// (sliding window).
func (c *countingMover) result(from, to time.Time) (n, peak int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var in []time.Time
	for _, t := range c.at {
		if !t.Before(from) && !t.After(to) {
			in = append(in, t)
		}
	}
	j := 0
	for i := range in {
		for j < len(in) && in[j].Sub(in[i]) < time.Second {
			j++
		}
		peak = max(peak, j-i)
	}
	return len(in), peak
}

// Format writes the report.
func (r *RebalanceReport) Format(w io.Writer) error {
	var b bytes.Buffer
	c := r.Config
	fmt.Fprintln(&b, "berth bench rebalance")
	fmt.Fprintln(&b, machineLine(r.Env))
	fmt.Fprintf(&b, "setup:   %d devices (berth simulate, %d processes, one TCP connection and the SDK each) on %d groups, one real executor\n", c.Devices, c.Fleets, c.Groups)
	fmt.Fprintln(&b, "         process per group; embedded etcd, a control plane and its rebalancer in the bench process; all on this machine")
	fmt.Fprintf(&b, "         then one empty group (and its executor) is added; rebalancer: %.0f moves/s, thresholds %.0f%% and %.0f devices\n", c.Rate, 100*c.Thresholds.Rel, c.Thresholds.Abs)
	fmt.Fprintf(&b, "fleet connected in %s (peak %d connects/s seen by the control plane)\n", fmtDur(r.ConnectTime), r.ConnectPeak)
	fmt.Fprintf(&b, "before:  %s\n", groupsLine(r.Before))
	fmt.Fprintf(&b, "after:   %s\n", groupsLine(r.After))
	fmt.Fprintf(&b, "time to reach the threshold: %s (plan empty, no move in flight: %s)\n", fmtDur(r.ToThreshold), fmtDur(r.Settled))
	fmt.Fprintf(&b, "moves: %d made, %d minimum needed (%s; the rebalancer's first plan said %d); %d confirmed, %d failed\n",
		r.Moves, r.Minimum, ratio(float64(r.Moves), float64(r.Minimum)), r.PlannerMinimum, r.Confirmed, r.Failed)
	fmt.Fprintf(&b, "routes:  %s\n", groupsLine(r.Routes))
	fmt.Fprintf(&b, "rates: at most %d moves in one second (limit %.0f); peak %d device connects/s seen by the control plane during the rebalance; %d Assign calls meanwhile\n",
		r.PeakMoves, c.Rate, r.PeakConnects, r.Assigns)
	_, err := w.Write(b.Bytes())
	return err
}

func groupsLine(by map[string]int) string {
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, by[k])
	}
	return b.String()
}
