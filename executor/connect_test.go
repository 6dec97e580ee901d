package executor_test

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// wantStatus checks err's code and that its message says msg.
func wantStatus(t *testing.T, err error, code codes.Code, msg string) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || err == nil {
		t.Fatalf("stream ended with %v; want status %v %q", err, code, msg)
	}
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("status = %v %q; want %v containing %q", st.Code(), st.Message(), code, msg)
	}
	return st
}

func TestConnectRefusals(t *testing.T) {
	otherKey, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	forger, err := token.NewSigner(otherKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(*executor.Config)
		// setup prepares the executor; it may connect other devices.
		setup func(t *testing.T, h *harness)
		// first is the first frame of the refused stream; nil sends none.
		first    func(t *testing.T, h *harness) *executorv1.ConnectRequest
		wantCode codes.Code
		wantMsg  string
		// wantAuth is the reason the refusal is counted (and logged at
		// warn) under in Stats().AuthRefused; "" for none.
		wantAuth string
	}{
		{
			name:     "no Hello in time",
			mutate:   func(c *executor.Config) { c.HelloTimeout = 50 * time.Millisecond },
			wantCode: codes.DeadlineExceeded,
			wantMsg:  "no Hello within 50ms",
		},
		{
			name: "first frame not a Hello",
			first: func(*testing.T, *harness) *executorv1.ConnectRequest {
				return &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Ack{Ack: &executorv1.Ack{MessageId: "m1"}}}
			},
			wantCode: codes.InvalidArgument,
			wantMsg:  "first frame must be Hello",
		},
		{
			name:     "token missing",
			first:    func(*testing.T, *harness) *executorv1.ConnectRequest { return helloFrame("d1", "") },
			wantCode: codes.Unauthenticated,
			wantMsg:  "assignment token missing",
			wantAuth: "assignment token missing",
		},
		{
			name:     "token garbled",
			first:    func(*testing.T, *harness) *executorv1.ConnectRequest { return helloFrame("d1", "not-a-token") },
			wantCode: codes.Unauthenticated,
			wantMsg:  "assignment token invalid: ",
			wantAuth: "assignment token invalid",
		},
		{
			name: "token forged with another key",
			first: func(t *testing.T, _ *harness) *executorv1.ConnectRequest {
				tok, _, err := forger.Sign("d1", testGroup, "default", time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				return helloFrame("d1", tok)
			},
			wantCode: codes.Unauthenticated,
			wantMsg:  "assignment token invalid: ",
			wantAuth: "assignment token invalid",
		},
		{
			name: "token expired",
			first: func(t *testing.T, h *harness) *executorv1.ConnectRequest {
				past, err := token.NewSigner(h.key, func() time.Time { return time.Now().Add(-time.Hour) })
				if err != nil {
					t.Fatal(err)
				}
				tok, _, err := past.Sign("d1", testGroup, "default", time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				return helloFrame("d1", tok)
			},
			wantCode: codes.FailedPrecondition,
			wantMsg:  "assignment token expired; call Assign again",
		},
		{
			name:     "token for another device",
			first:    func(t *testing.T, h *harness) *executorv1.ConnectRequest { return helloFrame("d1", h.token(t, "d2")) },
			wantCode: codes.PermissionDenied,
			wantMsg:  "token was minted for another device",
			wantAuth: "assignment token for another device",
		},
		{
			name: "token for another group",
			first: func(t *testing.T, h *harness) *executorv1.ConnectRequest {
				return helloFrame("d1", h.tokenFor(t, "d1", "g2"))
			},
			wantCode: codes.FailedPrecondition,
			wantMsg:  "token is for group g2, this executor serves group g1",
		},
		{
			name: "draining",
			setup: func(t *testing.T, h *harness) {
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				if err := h.srv.Drain(ctx); err != nil {
					t.Fatalf("Drain with no streams: %v", err)
				}
			},
			first:    func(t *testing.T, h *harness) *executorv1.ConnectRequest { return helloFrame("d1", h.token(t, "d1")) },
			wantCode: codes.Unavailable,
			wantMsg:  "executor draining",
		},
		{
			name:     "at capacity",
			mutate:   func(c *executor.Config) { c.Capacity = 1 },
			setup:    func(t *testing.T, h *harness) { h.connect(t, "d0") },
			first:    func(t *testing.T, h *harness) *executorv1.ConnectRequest { return helloFrame("d1", h.token(t, "d1")) },
			wantCode: codes.ResourceExhausted,
			wantMsg:  "executor at capacity (1 streams); try another endpoint",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, tt.mutate)
			if tt.setup != nil {
				tt.setup(t, h)
			}
			before := h.srv.Sessions()
			var first *executorv1.ConnectRequest
			if tt.first != nil {
				first = tt.first(t, h)
			}
			d := h.open(t, "d1", first)
			wantStatus(t, d.closed(t), tt.wantCode, tt.wantMsg)

			st := h.srv.Stats()
			if got := st.Refused[tt.wantCode]; got != 1 {
				t.Errorf("Stats().Refused[%v] = %d; want 1 (all: %v)", tt.wantCode, got, st.Refused)
			}
			wantAuth := map[string]uint64{}
			if tt.wantAuth != "" {
				wantAuth[tt.wantAuth] = 1
			}
			if !maps.Equal(st.AuthRefused, wantAuth) {
				t.Errorf("Stats().AuthRefused = %v; want %v", st.AuthRefused, wantAuth)
			}
			if got := h.srv.Sessions(); got != before {
				t.Errorf("Sessions() = %d after the refusal; want %d", got, before)
			}
			if got := h.reg.maxConnections(); got != before {
				t.Errorf("registry saw %d connections; want at most %d: a refused stream must not be registered", got, before)
			}
		})
	}
}

func TestWelcome(t *testing.T) {
	h := start(t, func(c *executor.Config) { c.PingInterval = 7 * time.Second })
	_, w := h.connect(t, "d1")
	if w.GetSessionId() == "" || w.GetExecutorId() != testExecutor || w.GetGroupId() != testGroup {
		t.Errorf("Welcome = %v; want a session id, executor %s, group %s", w, testExecutor, testGroup)
	}
	if got := w.GetHeartbeatInterval().AsDuration(); got != 7*time.Second {
		t.Errorf("Welcome.heartbeat_interval = %v; want 7s", got)
	}
	_, w2 := h.connect(t, "d2")
	if w2.GetSessionId() == w.GetSessionId() {
		t.Errorf("two streams share session id %q", w.GetSessionId())
	}
	h.reg.waitRecord(t, "2 connections", func(e registry.Executor) bool { return e.Connections == 2 })
	if st := h.srv.Stats(); st.Accepted != 2 || st.Sessions != 2 {
		t.Errorf("Stats() = %+v; want 2 accepted, 2 sessions", st)
	}
}

func TestRecordAdvertisesConfig(t *testing.T) {
	h := start(t, nil)
	h.reg.waitRecord(t, "the configured identity", func(e registry.Executor) bool {
		return e.ID == testExecutor && e.GroupID == testGroup && e.Address == h.cfg.Address && e.Capacity == h.cfg.Capacity && !e.Draining
	})
}

func TestCapacityFreedWhenDeviceLeaves(t *testing.T) {
	h := start(t, func(c *executor.Config) { c.Capacity = 1 })
	d1, _ := h.connect(t, "d1")

	d2 := h.hello(t, "d2", h.token(t, "d2"))
	st := wantStatus(t, d2.closed(t), codes.ResourceExhausted, "executor at capacity (1 streams)")
	if retry := retryDelay(st); retry != h.cfg.RedirectSpread {
		t.Errorf("retry hint = %v; want RedirectSpread %v", retry, h.cfg.RedirectSpread)
	}

	d1.leave(t)
	if err := d1.closed(t); err != nil {
		t.Fatalf("a device that leaves cleanly: stream ended with %v; want OK", err)
	}
	h.reg.waitRecord(t, "0 connections", func(e registry.Executor) bool { return e.Connections == 0 })

	h.connect(t, "d2")
	h.reg.waitRecord(t, "1 connection", func(e registry.Executor) bool { return e.Connections == 1 })
}

// retryDelay returns the RetryInfo delay of st, or -1.
func retryDelay(st *status.Status) time.Duration {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return -1
}

func TestDuplicateDeviceReplacesOldStream(t *testing.T) {
	h := start(t, func(c *executor.Config) { c.Capacity = 1 })
	old, w1 := h.connect(t, "d1")
	// At capacity, the same device is still admitted: it counts once.
	fresh, w2 := h.connect(t, "d1")
	if w1.GetSessionId() == w2.GetSessionId() {
		t.Fatalf("replacement reused session id %q", w1.GetSessionId())
	}

	f := old.next(t, "Goodbye", func(f *executorv1.ConnectResponse) bool { return f.GetGoodbye() != nil })
	if got := f.GetGoodbye().GetReason(); got != executorv1.GoodbyeReason_GOODBYE_REASON_REPLACED {
		t.Errorf("old stream Goodbye reason = %v; want REPLACED", got)
	}
	wantStatus(t, old.closed(t), codes.Aborted, "replaced")

	// The new stream is registered and usable.
	if got := h.srv.Sessions(); got != 1 {
		t.Errorf("Sessions() = %d; want 1", got)
	}
	if err := h.srv.Deliver(context.Background(), "d1", &executorv1.Message{MessageId: "m1"}); err != nil {
		t.Fatalf("Deliver after replacement: %v", err)
	}
	m := fresh.next(t, "Message", func(f *executorv1.ConnectResponse) bool { return f.GetMessage() != nil })
	if m.GetMessage().GetMessageId() != "m1" {
		t.Errorf("message = %v; want m1", m.GetMessage())
	}
	if st := h.srv.Stats(); st.Replaced != 1 || st.Accepted != 2 || st.Sessions != 1 {
		t.Errorf("Stats() = %+v; want 1 replaced, 2 accepted, 1 session", st)
	}
	if got := h.reg.record().Connections; got != 1 {
		t.Errorf("registry connections = %d; want 1", got)
	}
	if got := h.reg.maxConnections(); got != 1 {
		t.Errorf("registry saw %d connections at most; want 1 (the device counts once)", got)
	}
}

func TestPingPongAndTimeout(t *testing.T) {
	// Six misses rather than the default three, so that a loaded test
	// machine does not pass for a silent device.
	h := start(t, func(c *executor.Config) {
		c.PingInterval = 50 * time.Millisecond
		c.PingMisses = 6
	})
	d, _ := h.connect(t, "d1")

	// A device that answers stays well past PingMisses intervals, and the
	// nonces increase.
	var last uint64
	for last < 12 {
		f := d.next(t, "Ping", func(f *executorv1.ConnectResponse) bool { return f.GetPing() != nil })
		if n := f.GetPing().GetNonce(); n <= last {
			t.Fatalf("ping nonce %d after %d; want increasing", n, last)
		} else {
			last = n
		}
	}
	if st := h.srv.Stats(); st.Timeouts != 0 || st.Sessions != 1 {
		t.Fatalf("Stats() = %+v while the device answers pings; want no timeout, 1 session", st)
	}

	// Once it falls silent it is closed with Goodbye TIMEOUT.
	d.pong.Store(false)
	f := d.next(t, "Goodbye", func(f *executorv1.ConnectResponse) bool { return f.GetGoodbye() != nil })
	if got := f.GetGoodbye().GetReason(); got != executorv1.GoodbyeReason_GOODBYE_REASON_TIMEOUT {
		t.Errorf("Goodbye reason = %v; want TIMEOUT", got)
	}
	wantStatus(t, d.closed(t), codes.DeadlineExceeded, "6 pings of 50ms")
	h.reg.waitRecord(t, "0 connections", func(e registry.Executor) bool { return e.Connections == 0 })
	if st := h.srv.Stats(); st.Timeouts != 1 {
		t.Errorf("Stats().Timeouts = %d; want 1", st.Timeouts)
	}
}

func TestOversizedFrameRefused(t *testing.T) {
	h := start(t, func(c *executor.Config) { c.RPC.MaxRecvMsgSize = 1024 })
	d := h.hello(t, "d1", strings.Repeat("x", 4096))
	wantStatus(t, d.closed(t), codes.ResourceExhausted, "larger than max")
	if got := h.srv.Sessions(); got != 0 {
		t.Errorf("Sessions() = %d; want 0", got)
	}
}

func TestSecondHelloClosesStream(t *testing.T) {
	h := start(t, nil)
	d, _ := h.connect(t, "d1")
	if err := d.send(helloFrame("d1", h.token(t, "d1"))); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, d.closed(t), codes.InvalidArgument, "Hello sent twice")
	h.reg.waitRecord(t, "0 connections", func(e registry.Executor) bool { return e.Connections == 0 })
}
