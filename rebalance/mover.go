package rebalance

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

// Mover asks the executor at addr to move a device. GRPCMover implements
// it.
type Mover interface {
	Move(ctx context.Context, addr string, req *executorv1.MoveRequest) error
}

// ServiceSigner mints the service tokens presented to executors.
// *token.Signer implements it.
type ServiceSigner interface {
	SignService(subject string, ttl time.Duration) (string, time.Time, error)
}

var errMoverClosed = errors.New("rebalance: mover closed")

// GRPCMover calls ExecutorInternalService.Move, with one connection per
// executor address and a control plane's service token on every call.
type GRPCMover struct {
	opts []grpc.DialOption

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

var _ Mover = (*GRPCMover)(nil)

// NewGRPCMover returns a mover whose calls carry service tokens of subject
// minted by signer for ttl (renewed at half their life). It does no I/O.
func NewGRPCMover(signer ServiceSigner, subject string, ttl time.Duration, opts ...grpc.DialOption) *GRPCMover {
	creds := &serviceCreds{signer: signer, subject: subject, ttl: ttl}
	return &GRPCMover{
		opts: append([]grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(creds),
			// Executors tolerate pings every 15s at most.
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		}, opts...),
		conns: map[string]*grpc.ClientConn{},
	}
}

// Move implements Mover.
func (m *GRPCMover) Move(ctx context.Context, addr string, req *executorv1.MoveRequest) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errMoverClosed
	}
	cc, ok := m.conns[addr]
	if !ok {
		var err error
		if cc, err = grpc.NewClient(addr, m.opts...); err != nil {
			m.mu.Unlock()
			return fmt.Errorf("rebalance: executor address %q: %w", addr, err)
		}
		m.conns[addr] = cc
	}
	m.mu.Unlock()
	_, err := executorv1.NewExecutorInternalServiceClient(cc).Move(ctx, req)
	return err
}

// Prune closes the connections to addresses not in live.
func (m *GRPCMover) Prune(live map[string]bool) {
	m.mu.Lock()
	var gone []*grpc.ClientConn
	for addr, cc := range m.conns {
		if !live[addr] {
			gone = append(gone, cc)
			delete(m.conns, addr)
		}
	}
	m.mu.Unlock()
	for _, cc := range gone {
		_ = cc.Close()
	}
}

// Close closes every connection; Move fails afterwards.
func (m *GRPCMover) Close() {
	m.mu.Lock()
	conns := m.conns
	m.conns, m.closed = map[string]*grpc.ClientConn{}, true
	m.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
}

// serviceCreds puts a bearer service token on every call, minted once and
// again at half its life.
type serviceCreds struct {
	signer  ServiceSigner
	subject string
	ttl     time.Duration

	mu      sync.Mutex
	tok     string
	renewAt time.Time
}

var _ credentials.PerRPCCredentials = (*serviceCreds)(nil)

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c *serviceCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.tok == "" || !now.Before(c.renewAt) {
		tok, exp, err := c.signer.SignService(c.subject, c.ttl)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "rebalance: minting a service token: %v", err)
		}
		c.tok, c.renewAt = tok, now.Add(exp.Sub(now)/2)
	}
	return map[string]string{"authorization": "Bearer " + c.tok}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials:
// executors are reached in plaintext, as devices reach them.
func (c *serviceCreds) RequireTransportSecurity() bool { return false }
