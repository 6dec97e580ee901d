package execclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/codec"
)

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("execclient: connections to executors are closed")

// DialOptions are the options of every connection to an executor: TLS
// with tlsCfg (nil: plaintext, for loopback and --insecure clusters),
// creds on every call, reconnects at most ReconnectMaxDelay apart, and
// keepalive pings every 30s (timeout 10s), which executors tolerate: their
// servers (internal/rpcserver) accept client pings every 15s at most, with
// or without a call under way.
//
// Reconnects: while an executor cannot be reached, calls to it fail at once
// with UNAVAILABLE, until a reconnect succeeds. gRPC's own backoff grows to
// 120s, so that after a partition of 30s the first reconnect came 15s after
// the network was back (docs/reliability.md); capped at ReconnectMaxDelay,
// it comes within about that, for one connection attempt per executor
// and replica every ReconnectMaxDelay while the executor is away.
//
// PermitWithoutStream is on, deliberately: a replica's connection to an
// executor is idle between bursts of Sends and moves, often for minutes,
// and a ping on the idle connection finds an executor whose host died (or a
// middlebox that dropped the connection) before the next Send has to wait
// for TCP to notice. It costs one ping per executor per replica every 30s,
// and the executors' enforcement policy permits it (a client pinging an
// idle connection without that permission would be sent GOAWAY
// "too_many_pings").
func DialOptions(creds credentials.PerRPCCredentials, tlsCfg *tls.Config) []grpc.DialOption {
	transport := insecure.NewCredentials()
	if tlsCfg != nil {
		transport = credentials.NewTLS(tlsCfg)
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		grpc.WithPerRPCCredentials(creds),
		codec.DialOption(),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: ReconnectMaxDelay},
			MinConnectTimeout: 20 * time.Second, // gRPC's default
		}),
	}
}

// ReconnectMaxDelay is the longest wait between two attempts to reconnect
// to an executor (gRPC's backoff, from 1s growing 1.6 times with 20%
// jitter, capped here instead of at gRPC's 120s).
const ReconnectMaxDelay = 2 * time.Second

// Pool holds one client connection per executor address, shared by every
// part of a replica that calls executors. Its methods are safe for
// concurrent use.
type Pool struct {
	opts  []grpc.DialOption
	tls   bool // connections are TLS: an executor's TLSName is its authority
	creds *Credentials
	execs Executors // nil: nothing is pruned
	idle  time.Duration
	now   func() time.Time
	log   *slog.Logger

	mu     sync.Mutex
	conns  map[string]*conn
	closed bool
}

// conn is one executor's connection and its users.
type conn struct {
	cc       *grpc.ClientConn
	client   executorv1.ExecutorInternalServiceClient
	users    int
	lastUsed time.Time
}

// New builds a pool. It dials nothing and starts nothing.
func New(cfg Config, deps Deps) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Signer == nil {
		return nil, errors.New("execclient: a signer is required")
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	creds := NewCredentials(deps.Signer, cfg.Subject, cfg.TokenTTL, deps.Now, deps.Log)
	opts := append(DialOptions(creds, cfg.TLS), cfg.DialOptions...)
	return &Pool{
		opts: opts, tls: cfg.TLS != nil, creds: creds, execs: deps.Executors, idle: cfg.IdleTimeout, now: deps.Now, log: deps.Log,
		conns: map[string]*conn{},
	}, nil
}

// Credentials returns the credentials every call of the pool carries.
func (p *Pool) Credentials() *Credentials { return p.creds }

// Acquire returns the client of addr's connection, dialing it on first use
// (grpc.NewClient connects lazily, so this does no I/O). release must be
// called once the call or stream is over; calling it again does nothing.
func (p *Pool) Acquire(addr string) (executorv1.ExecutorInternalServiceClient, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, ErrClosed
	}
	c, ok := p.conns[addr]
	if !ok {
		opts := p.opts
		if name := p.tlsName(addr); name != "" {
			opts = append(slices.Clip(opts), grpc.WithAuthority(name))
		}
		cc, err := grpc.NewClient(addr, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("execclient: executor address %q: %w", addr, err)
		}
		c = &conn{cc: cc, client: executorv1.NewExecutorInternalServiceClient(cc)}
		p.conns[addr] = c
	}
	c.users++
	var once sync.Once
	release := func() {
		once.Do(func() {
			p.mu.Lock()
			c.users--
			c.lastUsed = p.now()
			p.mu.Unlock()
		})
	}
	return c.client, release, nil
}

// tlsName is the TLS name the registry gives the executor at addr (its
// control address: the internal address when it has one, whose listener
// serves the same certificate), which its certificate is checked by (as
// devices check it); "" without TLS, or when the executor gives none (then
// the host of addr is checked).
func (p *Pool) tlsName(addr string) string {
	if !p.tls || p.execs == nil {
		return ""
	}
	snap := p.execs.Snapshot()
	if snap == nil {
		return ""
	}
	for _, e := range snap.Executors {
		if e.ControlAddress() == addr {
			return e.TLSName
		}
	}
	return ""
}

// Prune closes the connections to addresses the registry no longer names
// as an executor's control address (the internal address when it has one,
// else its address) that nobody uses and that were last used at least
// IdleTimeout ago. It returns how many it closed.
func (p *Pool) Prune() int {
	if p.execs == nil {
		return 0
	}
	snap := p.execs.Snapshot()
	live := make(map[string]bool, len(snap.Executors))
	for _, e := range snap.Executors {
		live[e.ControlAddress()] = true
	}
	return p.prune(live)
}

func (p *Pool) prune(live map[string]bool) int {
	p.mu.Lock()
	var gone []*grpc.ClientConn
	now := p.now()
	for addr, c := range p.conns {
		if !live[addr] && c.users == 0 && now.Sub(c.lastUsed) >= p.idle {
			gone = append(gone, c.cc)
			delete(p.conns, addr)
		}
	}
	p.mu.Unlock()
	for _, cc := range gone {
		_ = cc.Close()
	}
	return len(gone)
}

// Run prunes every half IdleTimeout until ctx is done, then returns nil.
func (p *Pool) Run(ctx context.Context) error {
	t := time.NewTicker(max(p.idle/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if n := p.Prune(); n > 0 {
			p.log.Debug("closed connections to executors that left", "closed", n)
		}
	}
}

// Len counts the open connections.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close closes every connection; Acquire fails with ErrClosed afterwards.
// Call it once nothing calls executors any more.
func (p *Pool) Close() {
	p.mu.Lock()
	conns := p.conns
	p.conns, p.closed = map[string]*conn{}, true
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.cc.Close()
	}
}
