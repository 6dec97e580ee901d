package messaging_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/execclient"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/messaging"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// fakeMsgStore is a Store in memory that behaves like the registry's.
type fakeMsgStore struct {
	mu       sync.Mutex
	presence map[string]registry.Presence
	queues   map[string][]registry.QueuedMessage
	seq      map[string]int64
	idem     map[string]registry.IdempotencyRecord // device + "/" + key
	sweeps   int
	reads    int   // Presence calls
	fail     error // returned by every method when set
}

var _ messaging.Store = (*fakeMsgStore)(nil)

func newFakeMsgStore() *fakeMsgStore {
	return &fakeMsgStore{
		presence: map[string]registry.Presence{}, queues: map[string][]registry.QueuedMessage{},
		seq: map[string]int64{}, idem: map[string]registry.IdempotencyRecord{},
	}
}

func (s *fakeMsgStore) setPresence(p registry.Presence) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.presence[p.DeviceID] = p
}

// clearPresence says device is not connected.
func (s *fakeMsgStore) clearPresence(device string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.presence, device)
}

// presenceReads counts the Presence calls so far.
func (s *fakeMsgStore) presenceReads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

func (s *fakeMsgStore) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

func (s *fakeMsgStore) queue(device string) []registry.QueuedMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]registry.QueuedMessage(nil), s.queues[device]...)
}

func (s *fakeMsgStore) Presence(_ context.Context, device string) (registry.Presence, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if s.fail != nil {
		return registry.Presence{}, s.fail
	}
	p, ok := s.presence[device]
	if !ok {
		return p, fmt.Errorf("%w: presence/%s", registry.ErrNotFound, device)
	}
	return p, nil
}

func (s *fakeMsgStore) Enqueue(_ context.Context, m registry.QueuedMessage, limits registry.QueueLimits) (registry.QueuedMessage, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return m, false, s.fail
	}
	if m.IdempotencyKey != "" {
		if rec, ok := s.idem[m.DeviceID+"/"+m.IdempotencyKey]; ok {
			m.ID, m.Seq = rec.MessageID, rec.Seq
			return m, true, nil
		}
	}
	if n := int64(len(s.queues[m.DeviceID])); n >= limits.PerDevice {
		return m, false, fmt.Errorf("%w: device %s has %d messages waiting (at most %d)", registry.ErrQueueFull, m.DeviceID, n, limits.PerDevice)
	}
	total := int64(0)
	for _, q := range s.queues {
		total += int64(len(q))
	}
	if total >= limits.Total {
		return m, false, fmt.Errorf("%w: %d messages waiting in all (at most %d)", registry.ErrQueueFull, total, limits.Total)
	}
	s.seq[m.DeviceID]++
	m.Seq = s.seq[m.DeviceID]
	s.queues[m.DeviceID] = append(s.queues[m.DeviceID], m)
	if m.IdempotencyKey != "" {
		s.idem[m.DeviceID+"/"+m.IdempotencyKey] = registry.IdempotencyRecord{MessageID: m.ID, Seq: m.Seq, ExpiresAt: m.ExpiresAt}
	}
	return m, false, nil
}

func (s *fakeMsgStore) RememberIdempotency(_ context.Context, device, key string, rec registry.IdempotencyRecord) (registry.IdempotencyRecord, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return rec, false, s.fail
	}
	if old, ok := s.idem[device+"/"+key]; ok {
		return old, false, nil
	}
	s.idem[device+"/"+key] = rec
	return rec, true, nil
}

func (s *fakeMsgStore) MarkDelivered(_ context.Context, device, key string, rec registry.IdempotencyRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	rec.Delivered = true
	s.idem[device+"/"+key] = rec
	return nil
}

func (s *fakeMsgStore) Queue(_ context.Context, device string, limit int64) ([]registry.QueuedMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	q := s.queues[device]
	if limit > 0 && int64(len(q)) > limit {
		q = q[:limit]
	}
	return append([]registry.QueuedMessage(nil), q...), nil
}

func (s *fakeMsgStore) QueueLen(_ context.Context, device string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	return int64(len(s.queues[device])), nil
}

func (s *fakeMsgStore) Dequeue(_ context.Context, device string, seq int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	q := s.queues[device]
	for i, m := range q {
		if m.Seq == seq {
			s.queues[device] = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	return nil
}

func (s *fakeMsgStore) SweepExpired(_ context.Context, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweeps++
	n := 0
	for d, q := range s.queues {
		var keep []registry.QueuedMessage
		for _, m := range q {
			if m.ExpiresAt.Before(now) {
				n++
				continue
			}
			keep = append(keep, m)
		}
		s.queues[d] = keep
	}
	return n, nil
}

// fakeCache is the registry cache of a replica, set by hand.
type fakeCache struct {
	mu      sync.Mutex
	snap    *registry.Snapshot
	records map[string]registry.Assignment
}

var _ messaging.Cache = (*fakeCache)(nil)

func (f *fakeCache) Snapshot() *registry.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

func (f *fakeCache) Assignment(id string) (registry.Assignment, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.records[id]
	return a, ok
}

// fakeExec is an executor's internal service on loopback. It checks the
// bearer service token of every call like a real executor must, and
// answers Deliver with deliver (an ack when nil).
type fakeExec struct {
	executorv1.UnimplementedExecutorInternalServiceServer
	id, addr string
	// deviceAddr, when set (splitPorts), is the executor's device
	// address, and addr its internal address.
	deviceAddr string
	verifier   *token.Verifier

	mu        sync.Mutex
	deliver   func(ctx context.Context, req *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error)
	delivered []*executorv1.DeliverRequest
	subjects  map[string]int // token subjects seen
	tokens    map[string]bool
	streams   map[int]chan *executorv1.SubscribeResponse
	kicks     map[int]chan struct{}
	next      int
}

func startExec(t *testing.T, id string, verifier *token.Verifier) *fakeExec {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &fakeExec{id: id, addr: lis.Addr().String(), verifier: verifier, subjects: map[string]int{}, tokens: map[string]bool{},
		streams: map[int]chan *executorv1.SubscribeResponse{}, kicks: map[int]chan struct{}{}}
	gs := grpc.NewServer()
	executorv1.RegisterExecutorInternalServiceServer(gs, e)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return e
}

// auth checks the bearer token as an executor does.
func (e *fakeExec) auth(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 || !strings.HasPrefix(vals[0], "Bearer ") {
		return status.Error(codes.Unauthenticated, "missing bearer token")
	}
	raw := strings.TrimPrefix(vals[0], "Bearer ")
	c, err := e.verifier.Verify(raw)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if c.Role != token.RoleControlPlane {
		return status.Error(codes.PermissionDenied, "not a control plane token")
	}
	e.mu.Lock()
	e.subjects[c.DeviceID]++
	e.tokens[raw] = true
	e.mu.Unlock()
	return nil
}

func (e *fakeExec) setDeliver(fn func(ctx context.Context, req *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.deliver = fn
}

func (e *fakeExec) Deliver(ctx context.Context, req *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
	if err := e.auth(ctx); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.delivered = append(e.delivered, req)
	fn := e.deliver
	e.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	return &executorv1.DeliverResponse{SessionId: "s1"}, nil
}

func (e *fakeExec) subjectsSeen() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.subjects)
}

func (e *fakeExec) deliveries() []*executorv1.DeliverRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*executorv1.DeliverRequest(nil), e.delivered...)
}

func (e *fakeExec) Subscribe(_ *executorv1.SubscribeRequest, stream grpc.ServerStreamingServer[executorv1.SubscribeResponse]) error {
	if err := e.auth(stream.Context()); err != nil {
		return err
	}
	ch, kick := make(chan *executorv1.SubscribeResponse, 1024), make(chan struct{})
	e.mu.Lock()
	id := e.next
	e.next++
	e.streams[id], e.kicks[id] = ch, kick
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.streams, id)
		delete(e.kicks, id)
		e.mu.Unlock()
	}()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-kick:
			return status.Error(codes.Unavailable, "kicked")
		case ev := <-ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

// subscribers counts the control planes following this executor.
func (e *fakeExec) subscribers() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.streams)
}

// publish sends a device's publish to every follower.
func (e *fakeExec) publish(device, topic string, payload []byte) {
	ev := &executorv1.SubscribeResponse{DeviceId: device, ExecutorId: e.id, Publish: &executorv1.Publish{Topic: topic, Payload: payload, ContentType: "text/plain"}}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ch := range e.streams {
		ch <- ev
	}
}

// kick ends every follower's stream with UNAVAILABLE.
func (e *fakeExec) kick() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, k := range e.kicks {
		close(k)
		delete(e.kicks, id)
		delete(e.streams, id)
	}
}

// splitPorts gives e a device port of its own, which serves no
// ExecutorInternalService (calls there fail UNIMPLEMENTED): e's records
// then name it as their address and e's own as the internal address, as
// an executor run with --internal-listen writes them.
func (e *fakeExec) splitPorts(t *testing.T) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	e.deviceAddr = lis.Addr().String()
}

// addrs returns e's address and internal address, as its records name
// them.
func (e *fakeExec) addrs() (addr, internal string) {
	if e.deviceAddr != "" {
		return e.deviceAddr, e.addr
	}
	return e.addr, ""
}

func (e *fakeExec) record(group string) registry.Executor {
	addr, internal := e.addrs()
	return registry.Executor{ID: e.id, GroupID: group, Address: addr, InternalAddress: internal, Capacity: 100}
}

// presence says device is connected to e.
func (e *fakeExec) presence(device string) registry.Presence {
	addr, internal := e.addrs()
	return registry.Presence{DeviceID: device, ExecutorID: e.id, GroupID: "g1", Address: addr, InternalAddress: internal, SessionID: "s-" + device, Since: time.Now().UTC()}
}

// keys is a signing key and verifiers for executors.
type keys struct {
	signer   *token.Signer
	verifier *token.Verifier
}

func newKeys(t *testing.T) keys {
	t.Helper()
	priv, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := token.NewSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.NewVerifier(nil, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return keys{s, v}
}

// msgFixture is MessagingService served on loopback over fakes.
type msgFixture struct {
	client messagingv1.MessagingServiceClient
	addr   string
	cache  *fakeCache
	store  *fakeMsgStore
	keys   keys
}

// testMessagingConfig is quick to resync and sweep.
func testMessagingConfig() messaging.Config {
	c := messaging.DefaultConfig()
	c.ResyncInterval = 20 * time.Millisecond
	c.ResubscribeMaxDelay = 200 * time.Millisecond
	return c
}

func startMessaging(t *testing.T, k keys, mcfg messaging.Config, execs ...*fakeExec) *msgFixture {
	t.Helper()
	return startMessagingAt(t, k, mcfg, nil, execs...)
}

// startMessagingAt is startMessaging with the server's clock now (nil:
// time.Now).
func startMessagingAt(t *testing.T, k keys, mcfg messaging.Config, now func() time.Time, execs ...*fakeExec) *msgFixture {
	t.Helper()
	recs := make([]registry.Executor, len(execs))
	for i, e := range execs {
		recs[i] = e.record("g1")
	}
	cache := &fakeCache{
		snap:    registry.NewSnapshot(1, []registry.Group{{ID: "g1", Capacity: 100, State: registry.GroupActive, Labels: []string{"default"}}}, recs),
		records: map[string]registry.Assignment{},
	}
	store := newFakeMsgStore()
	addr := serveMessaging(t, k, mcfg, cache, store, nil, now)
	f := &msgFixture{addr: addr, cache: cache, store: store, keys: k}
	f.client = messagingv1.NewMessagingServiceClient(f.dial(t))
	return f
}

// serveMessaging serves MessagingService over cache and store on
// loopback, calling executors through a pool of connections minting
// service tokens for "cp-test" with k, as a control plane replica does; run
// (when set) is run next to it, as a replica runs its registry cache; now
// is messaging's clock (nil: time.Now). It returns the address and stops
// everything at cleanup, in a replica's order: messaging's work, the gRPC
// server, messaging, the pool.
func serveMessaging(t *testing.T, k keys, mcfg messaging.Config, cache messaging.Cache, store messaging.Store, run func(context.Context) error, now func() time.Time) string {
	t.Helper()
	pcfg := execclient.DefaultConfig()
	pcfg.Subject = "cp-test"
	pool, err := execclient.New(pcfg, execclient.Deps{Signer: k.signer, Executors: cache})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := messaging.New(mcfg, messaging.Deps{Store: store, Cache: cache, Executors: pool, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rpc := rpcserver.New(rpcserver.DefaultConfig(), nil)
	srv.Register(rpc.GRPC)
	ctx, cancel := context.WithCancel(context.Background())
	var g errgroup.Group
	g.Go(func() error { return srv.Run(ctx) })
	g.Go(func() error { return pool.Run(ctx) })
	if run != nil {
		g.Go(func() error { return run(ctx) })
	}
	served := make(chan error, 1)
	go func() { served <- rpc.GRPC.Serve(lis) }()
	t.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Errorf("Run: %v", err)
		}
		rpc.Stop(5 * time.Second)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		srv.Close()
		pool.Close()
	})
	return lis.Addr().String()
}

// dial opens a client connection to the messaging server, closed at cleanup.
func (f *msgFixture) dial(t *testing.T, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(f.addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// setExecutors replaces the executors of the cached snapshot.
func (f *msgFixture) setExecutors(execs ...*fakeExec) {
	recs := make([]registry.Executor, len(execs))
	for i, e := range execs {
		recs[i] = e.record("g1")
	}
	f.cache.mu.Lock()
	defer f.cache.mu.Unlock()
	f.cache.snap = registry.NewSnapshot(f.cache.snap.Revision+1, []registry.Group{{ID: "g1", Capacity: 100, State: registry.GroupActive, Labels: []string{"default"}}}, recs)
}

func (f *msgFixture) setRecord(a registry.Assignment) {
	f.cache.mu.Lock()
	defer f.cache.mu.Unlock()
	f.cache.records[a.DeviceID] = a
}

// wantCode fails unless err has code c and a message containing msg.
func wantCode(t *testing.T, what string, err error, c codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != c || !strings.Contains(st.Message(), msg) {
		t.Fatalf("%s = %v %q; want %v containing %q", what, st.Code(), st.Message(), c, msg)
	}
}

// ctxT is a bounded context for one test step.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	t.Cleanup(cancel)
	return ctx
}

var errEtcd = errors.New("etcdserver: request timed out")
