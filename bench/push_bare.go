package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// barePush is bench push's baseline: a plain grpc-go server (no
// interceptors, no registry, no tokens) that holds its clients' Connect
// streams by device id and pushes a message straight to one when asked
// (ExecutorInternalService.Deliver, without auth), waiting for its Ack. It
// is the floor of one push: a unary call in, a frame out on the stream, an
// Ack back.
type barePush struct {
	mu      sync.Mutex
	streams map[string]*bareStream
}

// bareStream is one client stream and the pushes waiting for its Acks.
type bareStream struct {
	st     executorv1.ExecutorService_ConnectServer
	done   chan struct{}
	sendMu sync.Mutex // one Send at a time
	wmu    sync.Mutex
	wait   map[string]chan struct{}
}

func newBarePush() *barePush { return &barePush{streams: map[string]*bareStream{}} }

// register serves both services of the baseline on gs.
func (b *barePush) register(gs *grpc.Server) {
	executorv1.RegisterExecutorServiceServer(gs, bareConnect{b: b})
	executorv1.RegisterExecutorInternalServiceServer(gs, bareDeliver{b: b})
}

// count returns the streams held.
func (b *barePush) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.streams)
}

type bareConnect struct {
	executorv1.UnimplementedExecutorServiceServer
	b *barePush
}

// Connect takes the Hello's device id, answers Welcome, and resolves pushes
// with the Acks it reads until the stream ends.
func (c bareConnect) Connect(st executorv1.ExecutorService_ConnectServer) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	id := first.GetHello().GetDeviceId()
	if id == "" {
		return status.Error(codes.InvalidArgument, "first frame must be a Hello with a device id")
	}
	bs := &bareStream{st: st, done: make(chan struct{}), wait: map[string]chan struct{}{}}
	defer close(bs.done)
	c.b.mu.Lock()
	c.b.streams[id] = bs
	c.b.mu.Unlock()
	defer func() {
		c.b.mu.Lock()
		if c.b.streams[id] == bs {
			delete(c.b.streams, id)
		}
		c.b.mu.Unlock()
	}()
	bs.sendMu.Lock()
	err = st.Send(&executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Welcome{Welcome: &executorv1.Welcome{SessionId: id}}})
	bs.sendMu.Unlock()
	if err != nil {
		return err
	}
	in := &executorv1.ConnectRequest{}
	for {
		if err := st.RecvMsg(in); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if a := in.GetAck(); a != nil {
			bs.wmu.Lock()
			if ch, ok := bs.wait[a.GetMessageId()]; ok {
				delete(bs.wait, a.GetMessageId())
				close(ch)
			}
			bs.wmu.Unlock()
		}
	}
}

type bareDeliver struct {
	executorv1.UnimplementedExecutorInternalServiceServer
	b *barePush
}

// Deliver sends the message on the device's stream and waits for its Ack.
func (d bareDeliver) Deliver(ctx context.Context, req *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
	id := req.GetMessage().GetMessageId()
	d.b.mu.Lock()
	bs := d.b.streams[req.GetDeviceId()]
	d.b.mu.Unlock()
	if bs == nil || id == "" {
		return nil, status.Error(codes.NotFound, "no such device stream")
	}
	ch := make(chan struct{})
	bs.wmu.Lock()
	bs.wait[id] = ch
	bs.wmu.Unlock()
	bs.sendMu.Lock()
	err := bs.st.Send(&executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Message{Message: req.GetMessage()}})
	bs.sendMu.Unlock()
	if err == nil {
		select {
		case <-ch:
			return &executorv1.DeliverResponse{}, nil
		case <-ctx.Done():
			err = status.FromContextError(ctx.Err()).Err()
		case <-bs.done:
			err = status.Error(codes.Unavailable, "stream ended before the ack")
		}
	}
	bs.wmu.Lock()
	delete(bs.wait, id)
	bs.wmu.Unlock()
	return nil, err
}

// cmdLean asks the bare server to push to its own streams for a while:
// "lean <workers> <warm-up ns> <measured ns> <devices> <payload bytes>".
const cmdLean = "lean"

// leanPushResult is the bare server's answer to cmdLean.
type leanPushResult struct {
	Ops        uint64 `json:"ops"`
	Errors     uint64 `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	ElapsedNS  int64  `json:"elapsed_ns"`
}

// leanCommand is cmdLean's line for these figures.
func leanCommand(workers int, warmup, measured time.Duration, devices, payload int) string {
	return fmt.Sprintf("%s %d %d %d %d %d", cmdLean, workers, int64(warmup), int64(measured), devices, payload)
}

// runLean pushes from inside the server, the floor (CasePushInside): workers
// goroutines deliver to the devices in turn back to back (each waiting for
// the device's Ack, as a Deliver call does), with no RPC in front and no
// latency kept, for the warm-up and the measured time of line (cmdLean).
func (b *barePush) runLean(ctx context.Context, line string) (any, error) {
	var workers, devices, payload int
	var warmup, measured int64
	if _, err := fmt.Sscanf(line, cmdLean+" %d %d %d %d %d", &workers, &warmup, &measured, &devices, &payload); err != nil || workers <= 0 || devices <= 0 || payload < 0 {
		return nil, fmt.Errorf("bench push child: bad %q line %q", cmdLean, line)
	}
	body := make([]byte, payload)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	targets := newPushTarget(devices)
	var ids atomic.Uint64
	d := bareDeliver{b: b}
	op := func(ctx context.Context, _ int) error {
		_, err := d.Deliver(ctx, &executorv1.DeliverRequest{
			DeviceId: targets.pick(),
			Message:  &executorv1.Message{MessageId: "l" + strconv.FormatUint(ids.Add(1), 36), Payload: body, ContentType: "application/octet-stream"},
		})
		return err
	}
	res, err := Load{Workers: workers, Warmup: time.Duration(warmup), Duration: time.Duration(measured), Op: op, Lean: true}.Run(ctx, CasePushInside)
	if err != nil {
		return nil, err
	}
	return leanPushResult{Ops: res.Ops, Errors: res.Errors, FirstError: res.FirstError, ElapsedNS: int64(res.Elapsed)}, nil
}
