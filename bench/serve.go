package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/berthproject/berth/executor"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// Server modes of Serve.
const (
	// ModeBerth runs a real executor: registry registration, token
	// verification, admission, pings.
	ModeBerth = "berth"
	// ModeBare runs a bare grpc-go ExecutorService on the same server stack
	// whose Connect reads the first frame, answers Welcome and blocks in
	// Recv.
	ModeBare = "bare"
	// ModeBarePush is ModeBare that can also push: its Connect keeps each
	// stream by device id and reads the Acks, and an unauthenticated
	// ExecutorInternalService.Deliver sends a message on a stream and
	// waits for its Ack (bench push's baseline). bench streams uses it
	// for its traffic phase (--messages).
	ModeBarePush = "bare-push"
	// ModeControlPlane runs a control plane (bench assign's server under
	// test, in a process of its own).
	ModeControlPlane = "controlplane"
	// ModeLean runs grpc-go as it comes: grpc.NewServer() with no option
	// but the transport credentials, and the standard health service,
	// nothing else (bench assign's lean baseline: what the machine allows
	// a unary call).
	ModeLean = "lean"
)

// Lines a Serve child understands on its input.
const (
	cmdStats = "stats"
	cmdQuit  = "quit"
)

// ServeConfig is what a Serve child is told on its command line.
type ServeConfig struct {
	// Mode is ModeBerth or ModeBare.
	Mode string
	// Listen is the address to serve on ("127.0.0.1:0" picks a port).
	Listen string
	// Etcd is the etcd endpoint the executor registers with (berth mode).
	Etcd string
	// Prefix is the registry prefix (berth mode).
	Prefix string
	// PublicKeyFile holds the token verification key, PEM (berth mode).
	PublicKeyFile string
	// ExecutorID and GroupID name the executor (berth mode; bare mode puts
	// them in its Welcome).
	ExecutorID, GroupID string
	// Capacity is the most streams the executor admits (berth mode).
	Capacity int
	// LogLevel is the child's log level.
	LogLevel string
	// TokenCacheSize is the control plane's token cache size, 0 for none
	// (controlplane mode; -1 keeps the default).
	TokenCacheSize int
	// LabelMemoSize is the control plane's label memo size, 0 for none
	// (controlplane mode; -1 keeps the default).
	LabelMemoSize int
	// TLSCert and TLSKey, both or neither, are the server's certificate
	// and key files: set, the child serves TLS and requests client
	// certificates (controlplane mode: and authenticates devices by their
	// enrollments, enrollment closed); unset, plaintext.
	TLSCert, TLSKey string
	// ProfileDir, when set, is where every stats answer also writes the
	// child's heap profile (all allocations sampled) and goroutine profile,
	// as <mode>-<id>-<n>-heap.pb.gz and <mode>-<id>-<n>-goroutine.txt for
	// the nth stats call (berth and bare modes).
	ProfileDir string
	// CPUProfile, when set, is a file the child writes a CPU profile of
	// itself to, from its start until it stops (every mode).
	CPUProfile string
	// LeanAnswer, in lean mode, is an AssignResponse in the protobuf wire
	// format: set, the lean server also serves ControlPlaneService, whose
	// Assign answers every request with it (bench assign's lean-assign:
	// what an Assign's messages cost on grpc-go alone).
	LeanAnswer []byte
}

// Args returns the command-line flags that ParseServeArgs turns back into c.
func (c ServeConfig) Args() []string {
	return []string{
		"--mode=" + c.Mode,
		"--listen=" + c.Listen,
		"--etcd=" + c.Etcd,
		"--prefix=" + c.Prefix,
		"--pubkey=" + c.PublicKeyFile,
		"--id=" + c.ExecutorID,
		"--group=" + c.GroupID,
		fmt.Sprintf("--capacity=%d", c.Capacity),
		fmt.Sprintf("--token-cache=%d", c.TokenCacheSize),
		fmt.Sprintf("--label-memo=%d", c.LabelMemoSize),
		"--log-level=" + c.LogLevel,
		"--tls-cert=" + c.TLSCert,
		"--tls-key=" + c.TLSKey,
		"--profile-dir=" + c.ProfileDir,
		"--cpuprofile-file=" + c.CPUProfile,
		"--lean-answer=" + base64.StdEncoding.EncodeToString(c.LeanAnswer),
	}
}

// ParseServeArgs parses the flags of a Serve child and validates them.
func ParseServeArgs(args []string) (ServeConfig, error) {
	var c ServeConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Mode, "mode", ModeBerth, "berth, bare or controlplane")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:0", "address to serve on")
	fs.StringVar(&c.Etcd, "etcd", "", "etcd endpoint (berth mode)")
	fs.StringVar(&c.Prefix, "prefix", registry.DefaultPrefix, "registry prefix (berth mode)")
	fs.StringVar(&c.PublicKeyFile, "pubkey", "", "PEM token verification key (berth mode)")
	fs.StringVar(&c.ExecutorID, "id", "bench-exec-1", "executor id")
	fs.StringVar(&c.GroupID, "group", "group-1", "group id")
	fs.IntVar(&c.Capacity, "capacity", executor.DefaultConfig().Capacity, "most streams admitted (berth mode)")
	fs.StringVar(&c.LogLevel, "log-level", "warn", "log level")
	fs.IntVar(&c.TokenCacheSize, "token-cache", -1, "token cache size, 0 for none (controlplane mode; -1 keeps the default)")
	fs.IntVar(&c.LabelMemoSize, "label-memo", -1, "label memo size, 0 for none (controlplane mode; -1 keeps the default)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "server certificate file: serve TLS (with --tls-key)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "server key file (with --tls-cert)")
	fs.StringVar(&c.ProfileDir, "profile-dir", "", "directory for a heap and goroutine profile at every stats answer")
	fs.StringVar(&c.CPUProfile, "cpuprofile-file", "", "file for a CPU profile of this child, from its start until it stops")
	var answer string
	fs.StringVar(&answer, "lean-answer", "", "base64 of an AssignResponse the lean server's Assign answers with (lean mode)")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("bench serve: %w", err)
	}
	if answer != "" {
		b, err := base64.StdEncoding.DecodeString(answer)
		if err != nil {
			return c, fmt.Errorf("bench serve: --lean-answer: %w", err)
		}
		c.LeanAnswer = b
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("bench serve: unexpected arguments %q", fs.Args())
	}
	return c, c.Validate()
}

// NeedsRegistry reports whether Serve needs a registry for c's mode.
func (c ServeConfig) NeedsRegistry() bool {
	return c.Mode != ModeBare && c.Mode != ModeBarePush && c.Mode != ModeLean
}

// Validate checks c.
func (c ServeConfig) Validate() error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("bench serve: --tls-cert and --tls-key go together")
	}
	if err := checkLoopback(c.Listen); err != nil {
		return fmt.Errorf("bench serve: %w", err)
	}
	switch c.Mode {
	case ModeBare, ModeBarePush, ModeLean:
		return nil
	case ModeBerth:
		if c.Etcd == "" || c.PublicKeyFile == "" {
			return errors.New("bench serve: berth mode needs --etcd and --pubkey")
		}
		return nil
	case ModeControlPlane:
		if c.Etcd == "" {
			return errors.New("bench serve: controlplane mode needs --etcd")
		}
		return nil
	}
	return fmt.Errorf("bench serve: --mode %q: want %s, %s, %s, %s or %s", c.Mode, ModeBerth, ModeBare, ModeBarePush, ModeControlPlane, ModeLean)
}

// ServerStats is what a Serve child reports about itself.
type ServerStats struct {
	// RSS is VmRSS, in bytes, after a GC that returned free memory to the
	// operating system.
	RSS int64 `json:"rss_bytes"`
	// HeapInuse, HeapAlloc and StackInuse come from runtime.MemStats after
	// that GC, in bytes.
	HeapInuse  uint64 `json:"heap_inuse_bytes"`
	HeapAlloc  uint64 `json:"heap_alloc_bytes"`
	StackInuse uint64 `json:"stack_inuse_bytes"`
	// Goroutines is runtime.NumGoroutine().
	Goroutines int `json:"goroutines"`
	// Streams is the number of open device streams.
	Streams int `json:"streams"`
	// Writes is the number of assignment records a control plane wrote
	// (controlplane mode).
	Writes int64 `json:"writes,omitempty"`
	// Assignments is the number of assignment records in a control
	// plane's cache (controlplane mode).
	Assignments int `json:"assignments,omitempty"`
}

// add returns s + o, field by field.
func (s ServerStats) add(o ServerStats) ServerStats {
	return ServerStats{
		RSS: s.RSS + o.RSS, HeapInuse: s.HeapInuse + o.HeapInuse, HeapAlloc: s.HeapAlloc + o.HeapAlloc,
		StackInuse: s.StackInuse + o.StackInuse, Goroutines: s.Goroutines + o.Goroutines, Streams: s.Streams + o.Streams,
	}
}

// readyLine is the first line a Serve child prints.
type readyLine struct {
	Addr string `json:"addr"`
}

// collectStats measures this process; streams counts the open streams.
func collectStats(streams int) (ServerStats, error) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, err := readRSS()
	if err != nil {
		return ServerStats{}, err
	}
	return ServerStats{
		RSS: rss, HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc, StackInuse: ms.StackInuse,
		Goroutines: runtime.NumGoroutine(), Streams: streams,
	}, nil
}

// writeProfiles writes this process's heap profile (after a GC) and
// goroutine profile into dir, named name-heap.pb.gz and name-goroutine.txt.
func writeProfiles(dir, name string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	runtime.GC()
	for _, p := range []struct {
		profile, file string
		debug         int
	}{{"heap", name + "-heap.pb.gz", 0}, {"goroutine", name + "-goroutine.txt", 1}} {
		f, err := os.Create(filepath.Join(dir, p.file))
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		err = pprof.Lookup(p.profile).WriteTo(f, p.debug)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("bench: profile %s: %w", p.file, err)
		}
	}
	return nil
}

// Serve is the body of a benchmark child (`berth bench serve`): it serves
// ExecutorService in cfg.Mode, prints {"addr": "host:port"} on out once it
// is ready (for berth mode: registered in etcd through reg), then answers
// each "stats" line of in with one ServerStats JSON line. It stops when in
// says "quit" or ends, or ctx ends, and returns nil after a clean stop. reg
// is only used in berth mode.
func Serve(ctx context.Context, cfg ServeConfig, reg *registry.Registry, in io.Reader, out io.Writer, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.CPUProfile != "" {
		stop, err := startCPUProfile(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if cfg.Mode == ModeControlPlane {
		return serveControlPlane(ctx, cfg, reg, in, out, log)
	}
	if _, err := RaiseFileLimit(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	if cfg.ProfileDir != "" {
		// Every allocation site, so that the profiles account for the
		// bytes of each stream.
		runtime.MemProfileRate = 1
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
	g, gctx := errgroup.WithContext(ctx)

	var streams func() int
	var ready func() bool
	switch cfg.Mode {
	case ModeBerth:
		if reg == nil {
			lis.Close()
			return errors.New("bench serve: berth mode needs a registry")
		}
		ex, err := newBenchExecutor(cfg, lis.Addr().String(), tc, reg, log)
		if err != nil {
			lis.Close()
			return err
		}
		g.Go(func() error { return ex.Run(gctx, lis) })
		streams, ready = ex.Server().Sessions, ex.Registration().Registered
		if tc != nil {
			// The devices' tokens name the benchmark's enrollment, which
			// the executor must know before it takes them.
			ready = func() bool {
				_, ok := ex.Trust().Enrollment(benchEnrollment)
				return ok && ex.Registration().Registered()
			}
		}
	case ModeLean:
		srv, err := newLeanServer(tc, cfg.LeanAnswer)
		if err != nil {
			lis.Close()
			return err
		}
		g.Go(func() error {
			if err := srv.Serve(lis); err != nil {
				return fmt.Errorf("bench serve: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			srv.Stop()
			return nil
		})
		streams, ready = func() int { return 0 }, func() bool { return true }
	default:
		bare := &bareServer{executorID: cfg.ExecutorID, groupID: cfg.GroupID}
		rc := rpcserver.DefaultConfig()
		rc.TLS = tc
		rpc := rpcserver.New(rc, log)
		streams = func() int { return int(bare.streams.Load()) }
		if cfg.Mode == ModeBarePush {
			push := newBarePush()
			push.register(rpc.GRPC)
			streams = push.count
		} else {
			executorv1.RegisterExecutorServiceServer(rpc.GRPC, bare)
		}
		rpc.SetServing(true, executor.ServiceName)
		g.Go(func() error {
			if err := rpc.GRPC.Serve(lis); err != nil {
				return fmt.Errorf("bench serve: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			rpc.Stop(2 * time.Second)
			return nil
		})
		ready = func() bool { return true }
	}

	g.Go(func() error {
		if err := poll(gctx, 30*time.Second, "registration", ready); err != nil {
			return err
		}
		if err := json.NewEncoder(out).Encode(readyLine{Addr: lis.Addr().String()}); err != nil {
			return fmt.Errorf("bench serve: %w", err)
		}
		calls := 0
		return answer(gctx, in, out, func() (ServerStats, error) {
			st, err := collectStats(streams())
			calls++
			if err == nil && cfg.ProfileDir != "" {
				err = writeProfiles(cfg.ProfileDir, fmt.Sprintf("%s-%s-%d", cfg.Mode, cfg.ExecutorID, calls))
			}
			return st, err
		}, cancel)
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// checkLoopback refuses a listen address off loopback: the benchmark's
// servers authenticate no one (the bare and lean servers answer any
// caller, the lean Assign hands out a prepared answer), so they serve
// this machine only, as every benchmark's load targets loopback.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("listen address %q: benchmark servers serve loopback only (they authenticate no one)", addr)
}

// startCPUProfile starts a CPU profile of this process into the file at
// path; stop ends it and closes the file.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("bench serve: CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench serve: CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// newLeanServer is ModeLean's server: grpc-go's defaults and the standard
// health service (every service SERVING), over TLS with tc when set; with
// answer (an AssignResponse in the wire format) also a ControlPlaneService
// whose Assign answers every request with it.
func newLeanServer(tc *tls.Config, answer []byte) (*grpc.Server, error) {
	var opts []grpc.ServerOption
	if tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	if answer != nil {
		a := &controlplanev1.AssignResponse{}
		if err := proto.Unmarshal(answer, a); err != nil {
			return nil, fmt.Errorf("bench serve: lean answer: %w", err)
		}
		controlplanev1.RegisterControlPlaneServiceServer(srv, preparedAssign{answer: a})
	}
	return srv, nil
}

// preparedAssign is the lean server's ControlPlaneService: Assign answers
// every request with one prepared answer, doing nothing else (the answer is
// only read: gRPC marshals it for each call).
type preparedAssign struct {
	controlplanev1.UnimplementedControlPlaneServiceServer
	answer *controlplanev1.AssignResponse
}

// Assign returns the prepared answer.
func (p preparedAssign) Assign(context.Context, *controlplanev1.AssignRequest) (*controlplanev1.AssignResponse, error) {
	return p.answer, nil
}

// answer serves the input's commands until it says quit or ends, then calls
// stop. A read blocked in in is abandoned when ctx ends (the process is
// about to exit).
func answer(ctx context.Context, in io.Reader, out io.Writer, stats func() (ServerStats, error), stop func()) error {
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- strings.TrimSpace(sc.Text()):
			case <-ctx.Done():
				return
			}
		}
	}()
	enc := json.NewEncoder(out)
	for {
		var line string
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case line, ok = <-lines:
		}
		switch {
		case !ok || line == cmdQuit:
			stop()
			return nil
		case line == cmdStats:
			st, err := stats()
			if err != nil {
				return err
			}
			if err := enc.Encode(st); err != nil {
				return fmt.Errorf("bench serve: %w", err)
			}
		case line == "":
		default:
			if err := enc.Encode(map[string]string{"error": "unknown command " + line}); err != nil {
				return fmt.Errorf("bench serve: %w", err)
			}
		}
	}
}

// benchDrainTimeout bounds the drain of a berth child; the parent closes its
// streams before stopping it, so the drain has nothing to wait for.
const benchDrainTimeout = 2 * time.Second

// newBenchExecutor wires a real executor with its registration, serving
// TLS with tc (nil: plaintext); it records no usage.
func newBenchExecutor(cfg ServeConfig, addr string, tc *tls.Config, reg *registry.Registry, log *slog.Logger) (*node.Executor, error) {
	pub, err := token.ReadPublicKeyFile(cfg.PublicKeyFile)
	if err != nil {
		return nil, err
	}
	v, err := token.NewVerifier(nil, pub)
	if err != nil {
		return nil, err
	}
	ec := node.DefaultExecutorConfig()
	ec.RecordUsage = false
	ec.Executor.ID, ec.Executor.GroupID, ec.Executor.Address, ec.Executor.Capacity = cfg.ExecutorID, cfg.GroupID, addr, cfg.Capacity
	ec.Executor.DrainTimeout = benchDrainTimeout
	ec.Executor.RPC.TLS = tc
	return node.NewExecutor(ec, node.ExecutorDeps{Registry: reg, Verifier: v, Log: log})
}

// bareServer is the baseline: the least a grpc-go server does to hold an
// idle device stream.
type bareServer struct {
	executorv1.UnimplementedExecutorServiceServer
	executorID, groupID string
	streams             atomic.Int64
}

// Connect reads the first frame, answers Welcome and blocks in Recv.
func (b *bareServer) Connect(stream executorv1.ExecutorService_ConnectServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	// Counted before the Welcome leaves, so that a client that saw its
	// Welcome also sees the stream counted.
	b.streams.Add(1)
	defer b.streams.Add(-1)
	err := stream.Send(&executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Welcome{Welcome: &executorv1.Welcome{
		SessionId: rand.Text(), ExecutorId: b.executorID, GroupId: b.groupID,
	}}})
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}
