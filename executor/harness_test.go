package executor_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

const (
	testExecutor = "exec-1"
	testGroup    = "g1"
	// waitTimeout bounds every wait for something expected to happen.
	waitTimeout = testutil.DefaultTimeout
)

// fakeRegistrar records what the executor tells the registry.
type fakeRegistrar struct {
	mu      sync.Mutex
	rec     registry.Executor
	history []registry.Executor // the record after every Update
	events  []string            // "draining", "run-stopped", in order
	changed chan struct{}       // closed and renewed on every change
	// presence is what SetPresence and ClearPresence left, by device;
	// presenceLog is every call in order: "set:<device>:<session>" or
	// "clear:<device>:<session>".
	presence    map[string]registry.Presence
	presenceLog []string

	registered atomic.Bool
	runErr     error                      // what Run returns after ctx is done
	onReplaced func(registry.Replacement) // set by executor.New
}

var _ executor.Registrar = (*fakeRegistrar)(nil)

func newFakeRegistrar() *fakeRegistrar {
	return &fakeRegistrar{changed: make(chan struct{}), presence: make(map[string]registry.Presence)}
}

// SetPresence records p, as a Registration does before writing it.
func (f *fakeRegistrar) SetPresence(p registry.Presence) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.presence[p.DeviceID] = p
	f.presenceLog = append(f.presenceLog, "set:"+p.DeviceID+":"+p.SessionID)
	f.notifyLocked()
}

// ClearPresence removes the device's presence if it names session, as a
// Registration does.
func (f *fakeRegistrar) ClearPresence(deviceID, sessionID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.presence[deviceID]; ok && p.SessionID == sessionID {
		delete(f.presence, deviceID)
	}
	f.presenceLog = append(f.presenceLog, "clear:"+deviceID+":"+sessionID)
	f.notifyLocked()
}

// presenceOf returns the device's presence, if any.
func (f *fakeRegistrar) presenceOf(deviceID string) (registry.Presence, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.presence[deviceID]
	return p, ok
}

// presenceCalls returns the presence calls made so far.
func (f *fakeRegistrar) presenceCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.presenceLog...)
}

// waitPresence waits until cond holds for the presence records.
func (f *fakeRegistrar) waitPresence(t *testing.T, what string, cond func(map[string]registry.Presence) bool) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		f.mu.Lock()
		ok, ch := cond(f.presence), f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			f.mu.Lock()
			defer f.mu.Unlock()
			t.Fatalf("timed out waiting for presence: %s; have %+v", what, f.presence)
		}
	}
}

func (f *fakeRegistrar) Run(ctx context.Context) error {
	f.registered.Store(true)
	<-ctx.Done()
	f.registered.Store(false)
	f.mu.Lock()
	f.events = append(f.events, "run-stopped")
	f.notifyLocked()
	f.mu.Unlock()
	return f.runErr
}

func (f *fakeRegistrar) Update(fn func(*registry.Executor)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	wasDraining := f.rec.Draining
	fn(&f.rec)
	f.history = append(f.history, f.rec)
	if f.rec.Draining && !wasDraining {
		f.events = append(f.events, "draining")
	}
	f.notifyLocked()
}

func (f *fakeRegistrar) Registered() bool { return f.registered.Load() }

// OnReplaced keeps fn, which replace calls.
func (f *fakeRegistrar) OnReplaced(fn func(registry.Replacement)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onReplaced = fn
}

// replace tells the executor, as a Registration does, that r's session was
// replaced elsewhere.
func (f *fakeRegistrar) replace(r registry.Replacement) {
	f.mu.Lock()
	fn := f.onReplaced
	f.mu.Unlock()
	fn(r)
}

func (f *fakeRegistrar) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// record returns the record as the executor last set it.
func (f *fakeRegistrar) record() registry.Executor {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rec
}

// eventLog returns the recorded events.
func (f *fakeRegistrar) eventLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.events...)
}

// maxConnections returns the highest connection count ever reported.
func (f *fakeRegistrar) maxConnections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.history {
		n = max(n, r.Connections)
	}
	return n
}

// waitRecord waits until cond holds for the record.
func (f *fakeRegistrar) waitRecord(t *testing.T, what string, cond func(registry.Executor) bool) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		f.mu.Lock()
		ok, ch := cond(f.rec), f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("timed out waiting for the registry record: %s; have %+v", what, f.record())
		}
	}
}

// harness is an executor serving on bufconn, with its dependencies.
type harness struct {
	cfg    executor.Config
	srv    *executor.Server
	reg    *fakeRegistrar
	key    ed25519.PrivateKey
	signer *token.Signer
	lis    *bufconn.Listener
	conn   *grpc.ClientConn
	client executorv1.ExecutorServiceClient
	// ilis and iconn are the internal listener and a connection to it,
	// when the config has an InternalAddress (RunSplit); nil otherwise.
	ilis  *bufconn.Listener
	iconn *grpc.ClientConn
	// internal is ExecutorInternalService on conn, or on iconn when the
	// executor has an internal listener; calls need a token (see
	// serviceCtx).
	internal executorv1.ExecutorInternalServiceClient
	health   healthpb.HealthClient
	stop     context.CancelFunc
	done     chan error // Run's result
}

// testConfig is a config with short but unhurried settings; pings are
// effectively off unless a test turns them on.
func testConfig() executor.Config {
	cfg := executor.DefaultConfig()
	cfg.ID = testExecutor
	cfg.GroupID = testGroup
	cfg.Address = "10.0.0.1:7000"
	cfg.Capacity = 10
	cfg.HelloTimeout = waitTimeout
	cfg.PingInterval = time.Hour
	cfg.DrainTimeout = waitTimeout
	cfg.RedirectSpread = 3 * time.Second
	return cfg
}

// start runs an executor with testConfig changed by mutate (which may be
// nil). It is stopped, and Run's result checked, when the test ends.
func start(t *testing.T, mutate func(*executor.Config)) *harness {
	t.Helper()
	return startWith(t, mutate)
}

// startWith is start with options for New.
func startWith(t testing.TB, mutate func(*executor.Config), opts ...executor.Option) *harness {
	t.Helper()
	return startWrapped(t, nil, mutate, opts...)
}

// testKeys returns a fresh Ed25519 token key with its signer and verifier.
func testKeys(t testing.TB) (ed25519.PrivateKey, *token.Signer, *token.Verifier) {
	t.Helper()
	key, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := token.NewSigner(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := token.NewVerifier(nil, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return key, signer, verifier
}

// startWrapped is startWith whose executor is given wrap(fake registrar)
// as its Registrar (wrap nil: the fake itself).
func startWrapped(t testing.TB, wrap func(*fakeRegistrar) executor.Registrar, mutate func(*executor.Config), opts ...executor.Option) *harness {
	t.Helper()
	cfg := testConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	key, signer, verifier := testKeys(t)
	reg := newFakeRegistrar()
	var r executor.Registrar = reg
	if wrap != nil {
		r = wrap(reg)
	}
	srv, err := executor.New(cfg, verifier, r, nil, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	lis := bufconn.Listen(1 << 20)
	ctx, stop := context.WithCancel(context.Background())
	h := &harness{cfg: cfg, srv: srv, reg: reg, key: key, signer: signer, lis: lis, stop: stop, done: make(chan error, 1)}
	if cfg.InternalAddress != "" {
		h.ilis = bufconn.Listen(1 << 20)
		go func() { h.done <- srv.RunSplit(ctx, lis, h.ilis) }()
	} else {
		go func() { h.done <- srv.Run(ctx, lis) }()
	}
	t.Cleanup(func() {
		stop()
		if err := h.wait(t); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	h.conn = h.dial(t)
	h.client = executorv1.NewExecutorServiceClient(h.conn)
	h.internal = executorv1.NewExecutorInternalServiceClient(h.conn)
	h.health = healthpb.NewHealthClient(h.conn)
	if h.ilis != nil {
		h.iconn = dialBufconn(t, h.ilis)
		h.internal = executorv1.NewExecutorInternalServiceClient(h.iconn)
	}
	return h
}

// dial opens a client connection to the executor, closed when the test
// ends.
func (h *harness) dial(t testing.TB, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	return dialBufconn(t, h.lis, opts...)
}

// dialBufconn opens a client connection to lis, closed when the test ends.
func dialBufconn(t testing.TB, lis *bufconn.Listener, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet", append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// serviceToken mints a control plane's service token.
func (h *harness) serviceToken(t testing.TB) string {
	t.Helper()
	tok, _, err := h.signer.SignService("cp-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// serviceCtx is a context, bounded by waitTimeout, whose calls carry a
// control plane's service token.
func (h *harness) serviceCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+h.serviceToken(t))
}

// wait waits for Run to return and returns its error.
func (h *harness) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-h.done:
		h.done <- err // so that wait may be called again
		return err
	case <-time.After(waitTimeout):
		t.Fatalf("Run did not return within %v", waitTimeout)
		return nil
	}
}

// token mints a valid token for device in the executor's group.
func (h *harness) token(t testing.TB, device string) string {
	t.Helper()
	return h.tokenFor(t, device, testGroup)
}

// tokenFor mints a token for device in group.
func (h *harness) tokenFor(t testing.TB, device, group string) string {
	t.Helper()
	tok, _, err := h.signer.Sign(device, group, "default", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// device is the client side of one Connect stream. A goroutine reads every
// frame into frames, answering Pings while pong is set.
type device struct {
	id     string
	stream executorv1.ExecutorService_ConnectClient
	cancel context.CancelFunc
	frames chan *executorv1.ConnectResponse
	end    chan error // the Recv error that ended the stream
	pong   atomic.Bool
	sendMu sync.Mutex
}

// open opens a stream and sends first (when not nil) as its first frame.
func (h *harness) open(t *testing.T, id string, first *executorv1.ConnectRequest) *device {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := h.client.Connect(ctx)
	if err != nil {
		cancel()
		t.Fatalf("Connect: %v", err)
	}
	d := &device{id: id, stream: stream, cancel: cancel, frames: make(chan *executorv1.ConnectResponse, 1024), end: make(chan error, 1)}
	d.pong.Store(true)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			f, err := stream.Recv()
			if err != nil {
				d.end <- err
				return
			}
			if p := f.GetPing(); p != nil && d.pong.Load() {
				_ = d.send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Pong{Pong: &executorv1.Pong{Nonce: p.GetNonce()}}})
			}
			select {
			case d.frames <- f:
			default:
				// A test that does not read frames does not care.
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-readerDone
	})
	if first != nil {
		if err := d.send(first); err != nil {
			t.Fatalf("send first frame: %v", err)
		}
	}
	return d
}

// hello opens a stream for id with a Hello carrying tok.
func (h *harness) hello(t *testing.T, id, tok string) *device {
	t.Helper()
	return h.open(t, id, helloFrame(id, tok))
}

// connect opens a stream for id with a valid token and waits for Welcome.
func (h *harness) connect(t *testing.T, id string) (*device, *executorv1.Welcome) {
	t.Helper()
	d := h.hello(t, id, h.token(t, id))
	f := d.next(t, "Welcome", func(f *executorv1.ConnectResponse) bool { return f.GetWelcome() != nil })
	return d, f.GetWelcome()
}

func helloFrame(id, tok string) *executorv1.ConnectRequest {
	return &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Hello{Hello: &executorv1.Hello{DeviceId: id, Token: tok}}}
}

// send sends one frame; safe for concurrent use.
func (d *device) send(f *executorv1.ConnectRequest) error {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	return d.stream.Send(f)
}

// ack acknowledges message id.
func (d *device) ack(t *testing.T, id string) {
	t.Helper()
	if err := d.send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Ack{Ack: &executorv1.Ack{MessageId: id}}}); err != nil {
		t.Fatalf("device %s: send Ack %s: %v", d.id, id, err)
	}
}

// reply answers message id.
func (d *device) reply(t *testing.T, r *executorv1.Reply) {
	t.Helper()
	if err := d.send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Reply{Reply: r}}); err != nil {
		t.Fatalf("device %s: send Reply %s: %v", d.id, r.GetMessageId(), err)
	}
}

// message waits for the next Message frame.
func (d *device) message(t *testing.T) *executorv1.Message {
	t.Helper()
	return d.next(t, "Message", func(f *executorv1.ConnectResponse) bool { return f.GetMessage() != nil }).GetMessage()
}

// leave closes the device's side of the stream, as a device does when it
// goes away cleanly.
func (d *device) leave(t *testing.T) {
	t.Helper()
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	if err := d.stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
}

// next returns the next frame that match accepts, skipping the others. It
// fails the test if the stream ends or nothing matches in time.
func (d *device) next(t *testing.T, what string, match func(*executorv1.ConnectResponse) bool) *executorv1.ConnectResponse {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		select {
		case f := <-d.frames:
			if match(f) {
				return f
			}
		case err := <-d.end:
			d.end <- err
			// Frames read before the end are all in the buffer by now.
			for {
				select {
				case f := <-d.frames:
					if match(f) {
						return f
					}
					continue
				default:
				}
				break
			}
			t.Fatalf("device %s: stream ended (%v) while waiting for %s", d.id, err, what)
		case <-timer.C:
			t.Fatalf("device %s: no %s within %v", d.id, what, waitTimeout)
		}
	}
}

// closed waits for the stream to end and returns the error Recv gave (nil
// for io.EOF, a clean end).
func (d *device) closed(t *testing.T) error {
	t.Helper()
	select {
	case err := <-d.end:
		d.end <- err
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	case <-time.After(waitTimeout):
		t.Fatalf("device %s: stream still open after %v", d.id, waitTimeout)
		return nil
	}
}
