package device

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 5 * time.Second

// tinyBackoff keeps retries fast in tests.
var tinyBackoff = backoff.Config{
	BaseDelay:  time.Millisecond,
	Multiplier: 1.6,
	Jitter:     0.2,
	MaxDelay:   10 * time.Millisecond,
}

// recv waits for a value on ch, failing the test after waitTimeout.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// waitCtx is a context bounded by waitTimeout.
func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// execSpec describes one fake executor.
type execSpec struct {
	id        string
	group     string        // default "group-1"
	heartbeat time.Duration // announced in Welcome
	// reject, when set, may refuse the n-th Hello (1-based) with an error.
	// ctx is the stream's context.
	reject func(ctx context.Context, n int, h *executorv1.Hello) error
	// keepOnEOF keeps a stream the device half-closed open, as a stuck
	// executor would.
	keepOnEOF bool
}

// harness runs a fake control plane and fake executors, each on its own
// bufconn listener, reached through a dialer that maps names to listeners.
type harness struct {
	t         *testing.T
	cp        *fakeCP
	execs     map[string]*fakeExec
	listeners map[string]*bufconn.Listener

	mu      sync.Mutex
	events  []string      // ordered log: "hello:exec-b#1", "done:exec-a#1"
	changes []StateChange // from OnStateChange
}

func newHarness(t *testing.T, specs ...execSpec) *harness {
	t.Helper()
	return newHarnessWith(t, nil, specs...)
}

// newHarnessWith is newHarness with servers' options by name ("cp" or an
// executor id), for example their TLS credentials.
func newHarnessWith(t *testing.T, opts map[string][]grpc.ServerOption, specs ...execSpec) *harness {
	t.Helper()
	h := &harness{
		t:         t,
		execs:     map[string]*fakeExec{},
		listeners: map[string]*bufconn.Listener{},
	}
	var servers []*grpc.Server
	serve := func(name string, register func(*grpc.Server)) {
		l := bufconn.Listen(1 << 20)
		srv := grpc.NewServer(append([]grpc.ServerOption{grpc.WaitForHandlers(true)}, opts[name]...)...) // Stop joins handlers before wg.Wait
		register(srv)
		h.listeners[name] = l
		servers = append(servers, srv)
		go func() { _ = srv.Serve(l) }()
	}
	h.cp = &fakeCP{h: h, calls: make(chan *controlplanev1.AssignRequest, 100)}
	serve("cp", func(s *grpc.Server) { controlplanev1.RegisterControlPlaneServiceServer(s, h.cp) })
	for _, sp := range specs {
		if sp.group == "" {
			sp.group = "group-1"
		}
		e := &fakeExec{h: h, spec: sp, conns: make(chan *serverConn, 100)}
		h.execs[sp.id] = e
		serve(sp.id, func(s *grpc.Server) { executorv1.RegisterExecutorServiceServer(s, e) })
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Stop()
		}
		for _, e := range h.execs {
			e.wg.Wait()
		}
	})
	return h
}

// dialer maps "passthrough:///name" targets to the fake's listeners.
func (h *harness) dialer(ctx context.Context, addr string) (net.Conn, error) {
	l, ok := h.listeners[addr]
	if !ok {
		return nil, fmt.Errorf("no fake server %q", addr)
	}
	return l.DialContext(ctx)
}

func addrOf(name string) string { return "passthrough:///" + name }

func (h *harness) config() Config {
	return Config{
		ControlPlane:  addrOf("cp"),
		DeviceID:      "dev-1",
		TenantID:      "tenant-1",
		Services:      []string{"print"},
		Spec:          Spec{Model: "HL-1", Firmware: "1.0"},
		Backoff:       tinyBackoff,
		DialOptions:   []grpc.DialOption{grpc.WithContextDialer(h.dialer)},
		HelloTimeout:  waitTimeout,
		AssignTimeout: waitTimeout,
		OnStateChange: func(c StateChange) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.changes = append(h.changes, c)
		},
	}
}

// connect starts a Device that is closed when the test ends.
func (h *harness) connect(cfg Config) *Device {
	h.t.Helper()
	d, err := Connect(h.t.Context(), cfg)
	if err != nil {
		h.t.Fatalf("Connect: %v", err)
	}
	h.t.Cleanup(func() { _ = d.Close() })
	return d
}

func (h *harness) logEvent(e string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
}

func (h *harness) eventLog() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.events)
}

func (h *harness) stateChanges() []StateChange {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.changes)
}

// destination is what the default fake Assign answers: every listed
// executor, in order, in group-1.
func destination(token string, execs ...string) *controlplanev1.Destination {
	d := &controlplanev1.Destination{GroupId: "group-1", Label: "default", Token: token}
	for _, id := range execs {
		d.Endpoints = append(d.Endpoints, &controlplanev1.Endpoint{ExecutorId: id, Address: addrOf(id)})
	}
	return d
}

// fakeCP is a ControlPlaneService whose answers a test scripts.
type fakeCP struct {
	controlplanev1.UnimplementedControlPlaneServiceServer
	h *harness
	// answer, when set, makes the n-th (1-based) answer.
	answer func(n int, req *controlplanev1.AssignRequest) (*controlplanev1.AssignResponse, error)
	// endpoints of the default answer.
	endpoints []string
	calls     chan *controlplanev1.AssignRequest

	mu sync.Mutex
	n  int
}

var _ controlplanev1.ControlPlaneServiceServer = (*fakeCP)(nil)

func (f *fakeCP) Assign(_ context.Context, req *controlplanev1.AssignRequest) (*controlplanev1.AssignResponse, error) {
	f.mu.Lock()
	f.n++
	n := f.n
	f.mu.Unlock()
	f.calls <- req
	if f.answer != nil {
		return f.answer(n, req)
	}
	return &controlplanev1.AssignResponse{Destination: destination(fmt.Sprintf("tok-%d", n), f.endpoints...)}, nil
}

func (f *fakeCP) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// fakeExec is an ExecutorService: it answers Hello with Welcome (unless its
// spec rejects it) and hands each stream to the test as a serverConn.
type fakeExec struct {
	executorv1.UnimplementedExecutorServiceServer
	h     *harness
	spec  execSpec
	conns chan *serverConn
	wg    sync.WaitGroup

	mu     sync.Mutex
	hellos []*executorv1.Hello
}

var _ executorv1.ExecutorServiceServer = (*fakeExec)(nil)

// serverConn is the executor's side of one welcomed stream. Only the test
// goroutine sends on it.
type serverConn struct {
	name   string // "exec-a#1"
	hello  *executorv1.Hello
	st     grpc.BidiStreamingServer[executorv1.ConnectRequest, executorv1.ConnectResponse]
	frames chan *executorv1.ConnectRequest // frames from the device after Hello
	end    chan error                      // ends the handler with this error
	done   <-chan struct{}                 // the stream's context is done
	closed chan struct{}                   // the handler logged its end and returns
	eof    chan struct{}                   // the device half-closed the stream
}

func (e *fakeExec) Connect(st grpc.BidiStreamingServer[executorv1.ConnectRequest, executorv1.ConnectResponse]) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	hello := req.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "first frame must be a Hello")
	}
	e.mu.Lock()
	e.hellos = append(e.hellos, hello)
	n := len(e.hellos)
	e.mu.Unlock()
	name := fmt.Sprintf("%s#%d", e.spec.id, n)
	e.h.logEvent("hello:" + name)
	if e.spec.reject != nil {
		if err := e.spec.reject(st.Context(), n, hello); err != nil {
			return err
		}
	}
	welcome := &executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Welcome{Welcome: &executorv1.Welcome{
		SessionId:  name,
		ExecutorId: e.spec.id,
		GroupId:    e.spec.group,
	}}}
	if e.spec.heartbeat > 0 {
		welcome.GetWelcome().HeartbeatInterval = durationpb.New(e.spec.heartbeat)
	}
	if err := st.Send(welcome); err != nil {
		return err
	}
	c := &serverConn{
		name:   name,
		hello:  hello,
		st:     st,
		frames: make(chan *executorv1.ConnectRequest, 100),
		end:    make(chan error, 1),
		done:   st.Context().Done(),
		closed: make(chan struct{}),
		eof:    make(chan struct{}),
	}
	defer close(c.closed)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			r, err := st.Recv()
			if errors.Is(err, io.EOF) {
				close(c.eof)
				return
			}
			if err != nil {
				return
			}
			select {
			case c.frames <- r:
			case <-c.done:
				return
			}
		}
	}()
	e.conns <- c
	// Like the executor, a half-close ends the stream, unless the spec
	// says this executor is stuck.
	ended := c.eof
	if e.spec.keepOnEOF {
		ended = nil
	}
	select {
	case err = <-c.end:
	case <-c.done:
		e.h.logEvent("done:" + name)
	case <-ended:
		e.h.logEvent("done:" + name)
	}
	return err
}

func (e *fakeExec) helloCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.hellos)
}

// send sends a frame to the device.
func (c *serverConn) send(t *testing.T, r *executorv1.ConnectResponse) {
	t.Helper()
	if err := c.st.Send(r); err != nil {
		t.Fatalf("%s: send %v: %v", c.name, r, err)
	}
}

// next returns the next frame the device sent.
func (c *serverConn) next(t *testing.T) *executorv1.ConnectRequest {
	t.Helper()
	return recv(t, c.frames, c.name+" frame")
}

func pingFrame(nonce uint64) *executorv1.ConnectResponse {
	return &executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Ping{Ping: &executorv1.Ping{Nonce: nonce}}}
}

func messageFrame(id, payload string) *executorv1.ConnectResponse {
	return &executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Message{Message: &executorv1.Message{
		MessageId: id, Payload: []byte(payload), ContentType: "text/plain",
	}}}
}

func redirectFrame(r *executorv1.Redirect) *executorv1.ConnectResponse {
	return &executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Redirect{Redirect: r}}
}

func goodbyeFrame(reason executorv1.GoodbyeReason) *executorv1.ConnectResponse {
	return &executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Goodbye{Goodbye: &executorv1.Goodbye{Reason: reason}}}
}
