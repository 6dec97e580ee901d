package rebalance

import (
	"context"

	"github.com/berthproject/berth/execclient"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// Mover asks the executor at addr to move a device. GRPCMover implements
// it.
type Mover interface {
	Move(ctx context.Context, addr string, req *executorv1.MoveRequest) error
}

// ExecutorClients lends clients of executors' internal service, with the
// control plane's service token on every call. *execclient.Pool implements
// it.
type ExecutorClients interface {
	Acquire(addr string) (executorv1.ExecutorInternalServiceClient, func(), error)
}

var _ ExecutorClients = (*execclient.Pool)(nil)

// GRPCMover calls ExecutorInternalService.Move on the replica's shared
// connections to executors.
type GRPCMover struct {
	clients ExecutorClients
}

var _ Mover = (*GRPCMover)(nil)

// NewGRPCMover returns a mover calling executors through clients. It does
// no I/O.
func NewGRPCMover(clients ExecutorClients) *GRPCMover {
	return &GRPCMover{clients: clients}
}

// Move implements Mover.
func (m *GRPCMover) Move(ctx context.Context, addr string, req *executorv1.MoveRequest) error {
	c, release, err := m.clients.Acquire(addr)
	if err != nil {
		return err
	}
	defer release()
	_, err = c.Move(ctx, req)
	return err
}
