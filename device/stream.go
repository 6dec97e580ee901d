package device

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ErrStreamClosed is returned when a frame cannot be sent because the stream
// it belongs to has ended.
var ErrStreamClosed = errors.New("device: stream closed")

// ErrHelloTimeout reports that an executor did not welcome a stream within
// Config.HelloTimeout. It reaches the application as StateChange.Err.
var ErrHelloTimeout = errors.New("device: no Welcome within HelloTimeout")

// ErrSilentStream reports that no frame arrived on a stream for three of the
// executor's heartbeat intervals, so the Device gave it up. It reaches the
// application as StateChange.Err.
var ErrSilentStream = errors.New("device: stream silent for 3 heartbeat intervals")

var (
	errClosing   = errors.New("device: stream closed by the device")
	errStreamEOF = errors.New("device: executor ended the stream")
)

// watchdogIntervals is how many heartbeat intervals of silence end a stream.
const watchdogIntervals = 3

// sendQueue is the capacity of a stream's send queue.
const sendQueue = 16

// stream is one welcomed Connect stream and the two goroutines that serve it:
// recvLoop reads every frame (answering pings and delivering messages
// itself), sendLoop is the only goroutine that calls Send.
type stream struct {
	d    *Device
	conn *grpc.ClientConn
	cs   grpc.BidiStreamingClient[executorv1.ConnectRequest, executorv1.ConnectResponse]
	info SessionInfo

	cancel context.CancelCauseFunc
	done   <-chan struct{} // the stream context's Done
	sendq  chan *sendReq
	// redirects holds at most one pending Redirect for the run loop.
	redirects chan *executorv1.Redirect
	// ended is closed when recvLoop returns; err then says why.
	ended chan struct{}
	err   error

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// sendReq is one frame for the send loop. Its state settles once: the send
// loop takes it to send it, or the sender withdraws it (its context ended
// while it was queued).
type sendReq struct {
	frame *executorv1.ConnectRequest
	res   chan error // buffered: the send loop never blocks on it
	state atomic.Int32
}

const (
	reqQueued int32 = iota
	reqTaken
	reqWithdrawn
)

// take claims r for sending; false means its sender withdrew it.
func (r *sendReq) take() bool { return r.state.CompareAndSwap(reqQueued, reqTaken) }

// withdraw cancels r unless the send loop took it already.
func (r *sendReq) withdraw() bool { return r.state.CompareAndSwap(reqQueued, reqWithdrawn) }

// openStream dials ep, sends Hello with dest's token and waits for Welcome,
// all within HelloTimeout. On success the stream's goroutines are running
// and the caller must close it.
func (d *Device) openStream(ctx context.Context, dest *controlplanev1.Destination, ep *controlplanev1.Endpoint) (*stream, error) {
	addr := ep.GetAddress()
	opts := d.dialOpts
	if name := ep.GetTlsServerName(); d.cfg.TLS != nil && name != "" {
		tc := d.cfg.TLS.Clone()
		tc.ServerName = name
		// In place of the SDK's transport, d.dialOpts[0] (see New); the
		// caller's DialOptions still override it.
		opts = append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}, d.dialOpts[1:]...)
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("device: executor %s: %w", addr, err)
	}
	// The stream outlives ctx so that closing it can be clean (see close):
	// ctx ends it only until it is welcomed.
	sctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	fail := func(err error) (*stream, error) {
		stop()
		cancel(err)
		_ = conn.Close()
		return nil, fmt.Errorf("device: executor %s: %w", addr, err)
	}
	timer := time.AfterFunc(d.cfg.HelloTimeout, func() { cancel(ErrHelloTimeout) })

	cs, err := executorv1.NewExecutorServiceClient(conn).Connect(sctx)
	if err != nil {
		timer.Stop()
		return fail(causeOf(sctx, err))
	}
	hello := &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Hello{
		Hello: &executorv1.Hello{Token: dest.GetToken(), DeviceId: d.cfg.DeviceID, Reservation: dest.GetReservation()},
	}}
	// io.EOF from Send means the stream is over; Recv tells why.
	if err := cs.Send(hello); err != nil && !errors.Is(err, io.EOF) {
		timer.Stop()
		return fail(causeOf(sctx, err))
	}
	resp, err := cs.Recv()
	if !timer.Stop() {
		return fail(ErrHelloTimeout)
	}
	if err != nil {
		return fail(causeOf(sctx, err))
	}
	w := resp.GetWelcome()
	if w == nil {
		return fail(fmt.Errorf("first frame is %T, not a Welcome", resp.GetFrame()))
	}
	if !stop() {
		return fail(context.Cause(ctx))
	}

	s := &stream{
		d:    d,
		conn: conn,
		cs:   cs,
		info: SessionInfo{
			GroupID:           firstNonEmpty(w.GetGroupId(), dest.GetGroupId()),
			Label:             dest.GetLabel(),
			ExecutorID:        firstNonEmpty(w.GetExecutorId(), ep.GetExecutorId()),
			Address:           addr,
			SessionID:         w.GetSessionId(),
			HeartbeatInterval: max(w.GetHeartbeatInterval().AsDuration(), 0),
			ConnectedSince:    time.Now(),
		},
		cancel:    cancel,
		done:      sctx.Done(),
		sendq:     make(chan *sendReq, sendQueue),
		redirects: make(chan *executorv1.Redirect, 1),
		ended:     make(chan struct{}),
	}
	s.wg.Add(2)
	go s.recvLoop(sctx)
	go s.sendLoop(sctx)
	return s, nil
}

// causeOf returns why sctx was cancelled when the SDK cancelled it (hello
// timeout, watchdog, close), and err otherwise.
func causeOf(sctx context.Context, err error) error {
	if cause := context.Cause(sctx); cause != nil {
		return cause
	}
	if errors.Is(err, io.EOF) {
		return errStreamEOF
	}
	return err
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// recvLoop reads frames until the stream ends. A watchdog cancels the stream
// when no frame arrives for watchdogIntervals heartbeat intervals; it runs
// only while recvLoop waits in Recv, so a slow application (blocking message
// delivery) does not count as silence.
func (s *stream) recvLoop(ctx context.Context) {
	defer s.wg.Done()
	defer close(s.ended)

	var watchdog *time.Timer
	silence := watchdogIntervals * s.info.HeartbeatInterval
	if silence > 0 {
		watchdog = time.AfterFunc(silence, func() { s.cancel(ErrSilentStream) })
		defer watchdog.Stop()
	}
	for {
		if watchdog != nil {
			watchdog.Reset(silence)
		}
		resp, err := s.cs.Recv()
		if watchdog != nil {
			watchdog.Stop()
		}
		if err != nil {
			s.err = causeOf(ctx, err)
			s.cancel(s.err)
			return
		}
		switch f := resp.GetFrame().(type) {
		case *executorv1.ConnectResponse_Ping:
			pong := &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Pong{
				Pong: &executorv1.Pong{Nonce: f.Ping.GetNonce()},
			}}
			if err := s.send(ctx, pong); err != nil {
				s.d.log.Debug("pong not sent", "err", err)
			}
		case *executorv1.ConnectResponse_Message:
			s.d.deliver(ctx, s, f.Message)
		case *executorv1.ConnectResponse_Redirect:
			s.d.stats.redirects.Add(1)
			select {
			case s.redirects <- f.Redirect:
			default: // one is already pending; the device is leaving anyway
			}
		case *executorv1.ConnectResponse_Goodbye:
			s.err = goodbyeError(f.Goodbye)
			s.cancel(s.err)
			return
		default:
			// A second Welcome or a frame this SDK does not know: ignore,
			// so that new frames are an additive change.
		}
	}
}

// sendLoop is the only goroutine that calls Send on the stream.
func (s *stream) sendLoop(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-s.sendq:
			if !r.take() {
				continue
			}
			if r.frame == nil {
				r.res <- s.cs.CloseSend()
				continue
			}
			r.res <- s.cs.Send(r.frame)
		}
	}
}

// send queues frame (nil: half-close the stream) and waits until it is
// handed to the transport, the stream ends or ctx is done. When ctx ends
// first it returns ctx's error: a frame still in the queue is withdrawn and
// never sent, one the send loop has taken may still be sent. A ctx already
// done sends nothing.
func (s *stream) send(ctx context.Context, frame *executorv1.ConnectRequest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &sendReq{frame: frame, res: make(chan error, 1)}
	select {
	case s.sendq <- r:
	case <-s.done:
		return ErrStreamClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.res:
		return sendErr(err)
	case <-s.done:
		select {
		case err := <-r.res:
			return sendErr(err)
		default:
			return ErrStreamClosed
		}
	case <-ctx.Done():
		if !r.withdraw() {
			// The send loop took it: report its result if it is in.
			select {
			case err := <-r.res:
				return sendErr(err)
			default:
			}
		}
		return ctx.Err()
	}
}

func sendErr(err error) error {
	if errors.Is(err, io.EOF) {
		return ErrStreamClosed
	}
	return err
}

// close ends the stream cleanly when it is still open (see halfClose), then
// cancels it, joins its goroutines and closes its connection. It is
// idempotent.
func (s *stream) close() {
	s.closeOnce.Do(func() {
		s.halfClose()
		s.cancel(errClosing)
		s.wg.Wait()
		_ = s.conn.Close()
	})
}

// halfClose ends the device's side of an open stream after the frames queued
// before it, so that every Publish, Ack and Reply the device sent reaches
// the executor, and waits at most CloseTimeout for the executor to end the
// stream. Cancelling straight away would let the transport drop frames
// still in flight.
func (s *stream) halfClose() {
	select {
	case <-s.done:
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.d.cfg.CloseTimeout)
	defer cancel()
	if err := s.send(ctx, nil); err != nil {
		return
	}
	select {
	case <-s.ended:
	case <-ctx.Done():
	}
}
