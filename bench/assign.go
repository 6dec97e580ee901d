package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/berthproject/berth/admin"
	"github.com/berthproject/berth/controlplane"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/internal/codec"
	"github.com/berthproject/berth/internal/embedetcd"
	"github.com/berthproject/berth/registry"
)

// Case names of the assign benchmark, in the order they are reported.
const (
	CaseNoop            = "noop"
	CaseAssignKnown     = "assign-known"
	CaseAssignKnownSign = "assign-known-sign"
	CaseAssignNew       = "assign-new"
	// CaseLean is the lean baseline: a health Check on a grpc-go server
	// with its defaults and nothing else, called in a plain loop (no
	// latencies kept) over connections with grpc-go's defaults.
	CaseLean = "lean"
	// CaseLeanAssign is the floor of an Assign's messages: assign-known's
	// requests sent to the lean server, whose Assign answers each with a
	// prepared copy of a real answer and does nothing else, in the same
	// plain loop as lean. Its ratio to lean is the most any Assign with
	// these messages can keep of a no-op on grpc-go.
	CaseLeanAssign = "lean-assign"
	// CaseAssignMTLS is Assign of a known device proving its identity with
	// its client certificate (an X.509 enrollment), on a TLS server; it
	// runs, with noop on the same TLS stack, instead of the others when
	// AssignConfig.TLS is set.
	CaseAssignMTLS = "assign-mtls"
)

// Targets the report checks (issue 12; issue 10 for TLS), each against a
// baseline measured in the same run: with the benchmark policy,
// assign-known keeps at least AimRatio of noop's throughput,
// assign-known-sign TargetRatio, assign-new NewRatio; paced at
// TargetPacedShare of assign-known's peak, its p99 stays within
// PacedP99Ratio of noop's at the same rate; assign-mtls keeps TargetRatio
// of the TLS noop; and the harness's noop reaches LeanRatio of the lean
// baseline (the load generator is not the limit).
const (
	TargetRatio      = 0.60
	AimRatio         = 0.80
	NewRatio         = 0.40
	PacedP99Ratio    = 1.25
	LeanRatio        = 1 / 1.5
	TargetPacedShare = 0.5
)

// maxTLSConns bounds the connections, and so the device certificates, of
// a TLS run.
const maxTLSConns = 1024

// maxRules is the most label rules a policy may have.
const maxRules = 1000

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
	// Rules is the number of label rules of the placement policy applied
	// before measuring: all but the last never match the benchmark
	// devices, so evaluating them runs all of them (assign-known finds its
	// outcome in the label memo). 0 keeps the built-in default policy.
	Rules int
	// Rounds splits each case's warm-up and measured time in as many
	// rounds; the cases measured together alternate round by round.
	Rounds int
	// PacedShare is the fraction of assign-known's peak rate at which the
	// paced cases run, open loop; 0 skips them.
	PacedShare float64
	// TempDir is where the temporary etcd data directory is made ("" is
	// the system's default).
	TempDir string
	// Command starts each control plane under test as a `bench serve`
	// child once ServeConfig.Args() are appended, so that it has its
	// process, scheduler and collector to itself as in production; empty
	// runs them in this process, with etcd and the load.
	Command []string
	// Env is added to the children's environment (GOGC=200, say).
	Env []string
	// ChildStderr receives the children's standard error (nil discards it).
	ChildStderr io.Writer
	// TLS runs the TLS cases instead: the control plane serves TLS,
	// enrollment closed, with an X.509 enrollment for the benchmark's
	// device CA; each client connection presents the certificate of a
	// device of its own, and its workers ask for that device (Devices is
	// not used: the known devices are the Conns certificates' devices).
	// The cases are noop and assign-mtls, round by round.
	TLS bool
	// ProfileDir, when set (with Command), is where each child writes a
	// CPU profile of itself: controlplane.pprof, controlplane-caches-off.pprof
	// (assign-known-sign's) and lean.pprof.
	ProfileDir string
}

// profile is the CPU profile file of the child named name, "" without
// ProfileDir.
func (c AssignConfig) profile(name string) string {
	if c.ProfileDir == "" {
		return ""
	}
	return filepath.Join(c.ProfileDir, name+".pprof")
}

// DefaultAssignConfig returns what `berth bench assign` runs.
func DefaultAssignConfig() AssignConfig {
	return AssignConfig{Duration: 5 * time.Second, Warmup: time.Second, Concurrency: 64, Devices: 10000, Conns: 4, Rules: 20, Rounds: 5, PacedShare: TargetPacedShare}
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
	case c.Rounds <= 0 || c.Duration/time.Duration(c.Rounds) <= 0:
		return fmt.Errorf("bench: rounds %d: want 1 to the duration in nanoseconds", c.Rounds)
	case c.Rules < 0 || c.Rules > maxRules:
		return fmt.Errorf("bench: rules %d: want 0 to %d", c.Rules, maxRules)
	case !(c.PacedShare >= 0 && c.PacedShare <= 1): // also refuses NaN
		return fmt.Errorf("bench: paced share %v: want 0 to 1", c.PacedShare)
	case c.TLS && c.Conns > maxTLSConns:
		return fmt.Errorf("bench: conns %d with TLS: at most %d (a device certificate each)", c.Conns, maxTLSConns)
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
	// Tenants is the number of tenants stored; Labels the number of labels
	// each group carries.
	Tenants, Labels int
	// PolicyVersion is the version of the placement policy in force during
	// the run, 0 for the built-in default.
	PolicyVersion int64
	// KnownByRule counts the known devices by the rule that gave their
	// label when they were assigned beforehand ("" for the default label).
	KnownByRule map[string]int
	// TokenCacheSize is the token cache of the control plane of every case
	// but assign-known-sign, which runs a second one without a cache.
	TokenCacheSize int
	// RequestBytes and AnswerBytes are the sizes of a known device's
	// request and answer in the wire format (lean-assign sends and answers
	// the same).
	RequestBytes, AnswerBytes int
	// Cases are lean, lean-assign, noop, assign-known, assign-known-sign
	// and assign-new, in that order, each calling back to back (the TLS
	// cases instead: noop and assign-mtls).
	Cases []Result
	// Paced are noop and assign-known again, open loop at
	// Config.PacedShare of assign-known's peak rate.
	Paced []PacedResult
	// LoadAvgEnd is the 1-minute load average when the run ended (-1 when
	// unknown).
	LoadAvgEnd float64
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

// PacedCase returns the paced result named name.
func (r *AssignReport) PacedCase(name string) (PacedResult, bool) {
	for _, c := range r.Paced {
		if c.Name == name {
			return c, true
		}
	}
	return PacedResult{}, false
}

// RuleMatches returns how many known devices a rule (not the default
// label) labelled.
func (r *AssignReport) RuleMatches() int {
	n := 0
	for rule, c := range r.KnownByRule {
		if rule != "" {
			n += c
		}
	}
	return n
}

// RunAssign starts an embedded etcd and a control plane with two groups of
// two executor records and a set of tenants, applies the benchmark policy
// of cfg.Rules label rules and waits until the control plane decides with
// it, assigns the known devices once, then measures with the same clients,
// round after round: a health Check (a no-op through the same server
// stack), Assign of known devices (their tokens re-sent from the token
// cache) and Assign of known devices signing a token on every call (a
// second control plane without a token cache, on the same etcd); then the
// no-op and assign-known again, open loop at cfg.PacedShare of
// assign-known's peak; then Assign of new devices. With cfg.TLS it runs
// noop and assign-mtls instead, the control plane on TLS (see
// AssignConfig.TLS). Everything it started is stopped and removed when it
// returns.
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

	labels := benchLabels(cfg.Rules)
	if err := registerAssignCluster(ctx, bgCtx, &bg, reg, labels, log); err != nil {
		return nil, err
	}
	// With TLS: the PKI, and the enrollment of the device CA, stored
	// before the control plane starts.
	var pk *benchTLS
	if cfg.TLS {
		if pk, err = newBenchTLS(dir); err != nil {
			return nil, err
		}
		if err := pk.enroll(ctx, reg); err != nil {
			return nil, err
		}
	}
	tenants := benchTenantRecords()
	for _, t := range tenants {
		if err := reg.PutTenant(ctx, t); err != nil {
			return nil, fmt.Errorf("bench: storing tenant %s: %w", t.ID, err)
		}
	}
	cpCfg := controlplane.DefaultConfig()
	cp, err := startControlPlaneUnderTest(bgCtx, cfg, pk, reg, etcd.Endpoint(), cpCfg.TokenCacheSize, -1, "controlplane", log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := cp.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	creds, err := deviceCreds(pk, mtlsDevices(cfg.Conns))
	if err != nil {
		return nil, err
	}
	cl, err := dial(cp.addr, cfg, creds)
	if err != nil {
		return nil, err
	}
	defer cl.close()
	if err := waitServing(ctx, cl.healths[0], controlplanev1.ControlPlaneService_ServiceDesc.ServiceName); err != nil {
		return nil, err
	}
	// The policy probe asks for a device of its own: with TLS, over a
	// connection presenting that device's certificate.
	probe := cl.assigns[0]
	if pk != nil {
		pcreds, err := deviceCreds(pk, []string{probeDevice})
		if err != nil {
			return nil, err
		}
		pcl, err := dial(cp.addr, AssignConfig{Conns: 1, Concurrency: 1}, pcreds)
		if err != nil {
			return nil, err
		}
		defer pcl.close()
		probe = pcl.assigns[0]
	}

	rep = &AssignReport{
		Env: CurrentEnv(), Config: cfg, Groups: assignGroups, ExecutorRecords: assignGroups * assignExecsPerGroup,
		Tenants: len(tenants), Labels: len(labels), TokenCacheSize: cpCfg.TokenCacheSize,
	}
	// The policy is applied while the control plane runs, as an operator
	// would, and measuring starts once an Assign names its last rule.
	if cfg.Rules > 0 {
		if rep.PolicyVersion, err = applyBenchPolicy(ctx, reg, cfg.Rules, log); err != nil {
			return nil, err
		}
		if err := waitPolicy(ctx, probe); err != nil {
			return nil, err
		}
	}
	// noop: the standard health Check, through the same interceptors.
	noop := func(ctx context.Context, w int) error {
		_, err := cl.healths[w%len(cl.healths)].Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if pk != nil {
		if err := rep.runMTLS(ctx, cl, cp, noop); err != nil {
			return nil, err
		}
		rep.LoadAvgEnd = loadAvg()
		return rep, nil
	}
	// The known devices are assigned once, unmeasured: each remembers its
	// group, and its record and token are in the control plane's caches.
	known, byRule, err := primeDevices(ctx, cl.assigns, cfg.Devices)
	if err != nil {
		return nil, err
	}
	rep.KnownByRule = byRule
	if err := waitAssignments(ctx, cp, cfg.Devices); err != nil {
		return nil, err
	}
	var next atomic.Uint64
	assignKnown := func(cl *clients) func(ctx context.Context, w int) error {
		return func(ctx context.Context, w int) error {
			_, err := cl.assigns[w%len(cl.assigns)].Assign(ctx, known[next.Add(1)%uint64(len(known))])
			return err
		}
	}

	// lean: grpc-go's defaults on both sides, the health Check in a plain
	// loop, on a server of its own: what this machine allows a unary call,
	// against which the harness's own no-op is judged. Its Assign answers
	// with a real answer of a known device (lean-assign).
	real, err := cl.assigns[0].Assign(ctx, known[0])
	if err != nil {
		return nil, fmt.Errorf("bench: an answer for lean-assign: %w", err)
	}
	realAnswer, err := proto.Marshal(real)
	if err != nil {
		return nil, fmt.Errorf("bench: an answer for lean-assign: %w", err)
	}
	rep.AnswerBytes, rep.RequestBytes = len(realAnswer), proto.Size(known[0])
	lean, err := startLean(ctx, cfg, realAnswer)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := lean.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	lcl, err := dialLean(lean.addr, cfg)
	if err != nil {
		return nil, err
	}
	defer lcl.close()
	if err := waitServing(ctx, lcl.healths[0], ""); err != nil {
		return nil, err
	}
	leanReq := &healthpb.HealthCheckRequest{}
	leanOp := func(ctx context.Context, w int) error {
		_, err := lcl.healths[w%len(lcl.healths)].Check(ctx, leanReq)
		return err
	}
	var leanNext atomic.Uint64
	leanAssignOp := func(ctx context.Context, w int) error {
		_, err := lcl.assigns[w%len(lcl.assigns)].Assign(ctx, known[leanNext.Add(1)%uint64(len(known))])
		return err
	}
	leanCPU := &cpuProbe{}
	if lean.pid != 0 {
		leanCPU.pids = []int{lean.pid}
	}

	// noop, assign-known (the decision matches the device's record, nothing
	// is written, its token is re-sent from the token cache) and
	// assign-known-sign (the same on a second control plane without a
	// token cache, so every Assign signs a token), round after round.
	if err := rep.runSeparate(ctx, reg, etcd.Endpoint(), 0, cfg, log, func(cl2 *clients, cp2 *controlPlaneUnderTest) error {
		return rep.rounds(ctx, cfg.Rounds, []closedCase{
			{name: CaseLean, op: leanOp, cpu: leanCPU, lean: true},
			{name: CaseLeanAssign, op: leanAssignOp, cpu: leanCPU, lean: true},
			{name: CaseNoop, op: noop, cpu: cpuOf(cp)},
			{name: CaseAssignKnown, op: assignKnown(cl), cp: cp, cpu: cpuOf(cp)},
			{name: CaseAssignKnownSign, op: assignKnown(cl2), cp: cp2, cpu: cpuOf(cp2)},
		})
	}); err != nil {
		return nil, err
	}

	// Paced: the no-op, then assign-known, open loop at a share (half) of
	// assign-known's peak, round after round.
	if peak, _ := rep.Case(CaseAssignKnown); cfg.PacedShare > 0 && peak.OpsPerSec() > 0 {
		rate := peak.OpsPerSec() * cfg.PacedShare
		if err := rep.pacedRounds(ctx, cfg.Rounds, rate, []closedCase{
			{name: CaseNoop, op: noop},
			{name: CaseAssignKnown, op: assignKnown(cl), cp: cp},
		}); err != nil {
			return nil, err
		}
	}

	// assign-new, alone: every call is a device never seen, so each writes
	// its assignment record to etcd.
	var fresh atomic.Uint64
	assignNew := func(ctx context.Context, w int) error {
		n := fresh.Add(1)
		id := strconv.AppendUint([]byte("bench-new-"), n, 10)
		_, err := cl.assigns[w].Assign(ctx, deviceRequest(string(id), int(n), nil))
		return err
	}
	if err := rep.rounds(ctx, 1, []closedCase{{name: CaseAssignNew, op: assignNew, cp: cp, cpu: cpuOf(cp)}}); err != nil {
		return nil, err
	}
	rep.LoadAvgEnd = loadAvg()
	return rep, nil
}

// pacedWorkers is enough workers for a paced load at rate to keep its
// schedule through latencies (or stalls) of 250ms.
func pacedWorkers(rate float64, atLeast int) int {
	return min(max(atLeast, 64, int(math.Ceil(rate*0.25))), 4096)
}

// runSeparate starts a second control plane with a token cache of
// tokenCache entries and no label memo on the same registry, waits until
// it holds every known device and decides with the benchmark policy, calls
// fn with clients of its own, and stops it.
func (r *AssignReport) runSeparate(ctx context.Context, reg *registry.Registry, etcdAddr string, tokenCache int, cfg AssignConfig, log *slog.Logger, fn func(*clients, *controlPlaneUnderTest) error) (err error) {
	cp, err := startControlPlaneUnderTest(ctx, cfg, nil, reg, etcdAddr, tokenCache, 0, "controlplane-caches-off", log.With("control_plane", "caches-off"))
	if err != nil {
		return err
	}
	defer func() {
		if serr := cp.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	cl, err := dial(cp.addr, cfg, nil)
	if err != nil {
		return err
	}
	defer cl.close()
	if err := waitServing(ctx, cl.healths[0], controlplanev1.ControlPlaneService_ServiceDesc.ServiceName); err != nil {
		return err
	}
	if err := waitAssignments(ctx, cp, cfg.Devices); err != nil {
		return err
	}
	if cfg.Rules > 0 {
		if err := waitPolicy(ctx, cl.assigns[0]); err != nil {
			return err
		}
	}
	return fn(cl, cp)
}

// clients are the benchmark's connections to a control plane and a health
// and a ControlPlaneService client per worker.
type clients struct {
	conns   []*grpc.ClientConn
	healths []healthpb.HealthClient
	assigns []controlplanev1.ControlPlaneServiceClient
}

// dial connects cfg.Conns connections to addr, shared by cfg.Concurrency
// workers (worker w on connection w%cfg.Conns): in plaintext when creds is
// nil, else connection i over TLS with creds[i]. They use berth's codec, as
// its devices do (dialLean: grpc-go's).
func dial(addr string, cfg AssignConfig, creds []*tls.Config) (*clients, error) {
	return dialWith(addr, cfg, creds, codec.DialOption())
}

// dialLean is dial with grpc-go's defaults only: the lean baselines'
// clients.
func dialLean(addr string, cfg AssignConfig) (*clients, error) {
	return dialWith(addr, cfg, nil)
}

// dialWith is dial with opts added to each connection's.
func dialWith(addr string, cfg AssignConfig, creds []*tls.Config, opts ...grpc.DialOption) (*clients, error) {
	cl := &clients{conns: make([]*grpc.ClientConn, cfg.Conns)}
	for i := range cl.conns {
		tc := insecure.NewCredentials()
		if creds != nil {
			tc = credentials.NewTLS(creds[i])
		}
		cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(tc)}, opts...)...)
		if err != nil {
			cl.close()
			return nil, fmt.Errorf("bench: %w", err)
		}
		cl.conns[i] = cc
	}
	for w := range cfg.Concurrency {
		cl.healths = append(cl.healths, healthpb.NewHealthClient(cl.conns[w%len(cl.conns)]))
		cl.assigns = append(cl.assigns, controlplanev1.NewControlPlaneServiceClient(cl.conns[w%len(cl.conns)]))
	}
	return cl, nil
}

func (cl *clients) close() {
	for _, cc := range cl.conns {
		if cc != nil {
			cc.Close()
		}
	}
}

// applyBenchPolicy stores the benchmark policy of n rules and returns its
// version.
func applyBenchPolicy(ctx context.Context, reg *registry.Registry, n int, log *slog.Logger) (int64, error) {
	doc, err := benchPolicyDoc(n)
	if err != nil {
		return 0, fmt.Errorf("bench: policy document: %w", err)
	}
	snap, err := reg.LoadSnapshot(ctx)
	if err != nil {
		return 0, err
	}
	var based int64
	if snap.Policy != nil {
		based = snap.Policy.Version
	}
	v, warns, err := admin.ApplyPolicy(ctx, reg, snap, doc, based, "berth bench assign", time.Now())
	for _, w := range warns {
		log.Warn("benchmark policy", "warning", w)
	}
	if err != nil {
		return 0, fmt.Errorf("bench: applying the benchmark policy: %w", err)
	}
	return v, nil
}

// waitPolicy waits until the control plane decides with the benchmark
// policy: a device its last rule matches is labelled by that rule.
func waitPolicy(ctx context.Context, c controlplanev1.ControlPlaneServiceClient) error {
	var last string
	err := poll(ctx, 30*time.Second, "the benchmark policy in force", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := c.Assign(cctx, probeRequest(probeDevice))
		if err != nil {
			last = err.Error()
			return false
		}
		last = resp.GetReason()
		return ruleOf(last) == officeRule
	})
	if err != nil && last != "" {
		err = fmt.Errorf("%w (last answer: %s)", err, last)
	}
	return err
}

// closedCase is a case of the benchmark: its name, its call, and the
// control plane whose records it counts (nil for none).
type closedCase struct {
	name string
	op   func(ctx context.Context, w int) error
	cp   *controlPlaneUnderTest
	// cpu measures the processor time of the case (nil: not measured).
	cpu *cpuProbe
	// lean runs the case with a Lean load (no latencies kept).
	lean bool
}

// segment is one round's share of the measured time and warm-up, in n
// rounds.
func (c AssignConfig) segment(n int) (warmup, measured time.Duration) {
	d := time.Duration(max(n, 1))
	return c.Warmup / d, c.Duration / d
}

// rounds measures cases closed loop, n times in turn, each time for its
// share of the duration after its share of the warm-up, and appends their
// totals to r.Cases. Taking turns keeps a change in the machine's load
// from landing on one case only.
func (r *AssignReport) rounds(ctx context.Context, n int, cases []closedCase) error {
	warmup, measured := r.Config.segment(n)
	totals := make([]Result, len(cases))
	for i, c := range cases {
		totals[i] = Result{Name: c.name, Latency: NewHistogram(), RecordsWritten: -1}
	}
	for range max(n, 1) {
		for i, c := range cases {
			l := Load{Workers: r.Config.Concurrency, Warmup: warmup, Duration: measured, Op: c.op, Lean: c.lean, CPU: c.cpu}
			before, err := writes(ctx, c.cp)
			if err != nil {
				return err
			}
			res, err := l.Run(ctx, c.name)
			if err != nil {
				return err
			}
			if c.cp != nil {
				after, err := writes(ctx, c.cp)
				if err != nil {
					return err
				}
				res.RecordsWritten = after - before
			}
			totals[i].add(res)
		}
	}
	r.Cases = append(r.Cases, totals...)
	return nil
}

// pacedRounds measures cases open loop at rate, n times in turn like
// rounds, and appends
// their totals to r.Paced.
func (r *AssignReport) pacedRounds(ctx context.Context, n int, rate float64, cases []closedCase) error {
	warmup, measured := r.Config.segment(n)
	totals := make([]PacedResult, len(cases))
	for i, c := range cases {
		totals[i] = PacedResult{Result: Result{Name: c.name, Latency: NewHistogram(), RecordsWritten: -1}, Rate: rate, Lag: NewHistogram()}
	}
	for range max(n, 1) {
		for i, c := range cases {
			p := Paced{Rate: rate, Workers: pacedWorkers(rate, r.Config.Concurrency), Warmup: warmup, Duration: measured, Op: c.op}
			before, err := writes(ctx, c.cp)
			if err != nil {
				return err
			}
			res, err := p.Run(ctx, c.name)
			if err != nil {
				return err
			}
			if c.cp != nil {
				after, err := writes(ctx, c.cp)
				if err != nil {
					return err
				}
				res.RecordsWritten = after - before
			}
			totals[i].add(res)
		}
	}
	r.Paced = append(r.Paced, totals...)
	return nil
}

// writes is the number of assignment records cp wrote (0 without cp).
func writes(ctx context.Context, cp *controlPlaneUnderTest) (int64, error) {
	if cp == nil {
		return 0, nil
	}
	w, _, err := cp.counters(ctx)
	return w, err
}

// registerAssignCluster writes the groups, carrying labels, and keeps their executor records
// alive in bg until bgCtx ends; it returns once all are visible in etcd.
func registerAssignCluster(ctx, bgCtx context.Context, bg *errgroup.Group, reg *registry.Registry, labels []string, log *slog.Logger) error {
	for g := range assignGroups {
		gid := fmt.Sprintf("group-%d", g+1)
		capacity := bigCapacity
		if g > 0 {
			capacity = busyCapacity
		}
		if err := reg.PutGroup(ctx, registry.Group{ID: gid, Labels: labels, Capacity: capacity, State: registry.GroupActive}); err != nil {
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

// primeDevices assigns n known devices once, with every worker, and
// returns the requests they will send again (each remembers its group) and
// how many devices each rule labelled ("" for the default label).
func primeDevices(ctx context.Context, clients []controlplanev1.ControlPlaneServiceClient, n int) ([]*controlplanev1.AssignRequest, map[string]int, error) {
	reqs := make([]*controlplanev1.AssignRequest, n)
	rules := make([]string, n)
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
				resp, err := c.Assign(gctx, deviceRequest(id, i, nil))
				if err != nil {
					return fmt.Errorf("bench: assigning known device %s: %w", id, err)
				}
				d := resp.GetDestination()
				reqs[i] = deviceRequest(id, i, &controlplanev1.PreviousAssignment{GroupId: d.GetGroupId(), Label: d.GetLabel()})
				rules[i] = ruleOf(resp.GetReason())
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	byRule := map[string]int{}
	for _, r := range rules {
		byRule[r]++
	}
	return reqs, byRule, nil
}

// waitAssignments waits until the control plane's cache holds n records.
func waitAssignments(ctx context.Context, cp *controlPlaneUnderTest, n int) error {
	var last error
	err := poll(ctx, 60*time.Second, fmt.Sprintf("%d assignment records in the control plane's cache", n), func() bool {
		_, got, err := cp.counters(ctx)
		last = err
		return err == nil && got >= n
	})
	if err != nil && last != nil {
		err = fmt.Errorf("%w (last answer: %v)", err, last)
	}
	return err
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
