package execclient_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/execclient"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

func newPool(t *testing.T, cfg execclient.Config, deps execclient.Deps) *execclient.Pool {
	t.Helper()
	p, err := execclient.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func testConfig() execclient.Config {
	c := execclient.DefaultConfig()
	c.Subject = "cp-test"
	return c
}

func TestPoolPrune(t *testing.T) {
	clk := newClock()
	execs := &fakeExecutors{}
	const a, b = "127.0.0.1:1", "127.0.0.1:2"
	execs.set(a, b)
	p := newPool(t, testConfig(), execclient.Deps{Signer: &countingSigner{clk: clk}, Executors: execs, Now: clk.now})
	_, relA, err := p.Acquire(a)
	if err != nil {
		t.Fatal(err)
	}
	ca, relA2, _ := p.Acquire(a)
	_, relB, _ := p.Acquire(b)
	if p.Len() != 2 || ca == nil {
		t.Fatalf("pool holds %d connections; want one per address", p.Len())
	}
	relA()
	relA() // idempotent
	relA2()
	steps := []struct {
		name    string
		advance time.Duration
		live    []string
		release func()
		want    int // pruned
		left    int
	}{
		{name: "both live", want: 0, left: 2, live: []string{a, b}},
		{name: "left, used 30s ago", advance: 30 * time.Second, want: 0, left: 2},
		{name: "left, idle a minute", advance: 31 * time.Second, want: 1, left: 1},
		{name: "left, released just now", release: relB, want: 0, left: 1},
		{name: "a minute after the release", advance: time.Minute, want: 1, left: 0},
	}
	for _, st := range steps {
		execs.set(st.live...)
		clk.advance(st.advance)
		if st.release != nil {
			st.release()
		}
		if got := p.Prune(); got != st.want || p.Len() != st.left {
			t.Errorf("%s: pruned %d, %d left; want %d, %d left", st.name, got, p.Len(), st.want, st.left)
		}
	}
	// A pruned address is dialled again on use.
	_, rel, err := p.Acquire(a)
	if err != nil || p.Len() != 1 {
		t.Fatalf("Acquire after prune: %v, %d connections; want 1", err, p.Len())
	}
	rel()
	p.Close()
	if _, _, err := p.Acquire(a); !errors.Is(err, execclient.ErrClosed) {
		t.Errorf("Acquire after Close = %v; want ErrClosed", err)
	}
}

// TestPoolRun: Run prunes on its own, and returns when its context ends.
// TestPoolPruneInternalAddress: the pool keeps the connection to an
// executor's internal address, which control planes dial, and prunes the
// one to its device address once the executor names an internal address
// (an executor restarted with --internal-listen).
func TestPoolPruneInternalAddress(t *testing.T) {
	clk := newClock()
	execs := &fakeExecutors{}
	const dev, internal = "127.0.0.1:1", "127.0.0.1:2"
	p := newPool(t, testConfig(), execclient.Deps{Signer: &countingSigner{clk: clk}, Executors: execs, Now: clk.now})
	clients := map[string]executorv1.ExecutorInternalServiceClient{}
	for _, addr := range []string{dev, internal} {
		c, release, err := p.Acquire(addr)
		if err != nil {
			t.Fatal(err)
		}
		clients[addr] = c
		release()
	}
	execs.mu.Lock()
	execs.snap = registry.NewSnapshot(1, nil, []registry.Executor{{ID: "e1", GroupID: "g1", Address: dev, InternalAddress: internal, Capacity: 1}})
	execs.mu.Unlock()
	clk.advance(time.Minute)
	if got := p.Prune(); got != 1 || p.Len() != 1 {
		t.Fatalf("pruned %d, %d left; want the device address's connection pruned, the internal one kept", got, p.Len())
	}
	c, release, err := p.Acquire(internal)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if c != clients[internal] {
		t.Errorf("the internal address's connection was pruned; want it kept")
	}
}

func TestPoolRun(t *testing.T) {
	clk := newClock()
	execs := &fakeExecutors{}
	execs.set()
	cfg := testConfig()
	cfg.IdleTimeout = 20 * time.Millisecond // the ticker runs on real time
	p := newPool(t, cfg, execclient.Deps{Signer: &countingSigner{clk: clk}, Executors: execs, Now: clk.now})
	_, rel, err := p.Acquire("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	rel()
	clk.advance(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	testutil.WaitFor(t, testutil.DefaultTimeout, "the idle connection pruned", func() bool { return p.Len() == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v; want nil", err)
	}
}

func TestNewRefuses(t *testing.T) {
	good := testConfig()
	clk := newClock()
	tests := []struct {
		name string
		cfg  func(*execclient.Config)
		deps execclient.Deps
		want string
	}{
		{name: "no signer", cfg: func(*execclient.Config) {}, want: "signer"},
		{name: "no subject", cfg: func(c *execclient.Config) { c.Subject = "" }, deps: execclient.Deps{Signer: &countingSigner{clk: clk}}, want: "subject"},
		{name: "short TTL", cfg: func(c *execclient.Config) { c.TokenTTL = time.Second }, deps: execclient.Deps{Signer: &countingSigner{clk: clk}}, want: "service token TTL"},
		{name: "no idle timeout", cfg: func(c *execclient.Config) { c.IdleTimeout = 0 }, deps: execclient.Deps{Signer: &countingSigner{clk: clk}}, want: "idle timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.cfg(&cfg)
			p, err := execclient.New(cfg, tt.deps)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				if p != nil {
					p.Close()
				}
				t.Errorf("New = %v; want an error naming %q", err, tt.want)
			}
		})
	}
	if got := execclient.DefaultConfig().TokenTTL; got != token.ServiceTokenTTL {
		t.Errorf("default token TTL %v; want token.ServiceTokenTTL %v", got, token.ServiceTokenTTL)
	}
}

// tokenExec is an executor's internal service on loopback that verifies
// the service token of every Deliver as an executor does, on a fake clock.
type tokenExec struct {
	executorv1.UnimplementedExecutorInternalServiceServer
	verifier *token.Verifier

	mu     sync.Mutex
	tokens []string // distinct tokens accepted, in order
}

func (e *tokenExec) Deliver(ctx context.Context, _ *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 || !strings.HasPrefix(vals[0], "Bearer ") {
		return nil, status.Error(codes.Unauthenticated, "missing bearer token")
	}
	raw := strings.TrimPrefix(vals[0], "Bearer ")
	c, err := e.verifier.Verify(raw)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if c.Role != token.RoleControlPlane || c.DeviceID != "cp-test" {
		return nil, status.Errorf(codes.PermissionDenied, "role %q subject %q", c.Role, c.DeviceID)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if n := len(e.tokens); n == 0 || e.tokens[n-1] != raw {
		e.tokens = append(e.tokens, raw)
	}
	return &executorv1.DeliverResponse{SessionId: "s1"}, nil
}

func (e *tokenExec) seen() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.tokens)
}

// TestServiceTokenRenewedOnExecutor: the pooled connection presents a
// fresh service token once the current one passed half its life, and the
// executor accepts both. The clock of the signer, the pool and the
// executor's verifier is moved by hand.
func TestServiceTokenRenewedOnExecutor(t *testing.T) {
	clk := newClock()
	priv, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := token.NewSigner(priv, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := token.NewVerifier(clk.now, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	ex := &tokenExec{verifier: verifier}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	executorv1.RegisterExecutorInternalServiceServer(gs, ex)
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-served })

	cfg := testConfig()
	cfg.TokenTTL = 2 * time.Second
	p := newPool(t, cfg, execclient.Deps{Signer: signer, Now: clk.now})
	steps := []struct {
		name    string
		advance time.Duration
		want    int // distinct tokens seen
	}{
		{name: "first call", want: 1},
		{name: "a quick second call", want: 1},
		{name: "past half of the 2s life", advance: 1100 * time.Millisecond, want: 2},
		{name: "the renewed token, still fresh", advance: 500 * time.Millisecond, want: 2},
	}
	for _, st := range steps {
		clk.advance(st.advance)
		c, rel, err := p.Acquire(lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
		_, err = c.Deliver(ctx, &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "m1"}})
		cancel()
		rel()
		if err != nil {
			t.Fatalf("%s: Deliver: %v", st.name, err)
		}
		if got := ex.seen(); got != st.want {
			t.Errorf("%s: %d distinct tokens seen; want %d", st.name, got, st.want)
		}
	}
}
