package messaging

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/retry"
	"github.com/berthproject/berth/registry"
)

// Subscribe implements MessagingService.Subscribe. The subscriber gets the
// publishes that match its filters from the moment it is registered; when
// its buffer is full, publishes are dropped for it alone and counted in the
// next response's dropped field.
func (m *Server) Subscribe(req *messagingv1.SubscribeRequest, stream grpc.ServerStreamingServer[messagingv1.SubscribeResponse]) error {
	if err := validateSubscribe(req); err != nil {
		return invalidArgument(err)
	}
	sub := newSubscriber(req, m.cfg.SubscriberBuffer)
	m.hub.add(sub)
	defer m.hub.remove(sub)
	// Headers tell the client that it is subscribed.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return contextStatus(ctx.Err())
		case <-m.stopping:
			return stoppingStatus()
		case e := <-sub.ch:
			if err := stream.Send(e.response(sub.dropped.Swap(0))); err != nil {
				return err
			}
		}
	}
}

// event is one publish of one device, shared by the subscribers it matches.
type event struct {
	device, tenant, topic, contentType string
	payload                            []byte
	receivedAt                         *timestamppb.Timestamp
}

func (e *event) response(dropped int64) *messagingv1.SubscribeResponse {
	return &messagingv1.SubscribeResponse{
		DeviceId: e.device, TenantId: e.tenant, Topic: e.topic, Payload: e.payload,
		ContentType: e.contentType, ReceivedAt: e.receivedAt, Dropped: dropped,
	}
}

// subscriber is one Subscribe call: its filters and its bounded buffer.
type subscriber struct {
	devices, tenants, topics map[string]bool
	ch                       chan *event
	dropped                  atomic.Int64
}

func newSubscriber(req *messagingv1.SubscribeRequest, buffer int) *subscriber {
	set := func(vals []string) map[string]bool {
		if len(vals) == 0 {
			return nil
		}
		m := make(map[string]bool, len(vals))
		for _, v := range vals {
			m[v] = true
		}
		return m
	}
	return &subscriber{
		devices: set(req.GetDeviceIds()), tenants: set(req.GetTenantIds()), topics: set(req.GetTopics()),
		ch: make(chan *event, buffer),
	}
}

// matches reports whether e passes every filter (an empty filter passes
// everything; a tenant filter does not pass devices of unknown tenant).
func (s *subscriber) matches(e *event) bool {
	return (s.devices == nil || s.devices[e.device]) &&
		(s.tenants == nil || s.tenants[e.tenant]) &&
		(s.topics == nil || s.topics[e.topic])
}

// offer queues e without blocking, or counts it dropped.
func (s *subscriber) offer(e *event) {
	select {
	case s.ch <- e:
	default:
		s.dropped.Add(1)
	}
}

// hub follows the publishes of every live executor while at least one
// subscriber exists, and fans them in to the subscribers.
type hub struct {
	cache  Cache
	pool   ExecutorClients
	log    *slog.Logger
	resync time.Duration
	maxGap time.Duration

	mu   sync.RWMutex
	subs map[*subscriber]struct{}
	wake chan struct{}
}

func newHub(cache Cache, pool ExecutorClients, cfg Config, log *slog.Logger) *hub {
	return &hub{
		cache: cache, pool: pool, log: log, resync: cfg.ResyncInterval, maxGap: cfg.ResubscribeMaxDelay,
		subs: map[*subscriber]struct{}{}, wake: make(chan struct{}, 1),
	}
}

func (h *hub) add(s *subscriber) {
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	h.signal()
}

func (h *hub) remove(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
	h.signal()
}

func (h *hub) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *hub) subscribers() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.subs)
}

// publish hands one executor publish to every subscriber it matches. It
// never blocks.
func (h *hub) publish(ev *executorv1.SubscribeResponse) {
	if h.subscribers() == 0 {
		return
	}
	e := &event{
		device: ev.GetDeviceId(), topic: ev.GetPublish().GetTopic(), contentType: ev.GetPublish().GetContentType(),
		payload: ev.GetPublish().GetPayload(), receivedAt: ev.GetReceivedAt(),
	}
	if e.receivedAt == nil {
		e.receivedAt = timestamppb.Now()
	}
	if rec, ok := h.cache.Assignment(e.device); ok && rec.Inputs != nil {
		e.tenant = rec.Inputs.Tenant
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs {
		if s.matches(e) {
			s.offer(e)
		}
	}
}

// follower is the stream of one executor's publishes.
type follower struct {
	addr   string
	cancel context.CancelFunc
	done   chan struct{}
}

func (f *follower) stop() {
	f.cancel()
	<-f.done
}

// run keeps one follower per executor of the snapshot while subscribers
// exist, and none otherwise, until ctx is done.
func (h *hub) run(ctx context.Context) {
	fs := map[string]*follower{}
	defer func() {
		for _, f := range fs {
			f.stop()
		}
	}()
	t := time.NewTicker(h.resync)
	defer t.Stop()
	for {
		if h.subscribers() == 0 {
			for id, f := range fs {
				f.stop()
				delete(fs, id)
			}
		} else {
			execs := h.cache.Snapshot().Executors
			for id, f := range fs {
				if e, ok := execs[id]; !ok || e.ControlAddress() != f.addr {
					f.stop()
					delete(fs, id)
				}
			}
			for id, e := range execs {
				if _, ok := fs[id]; !ok && e.Address != "" {
					fs[id] = h.follow(ctx, e)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		case <-t.C:
		}
	}
}

// follow starts following e's publishes, reconnecting with a jittered
// backoff (from 100 ms up to ResubscribeMaxDelay) that starts again once a
// stream delivered something.
func (h *hub) follow(ctx context.Context, e registry.Executor) *follower {
	ctx, cancel := context.WithCancel(ctx)
	addr := e.ControlAddress()
	f := &follower{addr: addr, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		loop := retry.New(retry.Policy{Initial: 100 * time.Millisecond, Max: h.maxGap, Multiplier: 2}, h.log,
			"following an executor's publishes")
		for {
			got, err := h.followOnce(ctx, addr)
			if got {
				loop.Succeeded("executor", e.ID)
			}
			if !loop.Failed(ctx, nil, err, "executor", e.ID, "address", addr) {
				return
			}
		}
	}()
	return f
}

// followOnce runs one Subscribe stream to addr until it fails; got says
// whether it delivered anything.
func (h *hub) followOnce(ctx context.Context, addr string) (got bool, err error) {
	c, release, err := h.pool.Acquire(addr)
	if err != nil {
		return false, err
	}
	defer release()
	st, err := c.Subscribe(ctx, &executorv1.SubscribeRequest{})
	if err != nil {
		return false, err
	}
	for {
		ev, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "executor ended the stream")
			}
			return got, err
		}
		got = true
		h.publish(ev)
	}
}
