package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthproject/berth/execclient"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/registry"
)

// MessageStore is the registry side of messaging: presence records and the
// durable per-device queues. *registry.Registry implements it.
type MessageStore interface {
	// Presence reads where a device is connected; registry.ErrNotFound when
	// it is not.
	Presence(ctx context.Context, deviceID string) (registry.Presence, error)
	// Enqueue stores a message at the end of its device's queue, within
	// limits (registry.ErrQueueFull beyond them); dup is set when the
	// idempotency key was used before.
	Enqueue(ctx context.Context, m registry.QueuedMessage, limits registry.QueueLimits) (stored registry.QueuedMessage, dup bool, err error)
	// RememberIdempotency records a key for a message that is not queued;
	// false and the first record when the key was used before.
	RememberIdempotency(ctx context.Context, device, key string, rec registry.IdempotencyRecord) (registry.IdempotencyRecord, bool, error)
	// MarkDelivered records that the message of a key was acknowledged.
	MarkDelivered(ctx context.Context, device, key string, rec registry.IdempotencyRecord) error
	// QueueLen counts a device's waiting messages.
	QueueLen(ctx context.Context, device string) (int64, error)
	// Queue returns a device's waiting messages in order, at most limit.
	Queue(ctx context.Context, device string, limit int64) ([]registry.QueuedMessage, error)
	// Dequeue removes an acknowledged message.
	Dequeue(ctx context.Context, device string, seq int64) error
	// SweepExpired removes expired messages and idempotency records.
	SweepExpired(ctx context.Context, now time.Time) (int, error)
}

// ServiceSigner mints the service tokens a control plane presents to
// executors. *token.Signer implements it.
type ServiceSigner interface {
	SignService(subject string, ttl time.Duration) (string, time.Time, error)
}

var _ MessageStore = (*registry.Registry)(nil)

// MessagingConfig tunes MessagingService.
type MessagingConfig struct {
	// QueuePerDevice bounds the messages waiting for one device.
	QueuePerDevice int64
	// QueueTotal bounds the messages waiting for all devices.
	QueueTotal int64
	// DefaultTTL is how long a queued message waits when Send names no TTL;
	// MaxTTL is the longest TTL accepted.
	DefaultTTL, MaxTTL time.Duration
	// SendTimeout bounds an ONLINE_ONLY delivery when the caller set no
	// deadline; CallTimeout does the same for Call.
	SendTimeout, CallTimeout time.Duration
	// QueueAttemptTimeout bounds the immediate delivery attempt of a QUEUE
	// Send to a connected device; when it fails the message stays queued.
	QueueAttemptTimeout time.Duration
	// ServiceTokenTTL is the life of the service token presented to
	// executors; it is minted again at half its life.
	ServiceTokenTTL time.Duration
	// SubscriberBuffer bounds the publishes waiting for one subscriber;
	// beyond it they are dropped for that subscriber and counted.
	SubscriberBuffer int
	// SweepInterval is how often expired queued messages are removed.
	SweepInterval time.Duration
	// IdleConnTimeout closes the connection to an executor that left the
	// registry once it has been unused that long.
	IdleConnTimeout time.Duration
	// ResubscribeMaxDelay caps the backoff between attempts to follow an
	// executor's publishes.
	ResubscribeMaxDelay time.Duration
	// ResyncInterval is how often the executors followed for subscribers
	// are compared with the registry snapshot.
	ResyncInterval time.Duration
	// PresenceCacheSize bounds the devices whose presence a replica
	// remembers; PresenceCacheTTL is how long it trusts what it read (a
	// failed delivery drops the entry at once).
	PresenceCacheSize int
	PresenceCacheTTL  time.Duration
	// RedeliverMinDelay and RedeliverMaxDelay bound the wait before each
	// round of redelivery of a connected device's queue after a failed
	// attempt; RedeliverAttempts is how many failed rounds end it,
	// RedeliverPending how many devices may wait for one, and
	// RedeliverWorkers how many rounds run at once.
	RedeliverMinDelay, RedeliverMaxDelay time.Duration
	RedeliverAttempts, RedeliverPending  int
	RedeliverWorkers                     int
}

// Bounds of MessagingService input.
const (
	maxPayload        = 256 << 10
	maxContentType    = 128
	maxFilterEntries  = 1000
	maxFilterValueLen = 128
	maxReplyErrorLen  = 1024
)

// DefaultMessagingConfig returns the settings of `berth controlplane`.
func DefaultMessagingConfig() MessagingConfig {
	return MessagingConfig{
		QueuePerDevice:      1000,
		QueueTotal:          1_000_000,
		DefaultTTL:          time.Hour,
		MaxTTL:              7 * 24 * time.Hour,
		SendTimeout:         10 * time.Second,
		CallTimeout:         30 * time.Second,
		QueueAttemptTimeout: 5 * time.Second,
		ServiceTokenTTL:     10 * time.Minute,
		SubscriberBuffer:    1024,
		SweepInterval:       time.Minute,
		IdleConnTimeout:     time.Minute,
		ResubscribeMaxDelay: 10 * time.Second,
		ResyncInterval:      time.Second,
		PresenceCacheSize:   1 << 20,
		PresenceCacheTTL:    10 * time.Second,
		RedeliverMinDelay:   500 * time.Millisecond,
		RedeliverMaxDelay:   30 * time.Second,
		RedeliverAttempts:   10,
		RedeliverPending:    100_000,
		RedeliverWorkers:    32,
	}
}

// Validate checks c.
func (c MessagingConfig) Validate() error {
	var errs []error
	if c.QueuePerDevice <= 0 || c.QueueTotal <= 0 {
		errs = append(errs, fmt.Errorf("queue limits %d per device, %d total: want > 0", c.QueuePerDevice, c.QueueTotal))
	}
	if c.DefaultTTL <= 0 || c.MaxTTL < c.DefaultTTL {
		errs = append(errs, fmt.Errorf("TTL default %v, max %v: want 0 < default <= max", c.DefaultTTL, c.MaxTTL))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"send timeout", c.SendTimeout}, {"call timeout", c.CallTimeout}, {"queue attempt timeout", c.QueueAttemptTimeout},
		{"sweep interval", c.SweepInterval}, {"idle conn timeout", c.IdleConnTimeout},
		{"resubscribe max delay", c.ResubscribeMaxDelay}, {"resync interval", c.ResyncInterval},
		{"presence cache TTL", c.PresenceCacheTTL}, {"redeliver min delay", c.RedeliverMinDelay},
	} {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: want > 0", d.name, d.d))
		}
	}
	if c.ServiceTokenTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("service token TTL %v: want at least 2s", c.ServiceTokenTTL))
	}
	if c.SubscriberBuffer <= 0 {
		errs = append(errs, fmt.Errorf("subscriber buffer %d: want > 0", c.SubscriberBuffer))
	}
	if c.PresenceCacheSize < 0 {
		errs = append(errs, fmt.Errorf("presence cache size %d: want >= 0 (0: no cache)", c.PresenceCacheSize))
	}
	if c.RedeliverMaxDelay < c.RedeliverMinDelay {
		errs = append(errs, fmt.Errorf("redeliver max delay %v: want >= the min delay %v", c.RedeliverMaxDelay, c.RedeliverMinDelay))
	}
	if c.RedeliverAttempts <= 0 || c.RedeliverPending <= 0 || c.RedeliverWorkers <= 0 {
		errs = append(errs, fmt.Errorf("redeliver attempts %d, pending %d, workers %d: want > 0", c.RedeliverAttempts, c.RedeliverPending, c.RedeliverWorkers))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("controlplane: invalid messaging config: %w", err)
	}
	return nil
}

// Option adds to a control plane built by New.
type Option func(*options)

type options struct {
	msgStore  MessageStore
	msgCfg    *MessagingConfig
	svcSigner ServiceSigner
	dialOpts  []grpc.DialOption
}

// WithMessaging serves MessagingService on store. Service tokens are minted
// by the signer given to New (it must have SignService, as *token.Signer
// does) unless WithServiceSigner names another.
func WithMessaging(store MessageStore) Option {
	return func(o *options) { o.msgStore = store }
}

// WithMessagingConfig tunes MessagingService (DefaultMessagingConfig
// otherwise).
func WithMessagingConfig(c MessagingConfig) Option {
	return func(o *options) { o.msgCfg = &c }
}

// WithServiceSigner mints the service tokens presented to executors.
func WithServiceSigner(s ServiceSigner) Option {
	return func(o *options) { o.svcSigner = s }
}

// WithExecutorDialOptions adds dial options to the connections to
// executors (after insecure credentials, keepalive and the service token).
func WithExecutorDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// applyOptions builds what the options ask for.
func (s *Server) applyOptions(opts []Option) error {
	var o options
	for _, fn := range opts {
		if fn != nil {
			fn(&o)
		}
	}
	if o.msgStore == nil {
		if o.msgCfg != nil || o.svcSigner != nil || o.dialOpts != nil {
			return errors.New("controlplane: messaging options need WithMessaging")
		}
		return nil
	}
	cfg := DefaultMessagingConfig()
	if o.msgCfg != nil {
		cfg = *o.msgCfg
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	signer := o.svcSigner
	if signer == nil {
		ss, ok := s.signer.(ServiceSigner)
		if !ok {
			return errors.New("controlplane: messaging needs a signer with SignService (WithServiceSigner)")
		}
		signer = ss
	}
	msg, err := newMessaging(cfg, o.msgStore, s.cache, signer, s.cfg.ReplicaID, s.cfg.RetryAfter, o.dialOpts, s.log.With("component", "messaging"), s.now)
	if err != nil {
		return err
	}
	s.msg = msg
	return nil
}

// messaging implements MessagingService.
type messaging struct {
	messagingv1.UnimplementedMessagingServiceServer

	cfg       MessagingConfig
	store     MessageStore
	cache     Snapshotter
	pool      *execclient.Pool
	hub       *hub
	routes    *routeCache // nil: every route is read from the registry
	redeliver *redeliverer
	log       *slog.Logger
	now       func() time.Time
	retry     time.Duration

	stopOnce sync.Once
	stopping chan struct{}
}

func newMessaging(cfg MessagingConfig, store MessageStore, cache Snapshotter, signer ServiceSigner, replica string,
	retry time.Duration, dialOpts []grpc.DialOption, log *slog.Logger, now func() time.Time,
) (*messaging, error) {
	pool, err := execclient.New(execclient.Config{Subject: replica, TokenTTL: cfg.ServiceTokenTTL, IdleTimeout: cfg.IdleConnTimeout, DialOptions: dialOpts},
		execclient.Deps{Signer: signer, Executors: cache, Log: log, Now: now})
	if err != nil {
		return nil, err
	}
	m := &messaging{
		cfg: cfg, store: store, cache: cache, pool: pool, log: log, now: now, retry: retry,
		stopping: make(chan struct{}),
	}
	m.hub = newHub(cache, pool, cfg, log)
	if cfg.PresenceCacheSize > 0 {
		m.routes = newRouteCache(cfg.PresenceCacheSize, cfg.PresenceCacheTTL, now)
	}
	m.redeliver = newRedeliverer(m, log)
	return m, nil
}

// run keeps the background work of messaging going until ctx is done: the
// subscriptions to executors, the sweeper of expired messages, the
// redelivery of queues to connected devices and the pruning of connections
// to executors that left.
func (m *messaging) run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { m.hub.run(ctx) })
	wg.Go(func() { m.sweep(ctx) })
	wg.Go(func() { _ = m.pool.Run(ctx) })
	wg.Go(func() { m.redeliver.run(ctx) })
	<-ctx.Done()
	m.stopOnce.Do(func() { close(m.stopping) })
	wg.Wait()
	return nil
}

// close closes the connections to executors; call it after the server
// stopped.
func (m *messaging) close() {
	m.stopOnce.Do(func() { close(m.stopping) })
	m.pool.Close()
}

// sweep removes expired queued messages every SweepInterval. Several
// replicas sweeping at once is harmless: deletes of gone keys do nothing.
func (m *messaging) sweep(ctx context.Context) {
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
func (m *messaging) Send(ctx context.Context, req *messagingv1.SendRequest) (*messagingv1.SendResponse, error) {
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
func (m *messaging) sendOnline(ctx context.Context, req *messagingv1.SendRequest, ttl time.Duration) (*messagingv1.SendResponse, error) {
	dev := req.GetDeviceId()
	p, online, cached, err := m.route(ctx, dev, true)
	if err != nil {
		return nil, m.registryStatus(ctx, err, fmt.Sprintf("cannot look up device %s", dev))
	}
	if !online {
		return nil, offlineStatus(dev)
	}
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
func (m *messaging) sendQueued(ctx context.Context, req *messagingv1.SendRequest, ttl time.Duration) (*messagingv1.SendResponse, error) {
	dev := req.GetDeviceId()
	now := m.now()
	stored, dup, err := m.store.Enqueue(ctx, registry.QueuedMessage{
		ID: registry.NewMessageID(), DeviceID: dev, Payload: req.GetPayload(), ContentType: req.GetContentType(),
		EnqueuedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC(), IdempotencyKey: req.GetIdempotencyKey(),
	}, registry.QueueLimits{PerDevice: m.cfg.QueuePerDevice, Total: m.cfg.QueueTotal})
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
	actx, cancel := attemptContext(ctx, m.cfg.QueueAttemptTimeout)
	defer cancel()
	msg := &executorv1.Message{MessageId: stored.ID, Payload: stored.Payload, ContentType: stored.ContentType, SentAt: timestamppb.New(now)}
	_, p, online, err = m.deliverAt(actx, p, cached, msg, m.cfg.QueueAttemptTimeout)
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

// Call implements MessagingService.Call.
func (m *messaging) Call(ctx context.Context, req *messagingv1.CallRequest) (*messagingv1.CallResponse, error) {
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
func (m *messaging) GetDevice(ctx context.Context, req *messagingv1.GetDeviceRequest) (*messagingv1.GetDeviceResponse, error) {
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
func (m *messaging) presence(ctx context.Context, dev string) (p registry.Presence, online bool, err error) {
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
// connection to it, within the caller's deadline (def when it has none).
func (m *messaging) deliver(ctx context.Context, p registry.Presence, msg *executorv1.Message, def time.Duration) (*executorv1.DeliverResponse, error) {
	ctx, cancel := deliveryContext(ctx, def)
	defer cancel()
	c, release, err := m.pool.Acquire(p.Address)
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
func validateDeviceID(id string) error {
	switch {
	case id == "":
		return errors.New("device_id is required")
	case len(id) > maxIDLen:
		return fmt.Errorf("device_id is %d bytes; at most %d", len(id), maxIDLen)
	case !registry.ValidID(id):
		return fmt.Errorf("device_id %q: want 1-128 of [A-Za-z0-9._:@-]", id)
	}
	return nil
}

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
func validateSend(r *messagingv1.SendRequest, cfg MessagingConfig) (time.Duration, error) {
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
