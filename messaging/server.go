package messaging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/tracing"
	"github.com/berthproject/berth/registry"
)

// Server implements MessagingService on a control plane replica.
type Server struct {
	messagingv1.UnimplementedMessagingServiceServer

	cfg       Config
	store     Store
	cache     Cache
	pool      ExecutorClients
	hub       *hub
	routes    *routeCache // nil: every route is read from the registry
	inflight  *inflight   // deliveries in flight per device
	redeliver *redeliverer
	log       *slog.Logger
	now       func() time.Time
	retry     time.Duration

	stopOnce sync.Once
	stopping chan struct{}
}

// New validates cfg and wires a Server. It starts nothing and does no I/O.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil || deps.Cache == nil || deps.Executors == nil {
		return nil, errors.New("messaging: a store, a cache and executor clients are required")
	}
	log, now := deps.Log, deps.Now
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	m := &Server{
		cfg: cfg, store: deps.Store, cache: deps.Cache, pool: deps.Executors, log: log, now: now, retry: cfg.RetryAfter,
		stopping: make(chan struct{}),
		inflight: newInflight(cfg.InFlightBytesPerDevice, cfg.InFlightPerDevice),
	}
	m.hub = newHub(m.cache, m.pool, cfg, log)
	if cfg.PresenceCacheSize > 0 {
		m.routes = newRouteCache(cfg.PresenceCacheSize, cfg.PresenceCacheTTL, now)
	}
	m.redeliver = newRedeliverer(m, log)
	return m, nil
}

// Register registers MessagingService on s.
func (m *Server) Register(s grpc.ServiceRegistrar) {
	messagingv1.RegisterMessagingServiceServer(s, m)
}

// Run keeps the background work of messaging going until ctx is done: the
// subscriptions to executors, the sweeper of expired messages and the
// redelivery of queues to connected devices. When ctx ends, the open
// Subscribe calls end too (so that a graceful stop of the gRPC server does
// not wait for them); Run returns nil once its goroutines are done.
func (m *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { m.hub.run(ctx) })
	wg.Go(func() { m.sweep(ctx) })
	wg.Go(func() { m.redeliver.run(ctx) })
	<-ctx.Done()
	m.stopOnce.Do(func() { close(m.stopping) })
	wg.Wait()
	return nil
}

// Close ends the Subscribe calls still open; call it after the gRPC server
// stopped. It is idempotent. The connections to executors belong to the
// caller.
func (m *Server) Close() {
	m.stopOnce.Do(func() { close(m.stopping) })
}

// sweep removes expired queued messages every SweepInterval. Several
// replicas sweeping at once is harmless: deletes of gone keys do nothing.
func (m *Server) sweep(ctx context.Context) {
	t := time.NewTicker(m.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n, err := m.store.SweepExpired(sctx, m.now())
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			m.log.Warn("sweeping expired messages", "removed", n, "err", err)
		case n > 0:
			m.log.Info("expired queued messages removed", "removed", n)
		}
	}
}

// Send implements MessagingService.Send.
func (m *Server) Send(ctx context.Context, req *messagingv1.SendRequest) (*messagingv1.SendResponse, error) {
	ttl, err := validateSend(req, m.cfg)
	if err != nil {
		return nil, invalidArgument(err)
	}
	if req.GetMode() == messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE {
		return m.sendQueued(ctx, req, ttl)
	}
	return m.sendOnline(ctx, req, ttl)
}

// sendOnline delivers now or fails. A device found offline before any
// attempt leaves the idempotency key unused, so the same Send may be
// retried later with the same key. A retry of a Send whose message the
// device acknowledged answers DELIVERED without sending; any other retry
// delivers the first Send's message again, under its id.
func (m *Server) sendOnline(ctx context.Context, req *messagingv1.SendRequest, ttl time.Duration) (*messagingv1.SendResponse, error) {
	dev := req.GetDeviceId()
	p, online, cached, err := m.route(ctx, dev, true)
	if err != nil {
		return nil, m.registryStatus(ctx, err, fmt.Sprintf("cannot look up device %s", dev))
	}
	if !online {
		return nil, offlineStatus(dev)
	}
	// Counted before anything is written or sent: a device with its bound
	// in flight is refused at once.
	h, busy := m.inflight.acquire(dev, len(req.GetPayload()))
	if busy != nil {
		return nil, m.busyStatus(ctx, busy)
	}
	defer h.release()
	now := m.now()
	id := registry.NewMessageID()
	key := req.GetIdempotencyKey()
	var rec registry.IdempotencyRecord
	if key != "" {
		var fresh bool
		rec, fresh, err = m.store.RememberIdempotency(ctx, dev, key, registry.IdempotencyRecord{MessageID: id, ExpiresAt: now.Add(ttl).UTC()})
		if err != nil {
			return nil, m.registryStatus(ctx, err, "the idempotency key could not be recorded; nothing was sent")
		}
		if !fresh && rec.Delivered {
			return &messagingv1.SendResponse{MessageId: rec.MessageID, Status: messagingv1.SendStatus_SEND_STATUS_DELIVERED,
				Detail: fmt.Sprintf("duplicate: idempotency key %s was used before for this device and the device acknowledged that message; nothing was sent again", key)}, nil
		}
		// A Send with this key that is not known to be acknowledged (it
		// failed, or its replica died mid-way, or it is still under way)
		// is delivered again under the same message id: the device drops
		// a copy it already took, and acks it.
		id = rec.MessageID
	}
	msg := &executorv1.Message{MessageId: id, Payload: req.GetPayload(), ContentType: req.GetContentType(), SentAt: timestamppb.New(now)}
	_, p, online, err = m.deliverAt(ctx, p, cached, msg, m.cfg.SendTimeout)
	h.release()
	switch {
	case !online:
		return nil, offlineStatus(dev)
	case err != nil:
		return nil, m.deliverStatus(err, p, id, false)
	}
	if key != "" {
		// Should this write fail, a retry delivers once more and the
		// device drops the copy: the mark only spares that delivery.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := m.store.MarkDelivered(mctx, dev, key, rec); err != nil {
			m.log.Warn("recording an acknowledged Send's idempotency key; a retry delivers it again", "device", dev, "message", id, "err", err)
		}
	}
	return &messagingv1.SendResponse{MessageId: id, Status: messagingv1.SendStatus_SEND_STATUS_DELIVERED}, nil
}

// sendQueued stores first, then tries to deliver at once.
func (m *Server) sendQueued(ctx context.Context, req *messagingv1.SendRequest, ttl time.Duration) (*messagingv1.SendResponse, error) {
	dev := req.GetDeviceId()
	if !req.GetAllowUnassigned() {
		if err := m.checkAssigned(ctx, dev); err != nil {
			return nil, err
		}
	}
	now := m.now()
	// The Send's span (when traces are on) is stored with the message, so
	// that its delivery, now or at a later connect, continues its trace.
	traceParent, traceState := tracing.Parent(ctx)
	stored, dup, err := m.store.Enqueue(ctx, registry.QueuedMessage{
		ID: registry.NewMessageID(), DeviceID: dev, Payload: req.GetPayload(), ContentType: req.GetContentType(),
		EnqueuedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC(), IdempotencyKey: req.GetIdempotencyKey(),
		TraceParent: traceParent, TraceState: traceState,
	}, registry.QueueLimits{
		PerDevice: m.cfg.QueuePerDevice, PerDeviceBytes: m.cfg.QueueBytesPerDevice,
		Total: m.cfg.QueueTotal, TotalBytes: m.cfg.QueueTotalBytes,
	})
	switch {
	case errors.Is(err, registry.ErrQueueFull):
		return nil, queueFullStatus(err, m.retry)
	case errors.Is(err, registry.ErrInvalid):
		return nil, invalidArgument(err)
	case err != nil:
		return nil, m.registryStatus(ctx, err, "the message could not be queued; nothing was stored")
	case dup:
		return &messagingv1.SendResponse{MessageId: stored.ID, Status: messagingv1.SendStatus_SEND_STATUS_QUEUED, Detail: duplicateDetail(req.GetIdempotencyKey())}, nil
	}
	queued := func(why string) *messagingv1.SendResponse {
		return &messagingv1.SendResponse{
			MessageId: stored.ID, Status: messagingv1.SendStatus_SEND_STATUS_QUEUED,
			Detail: fmt.Sprintf("%s; the message waits in the queue until %s and is delivered when the device connects",
				why, stored.ExpiresAt.UTC().Format(time.RFC3339)),
		}
	}
	// Where the device is must be read after the message was stored: a
	// device that connects later finds the message in its queue, one that
	// was connected before is delivered to now. The cache may answer; when
	// its answer is stale the record is read again (deliverAt).
	p, online, cached, err := m.route(ctx, dev, true)
	if err != nil {
		m.log.Warn("reading presence after enqueue", "device", dev, "err", err)
		m.redeliver.schedule(dev)
		return queued("the device's presence could not be read"), nil
	}
	if !online {
		return queued(fmt.Sprintf("device %s is not connected", dev)), nil
	}
	// The message is stored, not in flight; the attempt to deliver it now
	// is, and a device at its bound gets it from the redelivery, which
	// keeps to the bound too.
	h, busy := m.inflight.acquire(dev, len(stored.Payload))
	if busy != nil {
		m.redeliver.schedule(dev)
		return queued("delivery not attempted now: " + busyMessage(busy) + "; it is tried again while the device stays connected"), nil
	}
	defer h.release()
	actx, cancel := attemptContext(ctx, m.cfg.QueueAttemptTimeout)
	defer cancel()
	msg := &executorv1.Message{MessageId: stored.ID, Payload: stored.Payload, ContentType: stored.ContentType, SentAt: timestamppb.New(now)}
	_, p, online, err = m.deliverAt(actx, p, cached, msg, m.cfg.QueueAttemptTimeout)
	h.release()
	if !online {
		return queued(fmt.Sprintf("device %s is not connected", dev)), nil
	}
	if err != nil {
		// The device may still be connected: deliver its queue again
		// later rather than at its next connect.
		m.redeliver.schedule(dev)
		if ctx.Err() != nil {
			return nil, contextStatus(ctx.Err())
		}
		return queued("delivery attempt failed: " + statusMessage(m.deliverStatus(err, p, stored.ID, false)) + "; it is tried again while the device stays connected"), nil
	}
	// The device acknowledged: remove the message even if the caller went
	// away meanwhile. Should that fail, it stays queued and is delivered
	// again on the device's next connect; the device drops it by its id.
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer dcancel()
	if err := m.store.Dequeue(dctx, dev, stored.Seq); err != nil {
		m.log.Warn("dequeueing an acknowledged message; it stays queued and may be delivered again", "device", dev, "message", stored.ID, "seq", stored.Seq, "err", err)
	}
	return &messagingv1.SendResponse{MessageId: stored.ID, Status: messagingv1.SendStatus_SEND_STATUS_DELIVERED}, nil
}

// checkAssigned refuses a device that was never assigned: no assignment
// record in the cache and not connected (presence is read only for a
// device the cache does not know, such as one assigned a moment ago on
// another replica whose record the watch has not brought yet).
func (m *Server) checkAssigned(ctx context.Context, dev string) error {
	if _, ok := m.cache.Assignment(dev); ok {
		return nil
	}
	_, online, _, err := m.route(ctx, dev, true)
	switch {
	case err != nil:
		return m.registryStatus(ctx, err, fmt.Sprintf("cannot look up device %s", dev))
	case !online:
		return unassignedStatus(dev)
	}
	return nil
}

// Call implements MessagingService.Call.
func (m *Server) Call(ctx context.Context, req *messagingv1.CallRequest) (*messagingv1.CallResponse, error) {
	if err := validateMessage(req.GetDeviceId(), req.GetPayload(), req.GetContentType()); err != nil {
		return nil, invalidArgument(err)
	}
	dev := req.GetDeviceId()
	p, online, cached, err := m.route(ctx, dev, true)
	if err != nil {
		return nil, m.registryStatus(ctx, err, fmt.Sprintf("cannot look up device %s", dev))
	}
	if !online {
		return nil, offlineStatus(dev)
	}
	h, busy := m.inflight.acquire(dev, len(req.GetPayload()))
	if busy != nil {
		return nil, m.busyStatus(ctx, busy)
	}
	defer h.release()
	id := registry.NewMessageID()
	msg := &executorv1.Message{MessageId: id, Payload: req.GetPayload(), ContentType: req.GetContentType(), SentAt: timestamppb.New(m.now()), ExpectsReply: true}
	resp, p, online, err := m.deliverAt(ctx, p, cached, msg, m.cfg.CallTimeout)
	switch {
	case !online:
		return nil, offlineStatus(dev)
	case err != nil:
		return nil, m.deliverStatus(err, p, id, true)
	}
	r := resp.GetReply()
	if r == nil {
		m.log.Error("executor answered a call without a reply", "executor", p.ExecutorID, "device", dev)
		return nil, noReplyStatus(dev, p.ExecutorID)
	}
	if r.GetError() != "" {
		return nil, replyErrorStatus(dev, r.GetError())
	}
	return &messagingv1.CallResponse{MessageId: id, Payload: r.GetPayload(), ContentType: r.GetContentType()}, nil
}

// GetDevice implements MessagingService.GetDevice.
func (m *Server) GetDevice(ctx context.Context, req *messagingv1.GetDeviceRequest) (*messagingv1.GetDeviceResponse, error) {
	dev := req.GetDeviceId()
	if err := validateDeviceID(dev); err != nil {
		return nil, invalidArgument(err)
	}
	p, online, _, err := m.route(ctx, dev, false)
	if err != nil {
		return nil, m.registryStatus(ctx, err, fmt.Sprintf("cannot look up device %s", dev))
	}
	n, err := m.store.QueueLen(ctx, dev)
	if err != nil {
		return nil, m.registryStatus(ctx, err, fmt.Sprintf("cannot count the queue of device %s", dev))
	}
	rec, assigned := m.cache.Assignment(dev)
	if !online && !assigned && n == 0 {
		return nil, unknownDeviceStatus(dev)
	}
	out := &messagingv1.GetDeviceResponse{DeviceId: dev, Online: online, QueuedMessages: n}
	if online {
		out.GroupId, out.ExecutorId = p.GroupID, p.ExecutorID
		if !p.Since.IsZero() {
			out.ConnectedSince = timestamppb.New(p.Since)
		}
	}
	if assigned {
		out.AssignedGroupId, out.AssignedLabel = rec.GroupID, rec.Label
	}
	return out, nil
}

// presence reads where dev is connected; online is false when it is not.
func (m *Server) presence(ctx context.Context, dev string) (p registry.Presence, online bool, err error) {
	p, err = m.store.Presence(ctx, dev)
	switch {
	case err == nil:
		return p, p.Address != "", nil
	case errors.Is(err, registry.ErrNotFound):
		return p, false, nil
	default:
		return p, false, err
	}
}

// deliver hands msg to the executor named by p: one Deliver on the pooled
// connection to its control address (p.ControlAddress), within the caller's deadline (def when it has none).
func (m *Server) deliver(ctx context.Context, p registry.Presence, msg *executorv1.Message, def time.Duration) (*executorv1.DeliverResponse, error) {
	ctx, cancel := deliveryContext(ctx, def)
	defer cancel()
	c, release, err := m.pool.Acquire(p.ControlAddress())
	if err != nil {
		return nil, err
	}
	defer release()
	return c.Deliver(ctx, &executorv1.DeliverRequest{DeviceId: p.DeviceID, Message: msg})
}

// deliveryContext bounds a delivery: by the caller's deadline less a small
// margin, so that the caller hears why rather than its own timeout, or by
// def when the caller set none.
func deliveryContext(ctx context.Context, def time.Duration) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithTimeout(ctx, def)
	}
	margin := min(time.Until(dl)/10, 250*time.Millisecond)
	return context.WithDeadline(ctx, dl.Add(-max(margin, 0)))
}

// attemptContext bounds the immediate delivery of a queued message: at
// most limit, and leaving a quarter of the caller's time to answer QUEUED.
func attemptContext(ctx context.Context, limit time.Duration) (context.Context, context.CancelFunc) {
	d := limit
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)*3/4)
	}
	return context.WithTimeout(ctx, d)
}

func duplicateDetail(key string) string {
	return fmt.Sprintf("duplicate: idempotency key %s was used before for this device; this is the first Send's message id, nothing was sent again (the first Send's outcome is not replayed)", key)
}

// validateDeviceID checks a device id at the edge.
func validateDeviceID(id string) error { return registry.CheckID("device_id", id) }

// validateMessage checks what Send and Call share.
func validateMessage(device string, payload []byte, contentType string) error {
	if err := validateDeviceID(device); err != nil {
		return err
	}
	if len(payload) > maxPayload {
		return fmt.Errorf("payload is %d bytes; at most %d", len(payload), maxPayload)
	}
	if len(contentType) > maxContentType {
		return fmt.Errorf("content_type is %d bytes; at most %d", len(contentType), maxContentType)
	}
	return nil
}

// validateSend checks a SendRequest and returns its TTL.
func validateSend(r *messagingv1.SendRequest, cfg Config) (time.Duration, error) {
	if err := validateMessage(r.GetDeviceId(), r.GetPayload(), r.GetContentType()); err != nil {
		return 0, err
	}
	if k := r.GetIdempotencyKey(); k != "" && !registry.ValidID(k) {
		return 0, fmt.Errorf("idempotency_key %q: want 1-128 of [A-Za-z0-9._:@-]", k)
	}
	switch r.GetMode() {
	case messagingv1.DeliveryMode_DELIVERY_MODE_UNSPECIFIED, messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY, messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE:
	default:
		return 0, fmt.Errorf("mode %d: want ONLINE_ONLY or QUEUE", r.GetMode())
	}
	ttl := cfg.DefaultTTL
	if t := r.GetTtl(); t != nil {
		if err := t.CheckValid(); err != nil {
			return 0, fmt.Errorf("ttl: %v", err)
		}
		d := t.AsDuration()
		switch {
		case d < 0:
			return 0, fmt.Errorf("ttl %v: want > 0", d)
		case d > cfg.MaxTTL:
			return 0, fmt.Errorf("ttl %v: at most %v", d, cfg.MaxTTL)
		case d > 0:
			ttl = d
		}
	}
	return ttl, nil
}

// validateSubscribe checks a SubscribeRequest's filters.
func validateSubscribe(r *messagingv1.SubscribeRequest) error {
	for _, f := range []struct {
		name string
		vals []string
	}{{"device_ids", r.GetDeviceIds()}, {"tenant_ids", r.GetTenantIds()}, {"topics", r.GetTopics()}} {
		if len(f.vals) > maxFilterEntries {
			return fmt.Errorf("%s has %d entries; at most %d", f.name, len(f.vals), maxFilterEntries)
		}
		for i, v := range f.vals {
			if v == "" || len(v) > maxFilterValueLen {
				return fmt.Errorf("%s[%d] is %d bytes: want 1 to %d", f.name, i, len(v), maxFilterValueLen)
			}
		}
	}
	for i, d := range r.GetDeviceIds() {
		if !registry.ValidID(d) {
			return fmt.Errorf("device_ids[%d] %q: want 1-128 of [A-Za-z0-9._:@-]", i, d)
		}
	}
	return nil
}
