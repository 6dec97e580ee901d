package bench

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berthproject/berth/access"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/embedetcd"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// Case names of the push benchmark.
const (
	CasePushBare  = "bare"
	CasePushBerth = "berth"
	// CasePushLean is the lean push baseline: Deliver calls to the bare
	// server in a plain loop (no latency kept, no deadline per call) over
	// connections of their own, grpc-go's defaults on both sides.
	CasePushLean = "lean"
	// CasePushInside is the floor: the bare server pushing to its own
	// streams from inside (no RPC in front), in a plain loop.
	CasePushInside = "inside"
)

// Targets bench push checks (issue 12), each against a baseline of the
// same run: berth's closed-loop throughput is at least TargetPushRatio of
// the bare server's; paced at TargetPacedShare of berth's peak, its p99 is
// within TargetPushPacedP99Ratio of bare's at the same rate; the harness's
// bare push reaches LeanRatio of the lean push (the load generator is not
// the limit).
const (
	TargetPushRatio         = 0.80
	TargetPushPacedP99Ratio = 2.0
)

// PushConfig tunes RunPush.
type PushConfig struct {
	// Devices is the number of connected devices each system pushes to.
	Devices int
	// Duration and Warmup are the measured and unmeasured time of each
	// case, closed loop and paced alike.
	Duration, Warmup time.Duration
	// Concurrency is the number of senders calling back to back in the
	// closed-loop cases.
	Concurrency int
	// Conns is the number of client connections the senders share.
	Conns int
	// Payload is the size of each message's payload, in bytes.
	Payload int
	// PacedShare is the fraction of berth's peak at which both systems run
	// again, open loop; 0 skips the paced cases.
	PacedShare float64
	// InFlight bounds the devices connecting at once.
	InFlight int
	// Rounds splits each case's warm-up and measured time in as many
	// rounds; bare and berth take turns round by round.
	Rounds int
	// Command is the berth binary (with any leading arguments): children
	// are started as Command + "controlplane"…, Command + "executor"…
	// and Command + "bench push child"….
	Command []string
	// Env is added to every child's environment (GOGC, GOMEMLIMIT…).
	Env []string
	// ChildStderr receives the children's logs (nil discards them).
	ChildStderr io.Writer
	// ChildLogLevel is the log level of berth's servers.
	ChildLogLevel string
	// TempDir is where the temporary directory is made ("" is the
	// system's default).
	TempDir string
	// ProfileDir, when set, is where berth's control plane and executor
	// write CPU profiles (controlplane.pprof, executor.pprof).
	ProfileDir string
}

// DefaultPushConfig returns what `berth bench push` runs, without Command.
func DefaultPushConfig() PushConfig {
	return PushConfig{
		Devices: 10000, Duration: 5 * time.Second, Warmup: time.Second, Concurrency: 64, Conns: 4, Payload: 64,
		PacedShare: TargetPacedShare, InFlight: 256, ChildLogLevel: "warn", Rounds: 5,
	}
}

// Validate checks c.
func (c PushConfig) Validate() error {
	switch {
	case c.Devices <= 0:
		return fmt.Errorf("bench: devices %d: must be positive", c.Devices)
	case c.Duration <= 0 || c.Warmup < 0:
		return fmt.Errorf("bench: duration %v, warm-up %v: want > 0 and >= 0", c.Duration, c.Warmup)
	case c.Rounds <= 0 || c.Duration/time.Duration(c.Rounds) <= 0:
		return fmt.Errorf("bench: rounds %d: want 1 to the duration in nanoseconds", c.Rounds)
	case c.Concurrency <= 0 || c.Conns <= 0 || c.InFlight <= 0:
		return fmt.Errorf("bench: concurrency %d, conns %d, in-flight %d: must be positive", c.Concurrency, c.Conns, c.InFlight)
	case c.Payload < 0 || c.Payload > 256<<10:
		return fmt.Errorf("bench: payload %d: want 0 to 262144 bytes", c.Payload)
	case !(c.PacedShare >= 0 && c.PacedShare <= 1):
		return fmt.Errorf("bench: paced share %v: want 0 to 1", c.PacedShare)
	case len(c.Command) == 0:
		return errors.New("bench: no command to start the children with")
	}
	return nil
}

// PushReport is the outcome of RunPush.
type PushReport struct {
	Env    Env
	Config PushConfig
	// Cases are the closed-loop runs: bare, then berth.
	Cases []Result
	// Paced are the open-loop runs at Config.PacedShare of berth's peak.
	Paced []PacedResult
	// Acks are the messages the devices acknowledged, by system, and
	// Streams the device streams open at the end.
	Acks, Streams map[string]int64
	// ConnectTime is how long the devices took to connect, by system.
	ConnectTime map[string]time.Duration
	// LoadAvgEnd is the 1-minute load average at the end (-1: unknown).
	LoadAvgEnd float64
}

// Case returns the closed-loop result named name.
func (r *PushReport) Case(name string) (Result, bool) {
	for _, c := range r.Cases {
		if c.Name == name {
			return c, true
		}
	}
	return Result{}, false
}

// PacedCase returns the paced result named name.
func (r *PushReport) PacedCase(name string) (PacedResult, bool) {
	for _, c := range r.Paced {
		if c.Name == name {
			return c, true
		}
	}
	return PacedResult{}, false
}

// Ratio is berth's closed-loop throughput over bare's (0 when unknown).
func (r *PushReport) Ratio() float64 {
	b, ok1 := r.Case(CasePushBerth)
	n, ok2 := r.Case(CasePushBare)
	if !ok1 || !ok2 || n.OpsPerSec() <= 0 {
		return 0
	}
	return b.OpsPerSec() / n.OpsPerSec()
}

// Pass reports whether both targets were met.
func (r *PushReport) Pass() bool {
	p, ok := r.PacedCase(CasePushBerth)
	return r.Ratio() >= TargetPushRatio && ok && p.Errors == 0 && r.pacedP99Ratio() <= TargetPushPacedP99Ratio
}

// Timeouts of the children.
const (
	pushServerTimeout  = 60 * time.Second
	pushConnectTimeout = 5 * time.Minute
	pushSendTimeout    = 10 * time.Second
)

var listeningRE = regexp.MustCompile(`listening on (\S+)`)

// RunPush measures pushing a message to a connected device and getting its
// Ack, two ways, each with cfg.Devices devices in a child process of their
// own:
//
//   - bare: the senders call a plain grpc-go server (a child process) that
//     writes the message on the device's stream and answers once the Ack
//     is back;
//   - berth: the senders call MessagingService.Send (ONLINE_ONLY) on a
//     control plane (`berth controlplane`, a child process), which finds
//     the device's executor from its presence and calls Deliver on it
//     (`berth executor`, another child), which writes the message on the
//     stream and answers once the Ack is back. Its devices connected
//     through Assign; etcd runs embedded in this process.
//
// Both fleets stay connected for the whole run. Every device gets one
// message first, unmeasured. Then the two take turns, cfg.Rounds times:
// closed loop (cfg.Concurrency senders back to back), then open loop at
// cfg.PacedShare of berth's closed-loop peak. Everything started is
// stopped and removed when RunPush returns.
func RunPush(ctx context.Context, cfg PushConfig, log *slog.Logger) (rep *PushReport, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ChildStderr == nil {
		cfg.ChildStderr = io.Discard
	}
	if _, err := RaiseFileLimit(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return nil, err
	}
	rep = &PushReport{Env: CurrentEnv(), Config: cfg, Acks: map[string]int64{}, Streams: map[string]int64{}, ConnectTime: map[string]time.Duration{}}
	payload := make([]byte, cfg.Payload)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	dir, err := os.MkdirTemp(cfg.TempDir, "berth-bench-push-")
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

	// Children stop in the reverse order of their start: devices before
	// their servers, the executor (nothing left to drain) before the
	// control plane.
	h := &pushHarness{cfg: cfg, log: log, rep: rep, payload: payload}
	defer func() {
		if serr := h.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	berth, err := h.startBerth(ctx, dir, etcd.Endpoint(), registry.New(cli, ""))
	if err != nil {
		return nil, err
	}
	bare, err := h.startBare(ctx)
	if err != nil {
		return nil, err
	}
	systems := []*pushSystem{bare, berth}
	for _, sys := range systems {
		if err := prime(ctx, cfg.Devices, cfg.Concurrency, sys.send); err != nil {
			return nil, fmt.Errorf("bench: %s: %w", sys.name, err)
		}
	}
	lean, err := h.leanPush(bare)
	if err != nil {
		return nil, err
	}
	measured := systems
	systems = append([]*pushSystem{bare.inside(cfg), lean}, systems...)
	log.Info("every device got a message; measuring", "rounds", cfg.Rounds)

	if err := rep.closedRounds(ctx, systems); err != nil {
		return nil, err
	}
	if peak, _ := rep.Case(CasePushBerth); cfg.PacedShare > 0 && peak.OpsPerSec() > 0 {
		if err := rep.pacedRounds(ctx, systems, peak.OpsPerSec()*cfg.PacedShare); err != nil {
			return nil, err
		}
	}
	for _, sys := range measured { // lean and inside push to bare's devices
		st, err := sys.devices.stats(ctx)
		if err != nil {
			return nil, err
		}
		rep.Acks[sys.name], rep.Streams[sys.name] = st.Acks, st.Streams
	}
	rep.LoadAvgEnd = loadAvg()
	return rep, nil
}

// pushSystem is one way of pushing: its name, its push, its devices.
type pushSystem struct {
	name    string
	send    func(ctx context.Context, w int) error
	devices *pushProc
	// server and addr are the bare server's process and address (bare
	// only).
	server *pushProc
	addr   string
	// run, when set, measures the system itself instead of a Load of send
	// (the inside push runs in its server); it is not paced.
	// lean runs send as a Lean load; it is not paced.
	lean bool
	run  func(ctx context.Context, warmup, measured time.Duration) (Result, error)
	// cpu measures the processor time of the system's processes (servers
	// and devices) and of this one.
	cpu *cpuProbe
}

// segment is one round's share of the warm-up and measured time.
func (c PushConfig) segment() (warmup, measured time.Duration) {
	n := time.Duration(max(c.Rounds, 1))
	return c.Warmup / n, c.Duration / n
}

// closedRounds measures the systems closed loop, in turns, and appends
// their totals to r.Cases.
func (r *PushReport) closedRounds(ctx context.Context, systems []*pushSystem) error {
	warmup, measured := r.Config.segment()
	totals := make([]Result, len(systems))
	for i, sys := range systems {
		totals[i] = Result{Name: sys.name, Latency: NewHistogram(), RecordsWritten: -1}
	}
	for range max(r.Config.Rounds, 1) {
		for i, sys := range systems {
			var res Result
			var err error
			if sys.run != nil {
				res, err = sys.run(ctx, warmup, measured)
			} else {
				res, err = Load{Workers: r.Config.Concurrency, Warmup: warmup, Duration: measured, Op: sys.send, CPU: sys.cpu, Lean: sys.lean}.Run(ctx, sys.name)
			}
			if err != nil {
				return err
			}
			totals[i].add(res)
		}
	}
	r.Cases = append(r.Cases, totals...)
	return nil
}

// pacedRounds measures the systems open loop at rate, in turns, and
// appends their totals to r.Paced.
func (r *PushReport) pacedRounds(ctx context.Context, systems []*pushSystem, rate float64) error {
	warmup, measured := r.Config.segment()
	systems = slices.DeleteFunc(slices.Clone(systems), func(s *pushSystem) bool { return s.run != nil || s.lean })
	totals := make([]PacedResult, len(systems))
	for i, sys := range systems {
		totals[i] = PacedResult{Result: Result{Name: sys.name, Latency: NewHistogram(), RecordsWritten: -1}, Rate: rate, Lag: NewHistogram()}
	}
	for range max(r.Config.Rounds, 1) {
		for i, sys := range systems {
			p := Paced{Rate: rate, Workers: pacedWorkers(rate, r.Config.Concurrency), Warmup: warmup, Duration: measured, Op: sys.send}
			res, err := p.Run(ctx, sys.name)
			if err != nil {
				return err
			}
			totals[i].add(res)
		}
	}
	r.Paced = append(r.Paced, totals...)
	return nil
}

// pushTarget picks the devices in turn.
type pushTarget struct {
	ids  []string
	next atomic.Uint64
}

func newPushTarget(n int) *pushTarget {
	t := &pushTarget{ids: make([]string, n)}
	for i := range t.ids {
		t.ids[i] = pushDeviceID(i)
	}
	return t
}

func (t *pushTarget) pick() string { return t.ids[t.next.Add(1)%uint64(len(t.ids))] }

// prime sends one message to every device, retrying what fails (presence
// is written moments after a device connects), unmeasured.
func prime(ctx context.Context, n, workers int, send func(ctx context.Context, w int) error) error {
	var firstErr onceErr
	var done atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for firstErr.get() == nil && done.Add(1) <= int64(n) {
				var err error
				for attempt := 0; attempt < 100; attempt++ {
					if err = send(ctx, w); err == nil || ctx.Err() != nil {
						break
					}
					t := time.NewTimer(20 * time.Millisecond)
					select {
					case <-t.C:
					case <-ctx.Done():
						t.Stop()
					}
				}
				if err != nil {
					firstErr.set(fmt.Errorf("priming the devices: %w", err))
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr.get()
}

// pushHarness starts and stops the children of a run.
type pushHarness struct {
	cfg     PushConfig
	log     *slog.Logger
	rep     *PushReport
	payload []byte
	procs   []*pushProc
	closers []func()
}

// start starts a child and remembers it for stop.
func (h *pushHarness) start(ctx context.Context, name string, args []string) (*pushProc, error) {
	p, err := startPushProc(ctx, name, h.cfg.Command, args, h.cfg.Env, h.cfg.ChildStderr)
	if err != nil {
		return nil, err
	}
	h.procs = append(h.procs, p)
	return p, nil
}

// stop closes the client connections, then stops the children, the last
// started first, and returns the first error.
func (h *pushHarness) stop() error {
	for _, c := range h.closers {
		c()
	}
	h.closers = nil
	var first error
	for i := len(h.procs) - 1; i >= 0; i-- {
		if err := h.procs[i].stop(); err != nil && first == nil {
			first = err
		}
	}
	h.procs = nil
	return first
}

// dial opens cfg.Conns connections to addr, closed by stop.
func (h *pushHarness) dial(addr string, opts ...grpc.DialOption) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, 0, h.cfg.Conns)
	for range h.cfg.Conns {
		cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		h.closers = append(h.closers, func() { cc.Close() })
		conns = append(conns, cc)
	}
	return conns, nil
}

// startDevices starts a devices child and waits until every device is
// connected.
func (h *pushHarness) startDevices(ctx context.Context, name string, child PushChildConfig) (*pushProc, error) {
	child.Role, child.Devices, child.InFlight = RoleDevices, h.cfg.Devices, h.cfg.InFlight
	start := time.Now()
	p, err := h.start(ctx, name+" devices", append([]string{"bench", "push", "child"}, child.Args()...))
	if err != nil {
		return nil, err
	}
	var ready pushReady
	if err := p.readJSON(ctx, pushConnectTimeout, &ready); err != nil {
		return nil, fmt.Errorf("bench: %s devices did not connect: %w", name, err)
	}
	h.rep.ConnectTime[name] = time.Since(start)
	h.log.Info("devices connected", "system", name, "devices", h.cfg.Devices, "took", h.rep.ConnectTime[name])
	return p, nil
}

// startBerth starts a control plane and an executor on etcd, and the
// devices, which call Assign; it returns the system whose push is Send.
func (h *pushHarness) startBerth(ctx context.Context, dir, etcd string, reg *registry.Registry) (*pushSystem, error) {
	cfg := h.cfg
	const group = "group-1"
	if err := reg.PutGroup(ctx, registry.Group{ID: group, Labels: []string{"default"}, Capacity: cfg.Devices + 1000, State: registry.GroupActive}); err != nil {
		return nil, err
	}
	privFile, pubFile, err := writeKeys(dir)
	if err != nil {
		return nil, err
	}
	global := []string{"--log-level=" + cfg.ChildLogLevel, "--etcd=" + etcd, "--prefix=" + reg.Prefix()}
	profile := func(role string) []string {
		if cfg.ProfileDir == "" {
			return nil
		}
		return []string{"--cpuprofile=" + filepath.Join(cfg.ProfileDir, role+".pprof")}
	}
	// The senders and the devices are one host and the pushes are the load
	// measured: no rate limits on Send and Assign.
	cp, err := h.start(ctx, "controlplane", slices.Concat([]string{"controlplane", "--signing-key=" + privFile, "--listen=127.0.0.1:0", "--open-enrollment", "--rate-send=0", "--rate-assign=0"}, global, profile("controlplane")))
	if err != nil {
		return nil, err
	}
	cpAddr, err := cp.waitLine(ctx, pushServerTimeout, listeningRE)
	if err != nil {
		return nil, err
	}
	ex, err := h.start(ctx, "executor", slices.Concat([]string{"executor", "--group=" + group, "--id=push-exec-1", "--capacity=" + strconv.Itoa(cfg.Devices+1000),
		"--token-public-key=" + pubFile, "--listen=127.0.0.1:0", "--drain-timeout=2s"}, global, profile("executor")))
	if err != nil {
		return nil, err
	}
	if _, err := ex.waitLine(ctx, pushServerTimeout, listeningRE); err != nil {
		return nil, err
	}
	// The pushing service authenticates as any service does.
	key, secret, err := access.NewAPIKey("bench push", []string{string(access.Service)}, nil, nil, "berth bench", time.Now())
	if err != nil {
		return nil, err
	}
	if err := reg.CreateAPIKey(ctx, key); err != nil {
		return nil, err
	}
	conns, err := h.dial(cpAddr, grpc.WithPerRPCCredentials(access.APIKeyCredentials(secret)))
	if err != nil {
		return nil, err
	}
	clients := make([]messagingv1.MessagingServiceClient, len(conns))
	for i, cc := range conns {
		clients[i] = messagingv1.NewMessagingServiceClient(cc)
	}
	// Devices Assign once the executor is registered.
	if err := poll(ctx, pushServerTimeout, "the executor registered", func() bool {
		es, err := reg.Executors(ctx)
		return err == nil && len(es) == 1
	}); err != nil {
		return nil, err
	}
	devices, err := h.startDevices(ctx, CasePushBerth, PushChildConfig{ControlPlane: cpAddr})
	if err != nil {
		return nil, err
	}
	targets := newPushTarget(cfg.Devices)
	payload := h.payload
	send := func(ctx context.Context, w int) error {
		sctx, cancel := context.WithTimeout(ctx, pushSendTimeout)
		defer cancel()
		resp, err := clients[w%len(clients)].Send(sctx, &messagingv1.SendRequest{
			DeviceId: targets.pick(), Payload: payload, ContentType: "application/octet-stream",
			Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY,
		})
		if err == nil && resp.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED {
			err = fmt.Errorf("status %v: %s", resp.GetStatus(), resp.GetDetail())
		}
		return err
	}
	return &pushSystem{name: CasePushBerth, send: send, devices: devices,
		cpu: &cpuProbe{pids: []int{cp.cmd.Process.Pid, ex.cmd.Process.Pid, devices.cmd.Process.Pid}}}, nil
}

// writeKeys writes a fresh token key pair in dir and returns the files.
func writeKeys(dir string) (privFile, pubFile string, err error) {
	priv, err := token.GenerateKey()
	if err != nil {
		return "", "", err
	}
	privPEM, err := token.MarshalPrivateKey(priv)
	if err != nil {
		return "", "", err
	}
	pubPEM, err := token.MarshalPublicKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return "", "", err
	}
	privFile, pubFile = filepath.Join(dir, "signing.pem"), filepath.Join(dir, "public.pem")
	if err := os.WriteFile(privFile, privPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(pubFile, pubPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("bench: %w", err)
	}
	return privFile, pubFile, nil
}

// startBare starts the bare server and its devices; it returns the system
// whose push is the bare server's Deliver.
func (h *pushHarness) startBare(ctx context.Context) (*pushSystem, error) {
	srv, err := h.start(ctx, "bare server", append([]string{"bench", "push", "child"}, PushChildConfig{Role: RoleBare, Listen: "127.0.0.1:0", InFlight: 1}.Args()...))
	if err != nil {
		return nil, err
	}
	var ready pushReady
	if err := srv.readJSON(ctx, pushServerTimeout, &ready); err != nil {
		return nil, fmt.Errorf("bench: bare server did not start: %w", err)
	}
	conns, err := h.dial(ready.Addr)
	if err != nil {
		return nil, err
	}
	clients := make([]executorv1.ExecutorInternalServiceClient, len(conns))
	for i, cc := range conns {
		clients[i] = executorv1.NewExecutorInternalServiceClient(cc)
	}
	devices, err := h.startDevices(ctx, CasePushBare, PushChildConfig{Targets: ready.Addr})
	if err != nil {
		return nil, err
	}
	targets := newPushTarget(h.cfg.Devices)
	payload := h.payload
	var ids atomic.Uint64
	send := func(ctx context.Context, w int) error {
		sctx, cancel := context.WithTimeout(ctx, pushSendTimeout)
		defer cancel()
		_, err := clients[w%len(clients)].Deliver(sctx, &executorv1.DeliverRequest{
			DeviceId: targets.pick(),
			Message:  &executorv1.Message{MessageId: strconv.FormatUint(ids.Add(1), 36), Payload: payload, ContentType: "application/octet-stream"},
		})
		return err
	}
	return &pushSystem{name: CasePushBare, send: send, devices: devices, server: srv, addr: ready.Addr, cpu: &cpuProbe{pids: []int{srv.cmd.Process.Pid, devices.cmd.Process.Pid}}}, nil
}

// leanPush is the lean push to bare's server and devices: Deliver in a
// plain loop over connections of its own (grpc-go's defaults), message ids
// of their own.
func (h *pushHarness) leanPush(bare *pushSystem) (*pushSystem, error) {
	conns, err := h.dial(bare.addr)
	if err != nil {
		return nil, err
	}
	clients := make([]executorv1.ExecutorInternalServiceClient, len(conns))
	for i, cc := range conns {
		clients[i] = executorv1.NewExecutorInternalServiceClient(cc)
	}
	targets := newPushTarget(h.cfg.Devices)
	payload := h.payload
	var ids atomic.Uint64
	send := func(ctx context.Context, w int) error {
		_, err := clients[w%len(clients)].Deliver(ctx, &executorv1.DeliverRequest{
			DeviceId: targets.pick(),
			Message:  &executorv1.Message{MessageId: "r" + strconv.FormatUint(ids.Add(1), 36), Payload: payload, ContentType: "application/octet-stream"},
		})
		return err
	}
	return &pushSystem{name: CasePushLean, send: send, lean: true, devices: bare.devices, cpu: bare.cpu}, nil
}

// inside is the floor on bare's server and devices: cfg.Concurrency
// workers inside the server push to the devices back to back.
func (bare *pushSystem) inside(cfg PushConfig) *pushSystem {
	srv := bare.server
	return &pushSystem{name: CasePushInside, devices: bare.devices, cpu: bare.cpu, run: func(ctx context.Context, warmup, measured time.Duration) (Result, error) {
		if _, err := io.WriteString(srv.stdin, leanCommand(cfg.Concurrency, warmup, measured, cfg.Devices, cfg.Payload)+"\n"); err != nil {
			return Result{}, fmt.Errorf("bench: inside push: %w", err)
		}
		// The answer comes after warm-up and measured time; the probe
		// samples meanwhile.
		stop := make(chan struct{})
		start := time.Now()
		cpu := bare.cpu.window(start.Add(warmup), start.Add(warmup+measured), stop)
		var lr leanPushResult
		err := srv.readJSON(ctx, warmup+measured+pushServerTimeout, &lr)
		close(stop)
		used := cpu()
		if err != nil {
			return Result{}, fmt.Errorf("bench: inside push: %w", err)
		}
		return Result{Name: CasePushInside, Ops: lr.Ops, Errors: lr.Errors, FirstError: lr.FirstError, Elapsed: time.Duration(lr.ElapsedNS),
			Latency: NewHistogram(), RecordsWritten: -1, CPU: used}, nil
	}}
}
