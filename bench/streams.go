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
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/identity"
	"github.com/berthproject/berth/internal/embedetcd"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// TargetConnectRatio is the target of a TLS streams run: berth's executor
// opens streams (TLS, token and binding checked) at least this share of a
// bare grpc-go TLS server's rate.
const TargetConnectRatio = 0.70

// StreamsConfig tunes RunStreams.
type StreamsConfig struct {
	// Devices is the number of idle streams each kind of server holds.
	Devices int
	// Addrs is the number of servers of each kind, one child process per
	// loopback address 127.0.0.1 to 127.0.0.Addrs; devices are spread
	// evenly over them.
	Addrs int
	// InFlight bounds the streams being opened at once.
	InFlight int
	// Command starts a Serve child once ServeConfig.Args() are appended,
	// for example {"/usr/bin/berth", "bench", "serve"}.
	Command []string
	// Env is added to the children's environment.
	Env []string
	// ChildStderr receives the children's logs (nil discards them).
	ChildStderr io.Writer
	// ChildLogLevel is the children's log level.
	ChildLogLevel string
	// TempDir is where the temporary directory (etcd data, public key) is
	// made ("" is the system's default).
	TempDir string
	// TLS makes both kinds of server serve TLS 1.3 with a throwaway
	// certificate; every device connection presents one shared device
	// client certificate of an X.509 enrollment, and the tokens are bound
	// to it (cnf x5t#S256, the enrollment named), so berth's executor
	// checks the binding and the enrollment on every stream.
	TLS bool
	// ProfileDir, when set, is where every server writes a heap and a
	// goroutine profile each time its stats are read (see
	// ServeConfig.ProfileDir). Sampling every allocation slows the
	// servers: figures of such a run are for the profiles only.
	ProfileDir string
	// Messages, when positive, adds the traffic phase: once the streams
	// are idle and measured, every device is sent Messages messages (one
	// at a time, each waiting for the device's Ack) and the servers are
	// measured again. The baseline is then ModeBarePush instead of
	// ModeBare, so that it can push too.
	Messages int
	// PayloadSize is the size of each message's payload in the traffic
	// phase, in bytes.
	PayloadSize int
}

// DefaultStreamsConfig returns what `berth bench streams` runs, without
// Command.
func DefaultStreamsConfig() StreamsConfig {
	return StreamsConfig{Devices: 10000, Addrs: 1, InFlight: 256, ChildLogLevel: "warn", PayloadSize: 256}
}

// Validate checks c.
func (c StreamsConfig) Validate() error {
	switch {
	case c.Devices <= 0:
		return fmt.Errorf("bench: devices %d: must be positive", c.Devices)
	case c.Addrs <= 0 || c.Addrs > 254:
		return fmt.Errorf("bench: addrs %d: want 1 to 254 (127.0.0.1 to 127.0.0.254)", c.Addrs)
	case c.Devices < c.Addrs:
		return fmt.Errorf("bench: %d devices over %d addresses leaves a server without streams", c.Devices, c.Addrs)
	case c.InFlight <= 0:
		return fmt.Errorf("bench: in-flight %d: must be positive", c.InFlight)
	case len(c.Command) == 0:
		return errors.New("bench: no command to start the servers with")
	case c.Messages < 0:
		return fmt.Errorf("bench: messages %d: must not be negative", c.Messages)
	case c.Messages > 0 && (c.PayloadSize < 0 || c.PayloadSize > 64<<10):
		return fmt.Errorf("bench: payload size %d: want 0 to 65536 bytes", c.PayloadSize)
	}
	return nil
}

// File descriptors kept aside for everything but the device connections:
// the parent runs an embedded etcd and its clients; a child its listener,
// etcd client and pipes.
const (
	parentFDReserve = 512
	childFDReserve  = 256
)

// ConnPlan says how the device streams travel.
type ConnPlan struct {
	// FileLimit is the open-file limit (RLIMIT_NOFILE) of the parent after
	// raising it; 0 when unknown.
	FileLimit uint64
	// Conns is the number of client TCP connections.
	Conns int
	// StreamsPerConn is the most streams one connection carries: 1 when
	// every stream has its own connection, as devices do.
	StreamsPerConn int
	// ConnsPerServer is the most connections one server holds.
	ConnsPerServer int
}

// planConns gives every stream its own connection if the parent's file
// limit allows, and otherwise shares connections, up to the servers'
// concurrent-stream limit each. It fails when the servers could not hold
// the connections.
func planConns(devices, addrs int, limit uint64) (ConnPlan, error) {
	p := ConnPlan{FileLimit: limit, Conns: devices, StreamsPerConn: 1}
	if limit > 0 && uint64(devices+parentFDReserve) > limit {
		per := int(rpcserver.DefaultConfig().MaxConcurrentStreams)
		p.Conns = (devices + per - 1) / per
		p.StreamsPerConn = (devices + p.Conns - 1) / p.Conns
		if uint64(p.Conns+parentFDReserve) > limit {
			return p, fmt.Errorf("bench: %d devices need %d connections even at %d streams each; this process may hold %d open files", devices, p.Conns, per, limit)
		}
	}
	p.ConnsPerServer = (p.Conns + addrs - 1) / addrs
	if limit > 0 && uint64(p.ConnsPerServer+childFDReserve) > limit {
		return p, fmt.Errorf("bench: --devices %d over --addrs %d puts %d connections on one server, but a process may hold at most %d open files here (%d kept for other uses); raise --addrs to at least %d",
			devices, addrs, p.ConnsPerServer, limit, childFDReserve, (p.Conns+int(limit)-childFDReserve-1)/(int(limit)-childFDReserve))
	}
	return p, nil
}

// ServerResult is what one kind of server paid for its streams.
type ServerResult struct {
	// Mode is ModeBerth or ModeBare.
	Mode string
	// Servers is the number of child processes.
	Servers int
	// Streams is the number of streams opened (and Welcomed).
	Streams int
	// ConnectTime is the wall time from the first stream opened to the last
	// Welcome received.
	ConnectTime time.Duration
	// Before and After are the servers' stats, summed, before the streams
	// were opened and once all were.
	Before, After ServerStats
	// EndedEarly counts streams the server ended before the teardown.
	EndedEarly int64
	// Messages is the number of messages each device was sent and acked
	// in the traffic phase (0: none), taking TrafficTime; Traffic is the
	// servers' stats after it.
	Messages    int
	TrafficTime time.Duration
	Traffic     ServerStats
}

// TrafficRSSPerStream is the growth of VmRSS per stream from before the
// streams were opened to after the traffic phase, in bytes.
func (r ServerResult) TrafficRSSPerStream() float64 {
	return r.perStream(float64(r.Before.RSS), float64(r.Traffic.RSS))
}

// TrafficGrowth is TrafficRSSPerStream over RSSPerStream: how much the
// memory per stream grew with the traffic (1: flat).
func (r ServerResult) TrafficGrowth() float64 {
	if idle := r.RSSPerStream(); idle > 0 {
		return r.TrafficRSSPerStream() / idle
	}
	return 0
}

// perStream returns (after - before) / streams.
func (r ServerResult) perStream(before, after float64) float64 {
	if r.Streams == 0 {
		return 0
	}
	return (after - before) / float64(r.Streams)
}

// RSSPerStream is the growth of VmRSS per stream, in bytes.
func (r ServerResult) RSSPerStream() float64 {
	return r.perStream(float64(r.Before.RSS), float64(r.After.RSS))
}

// HeapInusePerStream is the growth of HeapInuse per stream, in bytes.
func (r ServerResult) HeapInusePerStream() float64 {
	return r.perStream(float64(r.Before.HeapInuse), float64(r.After.HeapInuse))
}

// HeapAllocPerStream is the growth of HeapAlloc per stream, in bytes.
func (r ServerResult) HeapAllocPerStream() float64 {
	return r.perStream(float64(r.Before.HeapAlloc), float64(r.After.HeapAlloc))
}

// StackPerStream is the growth of StackInuse per stream, in bytes.
func (r ServerResult) StackPerStream() float64 {
	return r.perStream(float64(r.Before.StackInuse), float64(r.After.StackInuse))
}

// GoroutinesPerStream is the growth of the goroutine count per stream.
func (r ServerResult) GoroutinesPerStream() float64 {
	return r.perStream(float64(r.Before.Goroutines), float64(r.After.Goroutines))
}

// StreamsReport is the outcome of RunStreams.
type StreamsReport struct {
	Env Env
	// Devices, Addrs and InFlight are the configuration.
	Devices, Addrs, InFlight int
	// Plan says how the streams travelled.
	Plan ConnPlan
	// Servers are berth's executor, then the bare baseline.
	Servers []ServerResult
	// TLS is set when both served TLS, with client certificates and bound
	// tokens.
	TLS bool
	// Messages and PayloadSize are the traffic phase's (0: none).
	Messages, PayloadSize int
	// LoadAvgAfter is the 1-minute load average when the run ended (-1
	// when unknown); Env.LoadAvg is the one at the start.
	LoadAvgAfter float64
}

// Baseline returns the result of the bare server the run compared berth
// with: ModeBare, or ModeBarePush with a traffic phase.
func (r *StreamsReport) Baseline() (ServerResult, bool) {
	if s, ok := r.Server(ModeBare); ok {
		return s, true
	}
	return r.Server(ModeBarePush)
}

// Server returns the result of mode.
func (r *StreamsReport) Server(mode string) (ServerResult, bool) {
	for _, s := range r.Servers {
		if s.Mode == mode {
			return s, true
		}
	}
	return ServerResult{}, false
}

// streamsGroup is the group every benchmark executor serves.
const streamsGroup = "group-1"

// RunStreams measures what a berth executor pays per idle device stream
// against a bare grpc-go server holding as many. For each kind it starts
// cfg.Addrs child processes with cfg.Command, opens cfg.Devices streams
// (a Hello with a valid token each, Pongs answered), asks the children for
// their stats before and after, then closes the streams and stops the
// children. With cfg.TLS both kinds serve TLS and the devices present a
// client certificate their tokens are bound to. Everything it started is stopped and removed when it returns.
func RunStreams(ctx context.Context, cfg StreamsConfig, log *slog.Logger) (*StreamsReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ChildStderr == nil {
		cfg.ChildStderr = io.Discard
	}
	limit, err := RaiseFileLimit()
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return nil, err
	}
	plan, err := planConns(cfg.Devices, cfg.Addrs, limit)
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp(cfg.TempDir, "berth-bench-streams-")
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
	if err := reg.PutGroup(ctx, registry.Group{ID: streamsGroup, Labels: []string{"default"}, Capacity: bigCapacity, State: registry.GroupActive}); err != nil {
		return nil, err
	}
	priv, err := token.GenerateKey()
	if err != nil {
		return nil, err
	}
	pubFile := filepath.Join(dir, "token-public.pem")
	pem, err := token.MarshalPublicKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(pubFile, pem, 0o600); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	// With TLS: the servers' certificate, one device certificate shared by
	// every connection, its enrollment, and tokens bound to it.
	var (
		pk      *benchTLS
		binding token.Binding
		creds   = insecure.NewCredentials()
		stolen  credentials.TransportCredentials // another device's certificate
	)
	if cfg.TLS {
		if pk, err = newBenchTLS(dir); err != nil {
			return nil, err
		}
		if err := pk.enroll(ctx, reg); err != nil {
			return nil, err
		}
		cert, leaf, err := pk.device("bench-device")
		if err != nil {
			return nil, err
		}
		binding = token.Binding{Thumbprint: identity.Thumbprint(leaf), Enrollment: benchEnrollment}
		creds = credentials.NewTLS(pk.client(cert))
		other, _, err := pk.device("bench-impostor")
		if err != nil {
			return nil, err
		}
		stolen = credentials.NewTLS(pk.client(other))
	}
	hellos, err := signHellos(priv, cfg.Devices, binding)
	if err != nil {
		return nil, err
	}
	var push *pusher
	baseline := ModeBare
	if cfg.Messages > 0 {
		if push, err = newPusher(priv, cfg, plan); err != nil {
			return nil, err
		}
		baseline = ModeBarePush
	}

	rep := &StreamsReport{Env: CurrentEnv(), Devices: cfg.Devices, Addrs: cfg.Addrs, InFlight: cfg.InFlight, Plan: plan, TLS: cfg.TLS, Messages: cfg.Messages, PayloadSize: cfg.PayloadSize}
	defer func() { rep.LoadAvgAfter = loadAvg() }()
	for _, mode := range []string{ModeBerth, baseline} {
		base := ServeConfig{
			Mode: mode, Etcd: etcd.Endpoint(), Prefix: reg.Prefix(), PublicKeyFile: pubFile,
			GroupID: streamsGroup, Capacity: plan.ConnsPerServer*plan.StreamsPerConn + 1000, LogLevel: cfg.ChildLogLevel,
			ProfileDir: cfg.ProfileDir,
		}
		if pk != nil {
			base.TLSCert, base.TLSKey = pk.certFile, pk.keyFile
		}
		var refuse credentials.TransportCredentials
		if mode == ModeBerth {
			refuse = stolen
		}
		res, err := runServers(ctx, cfg, plan, base, hellos, creds, refuse, push, log)
		if err != nil {
			return nil, err
		}
		rep.Servers = append(rep.Servers, res)
		// The next kind starts from the same client state: the memory of
		// this one's connections goes back to the operating system.
		debug.FreeOSMemory()
	}
	return rep, nil
}

// signHellos mints the first frame of every device, as Assign would have,
// its token bound by b (zero: unbound).
func signHellos(priv ed25519.PrivateKey, n int, b token.Binding) ([]*executorv1.ConnectRequest, error) {
	signer, err := token.NewSigner(priv, nil)
	if err != nil {
		return nil, err
	}
	out := make([]*executorv1.ConnectRequest, n)
	for i := range out {
		id := fmt.Sprintf("bench-dev-%06d", i)
		tok, _, err := signer.SignBound(id, streamsGroup, "default", 1, time.Hour, b)
		if err != nil {
			return nil, err
		}
		out[i] = &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Hello{Hello: &executorv1.Hello{Token: tok, DeviceId: id}}}
	}
	return out, nil
}

// runServers measures one kind of server: start, stats, connect, stats,
// teardown.
// With refuse set, the servers must first refuse a Hello over it (a
// connection presenting another certificate than the one its token is
// bound to), or the run fails: the binding would not be measured.
// With push set, the traffic phase follows the idle measurement.
func runServers(ctx context.Context, cfg StreamsConfig, plan ConnPlan, base ServeConfig, hellos []*executorv1.ConnectRequest, creds, refuse credentials.TransportCredentials, push *pusher, log *slog.Logger) (res ServerResult, err error) {
	res = ServerResult{Mode: base.Mode, Servers: cfg.Addrs}
	children := make([]*child, 0, cfg.Addrs)
	defer func() {
		for _, c := range children {
			if serr := c.stop(); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	for i := range cfg.Addrs {
		sc := base
		sc.Listen = fmt.Sprintf("127.0.0.%d:0", i+1)
		sc.ExecutorID = fmt.Sprintf("bench-exec-%d", i+1)
		c, err := startChild(ctx, cfg.Command, cfg.Env, cfg.ChildStderr, sc)
		if err != nil {
			return res, err
		}
		children = append(children, c)
	}
	log.Info("servers ready", "mode", base.Mode, "servers", len(children))
	if refuse != nil {
		if err := checkRefused(ctx, children[0].addr, refuse, hellos[0]); err != nil {
			return res, fmt.Errorf("bench: %s: %w", base.Mode, err)
		}
	}
	if res.Before, err = sumStats(ctx, children); err != nil {
		return res, err
	}
	addrs := make([]string, len(children))
	for i, c := range children {
		addrs[i] = c.addr
	}
	fl, err := openFleet(ctx, plan, addrs, hellos, cfg.InFlight, creds)
	if fl != nil {
		defer fl.close()
	}
	if err != nil {
		return res, fmt.Errorf("bench: %s: %w", base.Mode, err)
	}
	res.Streams, res.ConnectTime = len(hellos), fl.connectTime
	log.Info("streams open", "mode", base.Mode, "streams", res.Streams, "connect_time", fl.connectTime)
	if res.After, err = sumStats(ctx, children); err != nil {
		return res, err
	}
	if push != nil {
		log.Info("traffic", "mode", base.Mode, "messages_per_device", cfg.Messages)
		if res.TrafficTime, err = push.run(ctx, addrs, hellos, creds); err != nil {
			return res, fmt.Errorf("bench: %s: traffic: %w", base.Mode, err)
		}
		res.Messages = cfg.Messages
		if res.Traffic, err = sumStats(ctx, children); err != nil {
			return res, err
		}
	}
	res.EndedEarly = fl.ended.Load()
	// The streams end before the servers do, so that the executor's drain
	// has nothing to wait for.
	fl.close()
	return res, nil
}

// sumStats asks every child for its stats and adds them up.
func sumStats(ctx context.Context, children []*child) (ServerStats, error) {
	var sum ServerStats
	for _, c := range children {
		st, err := c.stats(ctx)
		if err != nil {
			return sum, err
		}
		sum = sum.add(st)
	}
	return sum, nil
}

// streamOpenTimeout bounds the wait for one stream's Welcome.
const streamOpenTimeout = 30 * time.Second

// fleet is the client side: the connections and their idle streams, each
// with a goroutine that answers Pings.
type fleet struct {
	conns       []*grpc.ClientConn
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	connectTime time.Duration
	ended       atomic.Int64
	closeOnce   sync.Once
}

// openFleet opens one stream per hello: stream i on connection i%Conns,
// connection j to server j%len(addrs) with creds, at most inFlight at once.
// It returns once every stream was Welcomed, or at the first failure.
func openFleet(ctx context.Context, plan ConnPlan, addrs []string, hellos []*executorv1.ConnectRequest, inFlight int, creds credentials.TransportCredentials) (*fleet, error) {
	fctx, cancel := context.WithCancel(ctx)
	fl := &fleet{conns: make([]*grpc.ClientConn, plan.Conns), cancel: cancel}
	for j := range fl.conns {
		cc, err := grpc.NewClient(addrs[j%len(addrs)],
			grpc.WithTransportCredentials(creds),
			grpc.WithReadBufferSize(8<<10),
			grpc.WithWriteBufferSize(8<<10),
		)
		if err != nil {
			fl.close()
			return nil, err
		}
		fl.conns[j] = cc
	}
	var next atomic.Int64
	var failed atomic.Bool
	var first onceErr
	var workers sync.WaitGroup
	start := time.Now()
	for range min(inFlight, len(hellos)) {
		workers.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(hellos) {
					return
				}
				if err := fl.open(fctx, fl.conns[i%len(fl.conns)], hellos[i]); err != nil {
					first.set(fmt.Errorf("stream %d of %d: %w", i+1, len(hellos), err))
					failed.Store(true)
					return
				}
			}
		})
	}
	workers.Wait()
	fl.connectTime = time.Since(start)
	if err := ctx.Err(); err != nil {
		return fl, err
	}
	return fl, first.get()
}

// open opens one stream, sends hello and waits for Welcome; then a
// goroutine answers the stream's Pings until it ends.
func (fl *fleet) open(ctx context.Context, cc *grpc.ClientConn, hello *executorv1.ConnectRequest) error {
	sctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(streamOpenTimeout, cancel)
	st, err := executorv1.NewExecutorServiceClient(cc).Connect(sctx)
	if err == nil {
		err = st.Send(hello)
	}
	var first *executorv1.ConnectResponse
	if err == nil {
		first, err = st.Recv()
	}
	if !timer.Stop() {
		err = fmt.Errorf("no Welcome within %v (%v)", streamOpenTimeout, err)
	}
	if err == nil && first.GetWelcome() == nil {
		err = fmt.Errorf("first frame is %T, want a Welcome", first.GetFrame())
	}
	if err != nil {
		cancel()
		return err
	}
	fl.wg.Go(func() {
		defer cancel()
		for {
			resp, err := st.Recv()
			if err != nil {
				if ctx.Err() == nil {
					fl.ended.Add(1)
				}
				return
			}
			switch f := resp.GetFrame().(type) {
			case *executorv1.ConnectResponse_Ping:
				pong := &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Pong{Pong: &executorv1.Pong{Nonce: f.Ping.GetNonce()}}}
				if st.Send(pong) != nil {
					continue // Recv reports why
				}
			case *executorv1.ConnectResponse_Message:
				ack := &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Ack{Ack: &executorv1.Ack{MessageId: f.Message.GetMessageId()}}}
				if st.Send(ack) != nil {
					continue // Recv reports why
				}
			case *executorv1.ConnectResponse_Goodbye, *executorv1.ConnectResponse_Redirect:
				fl.ended.Add(1)
				return
			}
		}
	})
	return nil
}

// close ends every stream and connection and waits for the Pong goroutines.
func (fl *fleet) close() {
	fl.closeOnce.Do(func() {
		fl.cancel()
		for _, cc := range fl.conns {
			if cc != nil {
				cc.Close()
			}
		}
		fl.wg.Wait()
	})
}

// onceErr keeps the first error it is given.
type onceErr struct {
	mu  sync.Mutex
	err error
}

func (o *onceErr) set(err error) {
	o.mu.Lock()
	if o.err == nil {
		o.err = err
	}
	o.mu.Unlock()
}

func (o *onceErr) get() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}
