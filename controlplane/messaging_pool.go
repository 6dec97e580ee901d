package controlplane

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// serviceCreds puts a bearer service token on every call to an executor.
// The token is minted once and again at half its life; should minting fail,
// the old token serves until it expires.
type serviceCreds struct {
	signer  ServiceSigner
	subject string
	ttl     time.Duration
	now     func() time.Time

	mu      sync.Mutex
	tok     string
	exp     time.Time
	renewAt time.Time
}

var _ credentials.PerRPCCredentials = (*serviceCreds)(nil)

func newServiceCreds(signer ServiceSigner, subject string, ttl time.Duration, now func() time.Time) *serviceCreds {
	return &serviceCreds{signer: signer, subject: subject, ttl: ttl, now: now}
}

// token returns the current token, minting one when needed.
func (c *serviceCreds) token() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.tok != "" && now.Before(c.renewAt) {
		return c.tok, nil
	}
	tok, exp, err := c.signer.SignService(c.subject, c.ttl)
	if err != nil {
		if c.tok != "" && now.Before(c.exp) {
			return c.tok, nil
		}
		return "", err
	}
	c.tok, c.exp = tok, exp
	c.renewAt = now.Add(exp.Sub(now) / 2)
	return tok, nil
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c *serviceCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := c.token()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "controlplane: minting a service token: %v", err)
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials:
// executors are reached in plaintext, as devices reach them.
func (c *serviceCreds) RequireTransportSecurity() bool { return false }

// errPoolClosed is returned by acquire after close.
var errPoolClosed = errors.New("controlplane: connections to executors are closed")

// connPool holds one client connection per executor address.
type connPool struct {
	opts []grpc.DialOption
	now  func() time.Time

	mu     sync.Mutex
	conns  map[string]*poolConn
	closed bool
}

type poolConn struct {
	cc       *grpc.ClientConn
	client   executorv1.ExecutorInternalServiceClient
	users    int
	lastUsed time.Time
}

func newConnPool(creds credentials.PerRPCCredentials, extra []grpc.DialOption, now func() time.Time) *connPool {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(creds),
		// Executors tolerate pings every 15s at most (rpcserver defaults).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	}
	return &connPool{opts: append(opts, extra...), now: now, conns: map[string]*poolConn{}}
}

// acquire returns the client of addr's connection, dialing it on first use
// (grpc.NewClient connects lazily, so this does no I/O). release must be
// called when the call or stream is over.
func (p *connPool) acquire(addr string) (executorv1.ExecutorInternalServiceClient, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, errPoolClosed
	}
	pc, ok := p.conns[addr]
	if !ok {
		cc, err := grpc.NewClient(addr, p.opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("controlplane: executor address %q: %w", addr, err)
		}
		pc = &poolConn{cc: cc, client: executorv1.NewExecutorInternalServiceClient(cc)}
		p.conns[addr] = pc
	}
	pc.users++
	var once sync.Once
	release := func() {
		once.Do(func() {
			p.mu.Lock()
			pc.users--
			pc.lastUsed = p.now()
			p.mu.Unlock()
		})
	}
	return pc.client, release, nil
}

// prune closes the connections whose address is not live, that nobody uses
// and that were last used at least idle ago. It returns how many it closed.
func (p *connPool) prune(live map[string]bool, idle time.Duration) int {
	p.mu.Lock()
	var gone []*grpc.ClientConn
	now := p.now()
	for addr, pc := range p.conns {
		if !live[addr] && pc.users == 0 && now.Sub(pc.lastUsed) >= idle {
			gone = append(gone, pc.cc)
			delete(p.conns, addr)
		}
	}
	p.mu.Unlock()
	for _, cc := range gone {
		_ = cc.Close()
	}
	return len(gone)
}

// size counts the open connections.
func (p *connPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// close closes every connection; acquire fails afterwards.
func (p *connPool) close() {
	p.mu.Lock()
	conns := p.conns
	p.conns, p.closed = map[string]*poolConn{}, true
	p.mu.Unlock()
	for _, pc := range conns {
		_ = pc.cc.Close()
	}
}
