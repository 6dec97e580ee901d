package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// pushFleet is the device side of bench push, in a child process of role
// devices: one TCP connection and one Connect stream per device, each with
// a goroutine that acknowledges every Message at once and answers Pings.
type pushFleet struct {
	conns  []*grpc.ClientConn
	cancel context.CancelFunc
	wg     sync.WaitGroup
	open   atomic.Int64 // streams open now
	acks   atomic.Int64 // messages acknowledged
	ended  atomic.Int64 // streams the server ended
	once   sync.Once
}

// pushDeviceID is the id of bench push's device i.
func pushDeviceID(i int) string { return fmt.Sprintf("push-dev-%06d", i) }

// openPushFleet connects cfg.Devices devices, at most inFlight at once.
// With cfg.ControlPlane set, each device calls Assign there first and
// connects to the first endpoint of its answer with its token, as a device
// does; otherwise it connects to cfg.Targets in turn with a Hello without a
// token (the bare server takes any). It returns once every stream was
// Welcomed, or at the first failure.
func openPushFleet(ctx context.Context, cfg PushChildConfig) (*pushFleet, error) {
	fctx, cancel := context.WithCancel(ctx)
	fl := &pushFleet{cancel: cancel}
	var assign controlplanev1.ControlPlaneServiceClient
	if cfg.ControlPlane != "" {
		cc, err := grpc.NewClient(cfg.ControlPlane, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fl.close()
			return nil, fmt.Errorf("bench: %w", err)
		}
		fl.conns = append(fl.conns, cc)
		assign = controlplanev1.NewControlPlaneServiceClient(cc)
	}
	targets := strings.Split(cfg.Targets, ",")
	var mu sync.Mutex
	var next atomic.Int64
	var first onceErr
	var workers sync.WaitGroup
	for range min(cfg.InFlight, cfg.Devices) {
		workers.Go(func() {
			for first.get() == nil {
				i := int(next.Add(1) - 1)
				if i >= cfg.Devices {
					return
				}
				id := pushDeviceID(i)
				addr, tok, ticket := targets[i%len(targets)], "", ""
				if assign != nil {
					actx, acancel := context.WithTimeout(fctx, streamOpenTimeout)
					resp, err := assign.Assign(actx, &controlplanev1.AssignRequest{DeviceId: id})
					acancel()
					if err != nil {
						first.set(fmt.Errorf("assign %s: %w", id, err))
						return
					}
					eps := resp.GetDestination().GetEndpoints()
					if len(eps) == 0 {
						first.set(fmt.Errorf("assign %s: no endpoint", id))
						return
					}
					addr, tok, ticket = eps[0].GetAddress(), resp.GetDestination().GetToken(), resp.GetDestination().GetReservation()
				}
				cc, err := grpc.NewClient(addr,
					grpc.WithTransportCredentials(insecure.NewCredentials()),
					grpc.WithReadBufferSize(8<<10),
					grpc.WithWriteBufferSize(8<<10),
				)
				if err != nil {
					first.set(fmt.Errorf("bench: %w", err))
					return
				}
				mu.Lock()
				fl.conns = append(fl.conns, cc)
				mu.Unlock()
				hello := &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Hello{Hello: &executorv1.Hello{DeviceId: id, Token: tok, Reservation: ticket}}}
				if err := fl.connect(fctx, cc, hello); err != nil {
					first.set(fmt.Errorf("device %s: %w", id, err))
					return
				}
			}
		})
	}
	workers.Wait()
	if err := ctx.Err(); err != nil {
		fl.close()
		return nil, err
	}
	if err := first.get(); err != nil {
		fl.close()
		return nil, err
	}
	return fl, nil
}

// connect opens one stream, sends hello and waits for Welcome; then a
// goroutine acknowledges its Messages and answers its Pings until it ends.
func (fl *pushFleet) connect(ctx context.Context, cc *grpc.ClientConn, hello *executorv1.ConnectRequest) error {
	sctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(streamOpenTimeout, cancel)
	st, err := executorv1.NewExecutorServiceClient(cc).Connect(sctx)
	if err == nil {
		err = st.Send(hello)
	}
	var welcome *executorv1.ConnectResponse
	if err == nil {
		welcome, err = st.Recv()
	}
	if !timer.Stop() {
		err = fmt.Errorf("no Welcome within %v (%v)", streamOpenTimeout, err)
	}
	if err == nil && welcome.GetWelcome() == nil {
		err = fmt.Errorf("first frame is %T, want a Welcome", welcome.GetFrame())
	}
	if err != nil {
		cancel()
		return err
	}
	fl.open.Add(1)
	fl.wg.Go(func() {
		defer cancel()
		defer fl.open.Add(-1)
		// One frame of each kind, reused: Send encodes before it returns.
		ack := &executorv1.Ack{}
		ackFrame := &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Ack{Ack: ack}}
		pong := &executorv1.Pong{}
		pongFrame := &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Pong{Pong: pong}}
		in := &executorv1.ConnectResponse{}
		for {
			if err := st.RecvMsg(in); err != nil {
				if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
					fl.ended.Add(1)
				}
				return
			}
			switch f := in.GetFrame().(type) {
			case *executorv1.ConnectResponse_Message:
				ack.MessageId = f.Message.GetMessageId()
				if st.Send(ackFrame) != nil {
					continue // RecvMsg reports why
				}
				fl.acks.Add(1)
			case *executorv1.ConnectResponse_Ping:
				pong.Nonce = f.Ping.GetNonce()
				if st.Send(pongFrame) != nil {
					continue
				}
			case *executorv1.ConnectResponse_Goodbye, *executorv1.ConnectResponse_Redirect:
				fl.ended.Add(1)
				return
			}
		}
	})
	return nil
}

// close ends every stream and connection and waits for the goroutines.
func (fl *pushFleet) close() {
	fl.once.Do(func() {
		fl.cancel()
		for _, cc := range fl.conns {
			cc.Close()
		}
		fl.wg.Wait()
	})
}
