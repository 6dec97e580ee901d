package device

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/codec"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ErrNotConnected is returned by [Device.Publish] when the Device holds no
// welcomed stream.
var ErrNotConnected = errors.New("device: not connected")

// ErrClosed is returned by [Device.WaitForState] when the Device closed
// before reaching the awaited state.
var ErrClosed = errors.New("device: closed")

// keepaliveParams are the client keepalive settings of every connection the
// Device creates. Executors and the control plane enforce MinTime 15s.
var keepaliveParams = keepalive.ClientParameters{
	Time:                30 * time.Second,
	Timeout:             10 * time.Second,
	PermitWithoutStream: false,
}

// Device is a connected device: it keeps one stream to an executor of its
// assigned group open in the background. Create it with [Connect]; all its
// methods are safe for concurrent use.
type Device struct {
	cfg      Config
	log      *slog.Logger
	cp       controlplanev1.ControlPlaneServiceClient
	spec     *controlplanev1.DeviceSpec // cfg.Spec on the wire, made once
	ownConn  *grpc.ClientConn           // the control plane conn, when the Device dialled it
	dialOpts []grpc.DialOption
	msgs     chan *Message
	seen     *dedupe
	rnd      func() float64

	cancel   context.CancelCauseFunc
	done     chan struct{} // closed when the run loop has stopped and cleaned up
	closeErr error         // written before done is closed

	// Touched only by the run goroutine.
	previous *controlplanev1.PreviousAssignment
	hints    *controlplanev1.ReconnectHints
	// exhausted is set when every endpoint of the current destination
	// failed: the next attempt asks the control plane again.
	exhausted bool

	mu      sync.Mutex
	state   State
	visits  [numStates]uint64 // how often each state was entered
	changed chan struct{}     // closed and replaced on every transition
	cur     *stream           // the welcomed stream, nil unless Connected
	session SessionInfo

	stats struct {
		assigns, connects, redirects, failures, duplicates atomic.Uint64
	}
}

// Connect validates cfg, starts the Device's run loop in the background and
// returns at once; it does no network I/O itself. The Device runs until ctx is
// cancelled or [Device.Close] is called; call Close in either case to wait
// for it to stop.
func Connect(ctx context.Context, cfg Config) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("device: connect: %w", err)
	}
	cfg = cfg.withDefaults()
	cfg.Services = slices.Clone(cfg.Services)
	cfg.Spec = cfg.Spec.clone()

	d := &Device{
		cfg:     cfg,
		spec:    cfg.Spec.proto(),
		log:     cfg.Logger.With("device_id", cfg.DeviceID),
		msgs:    make(chan *Message, cfg.MessageBuffer),
		seen:    newDedupe(dedupeWindow),
		rnd:     rand.Float64,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	transport := insecure.NewCredentials()
	if cfg.TLS != nil {
		transport = credentials.NewTLS(cfg.TLS)
	}
	// The transport comes first: openStream replaces it per executor.
	d.dialOpts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		codec.DialOption(),
		grpc.WithKeepaliveParams(keepaliveParams),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           cfg.Backoff,
			MinConnectTimeout: max(cfg.HelloTimeout, cfg.AssignTimeout),
		}),
	}, cfg.DialOptions...)

	cc := cfg.ControlPlaneConn
	if cc == nil {
		conn, err := grpc.NewClient(cfg.ControlPlane, d.dialOpts...)
		if err != nil {
			return nil, fmt.Errorf("device: control plane %q: %w", cfg.ControlPlane, err)
		}
		d.ownConn = conn
		cc = conn
	}
	d.cp = controlplanev1.NewControlPlaneServiceClient(cc)

	runCtx, cancel := context.WithCancelCause(ctx)
	d.cancel = cancel
	go d.run(runCtx)
	return d, nil
}

// Close stops the Device: it ends the stream, waits for every goroutine the
// Device started and closes the connections it created (never
// Config.ControlPlaneConn). It then closes the Messages channel. Close is
// idempotent; every call returns the same error. It must not be called from
// Config.OnStateChange.
func (d *Device) Close() error {
	d.cancel(ErrClosed)
	<-d.done
	return d.closeErr
}

// State returns the Device's current state.
func (d *Device) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

// WaitForState blocks until the Device is in state want, or has entered it
// since WaitForState was called (so a short-lived state is not missed). It
// returns ctx's error when ctx is done first, and [ErrClosed] when the Device
// closed without reaching want.
func (d *Device) WaitForState(ctx context.Context, want State) error {
	d.mu.Lock()
	start := d.visits[want]
	for {
		if d.state == want || d.visits[want] != start {
			d.mu.Unlock()
			return nil
		}
		if d.state == Closed {
			d.mu.Unlock()
			return ErrClosed
		}
		changed := d.changed
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
		d.mu.Lock()
	}
}

// Session describes the stream the Device holds; it is the zero value when
// the Device is not Connected.
func (d *Device) Session() SessionInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.session
}

// Messages returns the channel of messages from services. Each message id is
// delivered once (redeliveries within the last 1024 ids are acked again and
// dropped; for a request, see Message.ExpectsReply, that means a duplicate
// is acked, not answered). Acknowledge each message with [Message.Ack], or
// answer a request with [Message.Reply] or [Message.ReplyError]. The Device
// never drops a message to make room: when the channel
// is full, it stops reading the stream until the application receives, so the
// application must keep draining the channel (a stalled reader eventually
// gets the stream closed by the executor for missed pings, and unacked
// messages are redelivered). The channel is closed once the Device has
// stopped.
func (d *Device) Messages() <-chan *Message {
	return d.msgs
}

// Publish sends data upstream on the current stream. It returns an error
// wrapping [ErrNotConnected] when the Device holds no stream, and one
// wrapping [ErrInvalidPublish], sending nothing, for a publish the executor
// would refuse: a payload over [MaxPublishPayload] bytes, a topic or content
// type over 128 bytes or with control characters. (An executor drops such
// a frame, and closes a stream that sends many.) Publish neither
// queues nor retries: a frame is sent at most once. ctx bounds the wait for
// the stream's send queue as for [Message.Ack]: when it ends first, Publish
// returns an error wrapping ctx's error, and the frame is withdrawn unless
// the stream was already writing it.
func (d *Device) Publish(ctx context.Context, topic string, payload []byte, contentType string) error {
	if err := checkPublish(topic, payload, contentType); err != nil {
		return err
	}
	d.mu.Lock()
	s := d.cur
	d.mu.Unlock()
	if s == nil {
		return ErrNotConnected
	}
	frame := &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Publish{
		Publish: &executorv1.Publish{Topic: topic, Payload: payload, ContentType: contentType},
	}}
	if err := s.send(ctx, frame); err != nil {
		if errors.Is(err, ErrStreamClosed) {
			return fmt.Errorf("device: publish: %w: %w", ErrNotConnected, err)
		}
		return fmt.Errorf("device: publish: %w", err)
	}
	return nil
}

// Stats returns the Device's counters.
func (d *Device) Stats() Stats {
	return Stats{
		Assigns:    d.stats.assigns.Load(),
		Connects:   d.stats.connects.Load(),
		Redirects:  d.stats.redirects.Load(),
		Failures:   d.stats.failures.Load(),
		Duplicates: d.stats.duplicates.Load(),
	}
}

// transition moves the Device to state to and reports it to OnStateChange.
// s is the new stream when to is Connected. where describes the group and
// executor the change is about. Only the run goroutine calls transition.
func (d *Device) transition(to State, s *stream, err error, where SessionInfo) {
	d.mu.Lock()
	from := d.state
	d.state = to
	d.visits[to]++
	if to == Connected {
		d.cur, d.session = s, s.info
		where = s.info
	} else {
		d.cur, d.session = nil, SessionInfo{}
	}
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()

	d.log.Debug("state", "from", from, "to", to, "group", where.GroupID,
		"executor", where.ExecutorID, "err", err)
	if d.cfg.OnStateChange != nil {
		d.cfg.OnStateChange(StateChange{
			From:       from,
			To:         to,
			Err:        err,
			GroupID:    where.GroupID,
			ExecutorID: where.ExecutorID,
			Address:    where.Address,
			At:         time.Now(),
		})
	}
}

// deliver hands m to the application once. A duplicate is acked again on s
// and dropped, even a request: the application answered (or will answer)
// the first delivery, and cannot answer twice. Delivery blocks until the
// application receives or s ends; an abandoned delivery forgets the id so
// that the redelivery gets through.
func (d *Device) deliver(ctx context.Context, s *stream, m *executorv1.Message) {
	id := m.GetMessageId()
	for id != "" {
		fresh, wait := d.seen.begin(id)
		if wait != nil {
			// Another stream is handing the same message over (the
			// device is moving): ack this copy only once that one is
			// taken, hand it over if that one is abandoned.
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return
			}
		}
		if fresh {
			break
		}
		d.stats.duplicates.Add(1)
		if err := s.send(ctx, ackFrame(id)); err != nil {
			d.log.Debug("ack of duplicate not sent", "message_id", id, "err", err)
		}
		return
	}
	msg := &Message{
		ID:           id,
		Payload:      m.GetPayload(),
		ContentType:  m.GetContentType(),
		SentAt:       timeOf(m.GetSentAt()),
		ExpectsReply: m.GetExpectsReply(),
		s:            s,
		span:         d.startMessageSpan(m),
	}
	select {
	case d.msgs <- msg:
		if id != "" {
			d.seen.end(id, true)
		}
	case <-ctx.Done():
		if id != "" {
			d.seen.end(id, false)
		}
		msg.endSpan(context.Cause(ctx))
	}
}

func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}
