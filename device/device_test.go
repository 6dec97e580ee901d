package device

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestDevice(t *testing.T) {
	tests := []struct {
		name  string
		execs []execSpec
		// endpoints of the default Assign answer; nil means every executor.
		endpoints []string
		answer    func(n int, req *controlplanev1.AssignRequest) (*controlplanev1.AssignResponse, error)
		configure func(*Config) // optional changes to the harness config
		check     func(t *testing.T, h *harness, d *Device)
	}{
		{
			name:  "connect happy path",
			execs: []execSpec{{id: "exec-a", heartbeat: time.Minute}},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				if err := d.WaitForState(waitCtx(t), Connected); err != nil {
					t.Fatalf("WaitForState(Connected) = %v", err)
				}
				got := d.Session()
				want := SessionInfo{
					GroupID: "group-1", Label: "default", ExecutorID: "exec-a",
					Address: addrOf("exec-a"), SessionID: "exec-a#1", HeartbeatInterval: time.Minute,
				}
				if got.ConnectedSince.IsZero() {
					t.Errorf("Session().ConnectedSince is zero")
				}
				got.ConnectedSince = time.Time{}
				if got != want {
					t.Errorf("Session() = %+v, want %+v", got, want)
				}
				if c.hello.GetToken() != "tok-1" || c.hello.GetDeviceId() != "dev-1" {
					t.Errorf("Hello = %v, want token tok-1 and device dev-1", c.hello)
				}
				req := recv(t, h.cp.calls, "Assign")
				wantReq := &controlplanev1.AssignRequest{
					DeviceId: "dev-1", TenantId: "tenant-1", Services: []string{"print"},
					Spec: &controlplanev1.DeviceSpec{Model: "HL-1", Firmware: "1.0"},
				}
				if !proto.Equal(req, wantReq) {
					t.Errorf("AssignRequest = %v, want %v", req, wantReq)
				}
				if st := d.Stats(); st.Assigns != 1 || st.Connects != 1 || st.Failures != 0 {
					t.Errorf("Stats() = %+v, want 1 assign, 1 connect, 0 failures", st)
				}
				if err := d.Close(); err != nil { // Close joins the run loop: every callback has run
					t.Fatalf("Close() = %v", err)
				}
				var states []State
				for _, c := range h.stateChanges() {
					states = append(states, c.To)
				}
				if want := []State{Assigning, Connecting, Connected, Closed}; !slices.Equal(states, want) {
					t.Errorf("state changes = %v, want %v", states, want)
				}
			},
		},
		{
			name: "first endpoint RESOURCE_EXHAUSTED, second used",
			execs: []execSpec{
				{id: "exec-a", reject: func(context.Context, int, *executorv1.Hello) error {
					return status.Error(codes.ResourceExhausted, "full")
				}},
				{id: "exec-b"},
			},
			check: func(t *testing.T, h *harness, d *Device) {
				recv(t, h.execs["exec-b"].conns, "stream on exec-b")
				if err := d.WaitForState(waitCtx(t), Connected); err != nil {
					t.Fatalf("WaitForState(Connected) = %v", err)
				}
				if got := d.Session().ExecutorID; got != "exec-b" {
					t.Errorf("Session().ExecutorID = %q, want exec-b", got)
				}
				if got := h.execs["exec-a"].helloCount(); got != 1 {
					t.Errorf("exec-a saw %d Hellos, want 1", got)
				}
				if got := h.cp.count(); got != 1 {
					t.Errorf("Assign called %d times, want 1", got)
				}
			},
		},
		{
			name: "no Welcome within HelloTimeout, next endpoint used",
			execs: []execSpec{
				{id: "exec-a", reject: func(ctx context.Context, n int, _ *executorv1.Hello) error {
					<-ctx.Done() // never welcome: the device must give up
					return ctx.Err()
				}},
				{id: "exec-b"},
			},
			configure: func(c *Config) { c.HelloTimeout = 200 * time.Millisecond },
			check: func(t *testing.T, h *harness, d *Device) {
				recv(t, h.execs["exec-b"].conns, "stream on exec-b")
				if err := d.WaitForState(waitCtx(t), Connected); err != nil {
					t.Fatalf("WaitForState(Connected) = %v", err)
				}
				if got := d.Session().ExecutorID; got != "exec-b" {
					t.Errorf("Session().ExecutorID = %q, want exec-b", got)
				}
				// Under heavy load exec-b may time out too before it succeeds,
				// so count at least the one certain failure.
				if got := d.Stats().Failures; got < 1 {
					t.Errorf("Stats().Failures = %d, want at least 1", got)
				}
			},
		},
		{
			name: "all endpoints UNAVAILABLE, backoff, then Assign again before each retry",
			execs: []execSpec{{id: "exec-a", reject: func(_ context.Context, n int, _ *executorv1.Hello) error {
				if n <= 2 {
					return status.Error(codes.Unavailable, "draining")
				}
				return nil
			}}},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				if c.name != "exec-a#3" {
					t.Errorf("welcomed stream is %s, want exec-a#3", c.name)
				}
				if err := d.WaitForState(waitCtx(t), Connected); err != nil {
					t.Fatalf("WaitForState(Connected) = %v", err)
				}
				if got := h.cp.count(); got != 3 {
					t.Errorf("Assign called %d times, want 3 (a failed destination is not reused blindly)", got)
				}
				backoffs := 0
				for _, c := range h.stateChanges() {
					if c.To == Backoff {
						backoffs++
						if status.Code(c.Err) != codes.Unavailable {
							t.Errorf("Backoff error = %v, want UNAVAILABLE", c.Err)
						}
					}
				}
				if backoffs != 2 {
					t.Errorf("entered Backoff %d times, want 2", backoffs)
				}
				if st := d.Stats(); st.Failures != 2 {
					t.Errorf("Stats().Failures = %d, want 2", st.Failures)
				}
			},
		},
		{
			name: "token rejected with FAILED_PRECONDITION, Assign again",
			execs: []execSpec{
				{id: "exec-a", reject: func(_ context.Context, n int, _ *executorv1.Hello) error {
					if n == 1 {
						return status.Error(codes.FailedPrecondition, "token for another group")
					}
					return nil
				}},
				{id: "exec-b"},
			},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				if got := c.hello.GetToken(); got != "tok-2" {
					t.Errorf("welcomed Hello token = %q, want tok-2", got)
				}
				if got := h.cp.count(); got != 2 {
					t.Errorf("Assign called %d times, want 2", got)
				}
				if got := h.execs["exec-b"].helloCount(); got != 0 {
					t.Errorf("exec-b saw %d Hellos, want 0 (a refused token is refused by the whole group)", got)
				}
			},
		},
		{
			name:  "ping answered with the same nonce",
			execs: []execSpec{{id: "exec-a"}},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				c.send(t, pingFrame(42))
				if got := c.next(t).GetPong(); got.GetNonce() != 42 {
					t.Errorf("answer to Ping(42) = %v, want Pong(42)", got)
				}
			},
		},
		{
			name:  "message delivered once and acked, duplicate acked not delivered",
			execs: []execSpec{{id: "exec-a"}},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				c.send(t, messageFrame("m1", "hello"))
				m := recv(t, d.Messages(), "message m1")
				if m.ID != "m1" || string(m.Payload) != "hello" || m.ContentType != "text/plain" {
					t.Errorf("message = %+v, want m1/hello/text/plain", m)
				}
				if err := m.Ack(waitCtx(t)); err != nil {
					t.Fatalf("Ack() = %v", err)
				}
				if got := c.next(t).GetAck().GetMessageId(); got != "m1" {
					t.Errorf("acked %q, want m1", got)
				}
				c.send(t, messageFrame("m1", "hello"))
				if got := c.next(t).GetAck().GetMessageId(); got != "m1" {
					t.Errorf("duplicate acked %q, want m1", got)
				}
				c.send(t, messageFrame("m2", "second"))
				if m := recv(t, d.Messages(), "message m2"); m.ID != "m2" {
					t.Errorf("next message = %s, want m2 (m1 must not be delivered twice)", m.ID)
				}
				if got := d.Stats().Duplicates; got != 1 {
					t.Errorf("Stats().Duplicates = %d, want 1", got)
				}
			},
		},
		{
			name:  "request answered with a Reply frame, duplicate acked not answered",
			execs: []execSpec{{id: "exec-a"}},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				call := messageFrame("c1", "question")
				call.GetMessage().ExpectsReply = true
				c.send(t, call)
				m := recv(t, d.Messages(), "request c1")
				if m.ID != "c1" || !m.ExpectsReply {
					t.Fatalf("message = %+v, want c1 expecting a reply", m)
				}
				if err := m.Reply(waitCtx(t), []byte("answer"), "text/plain"); err != nil {
					t.Fatalf("Reply() = %v", err)
				}
				want := &executorv1.Reply{MessageId: "c1", Payload: []byte("answer"), ContentType: "text/plain"}
				if got := c.next(t).GetReply(); !proto.Equal(got, want) {
					t.Errorf("Reply frame = %v, want %v", got, want)
				}
				c.send(t, call)
				if got := c.next(t).GetAck().GetMessageId(); got != "c1" {
					t.Errorf("duplicate request acked %q, want c1", got)
				}

				c2 := messageFrame("c2", "question")
				c2.GetMessage().ExpectsReply = true
				c.send(t, c2)
				m = recv(t, d.Messages(), "request c2")
				if err := m.ReplyError(waitCtx(t), "out of paper"); err != nil {
					t.Fatalf("ReplyError() = %v", err)
				}
				want = &executorv1.Reply{MessageId: "c2", Error: "out of paper"}
				if got := c.next(t).GetReply(); !proto.Equal(got, want) {
					t.Errorf("Reply frame = %v, want %v", got, want)
				}

				// A plain message says it expects no reply.
				c.send(t, messageFrame("m3", "plain"))
				if m := recv(t, d.Messages(), "message m3"); m.ExpectsReply {
					t.Errorf("message m3 ExpectsReply = true, want false")
				}
			},
		},
		{
			name:  "publish sends a Publish frame",
			execs: []execSpec{{id: "exec-a"}},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				if err := d.WaitForState(waitCtx(t), Connected); err != nil {
					t.Fatalf("WaitForState(Connected) = %v", err)
				}
				if err := d.Publish(waitCtx(t), "status", []byte(`{"ok":true}`), "application/json"); err != nil {
					t.Fatalf("Publish() = %v", err)
				}
				want := &executorv1.Publish{Topic: "status", Payload: []byte(`{"ok":true}`), ContentType: "application/json"}
				if got := c.next(t).GetPublish(); !proto.Equal(got, want) {
					t.Errorf("Publish frame = %v, want %v", got, want)
				}
			},
		},
		{
			name:  "close: frames sent before Close reach the executor, then the stream ends",
			execs: []execSpec{{id: "exec-a"}},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				if err := d.WaitForState(waitCtx(t), Connected); err != nil {
					t.Fatalf("WaitForState(Connected) = %v", err)
				}
				const n = 50
				for i := range n {
					if err := d.Publish(waitCtx(t), "t", []byte(strconv.Itoa(i)), ""); err != nil {
						t.Fatalf("Publish(%d) = %v", i, err)
					}
				}
				if err := d.Close(); err != nil {
					t.Fatalf("Close() = %v", err)
				}
				for i := range n {
					if got := string(c.next(t).GetPublish().GetPayload()); got != strconv.Itoa(i) {
						t.Fatalf("frame %d: publish %q, want %d", i, got, i)
					}
				}
				recv(t, c.eof, "half-close on the executor")
			},
		},
		{
			name:      "close: an executor that does not end a half-closed stream is cut off after CloseTimeout",
			execs:     []execSpec{{id: "exec-a", keepOnEOF: true}},
			configure: func(c *Config) { c.CloseTimeout = 50 * time.Millisecond },
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				if err := d.WaitForState(waitCtx(t), Connected); err != nil {
					t.Fatalf("WaitForState(Connected) = %v", err)
				}
				start := time.Now()
				if err := d.Close(); err != nil {
					t.Fatalf("Close() = %v", err)
				}
				// The device half-closed first, waited for the executor
				// at least CloseTimeout, then cancelled the stream.
				recv(t, c.eof, "half-close on the executor")
				if took := time.Since(start); took < 50*time.Millisecond {
					t.Errorf("Close returned after %v, before CloseTimeout (50ms)", took)
				}
				recv(t, c.done, "stream cancelled on the executor")
			},
		},
		{
			name: "redirect with destination: new stream welcomed before old one closes",
			execs: []execSpec{
				{id: "exec-a"},
				{id: "exec-b", group: "group-2"},
			},
			endpoints: []string{"exec-a"},
			check: func(t *testing.T, h *harness, d *Device) {
				old := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				to := &controlplanev1.Destination{
					GroupId: "group-2", Label: "moved", Token: "tok-moved",
					Endpoints: []*controlplanev1.Endpoint{{ExecutorId: "exec-b", Address: addrOf("exec-b")}},
				}
				old.send(t, redirectFrame(&executorv1.Redirect{
					Reason: executorv1.RedirectReason_REDIRECT_REASON_REBALANCE, Destination: to,
					MaxDelay: durationpb.New(20 * time.Millisecond),
				}))
				nc := recv(t, h.execs["exec-b"].conns, "stream on exec-b")
				if got := nc.hello.GetToken(); got != "tok-moved" {
					t.Errorf("Hello token on exec-b = %q, want tok-moved", got)
				}
				recv(t, old.closed, "old stream closed")
				log := h.eventLog()
				iNew, iOld := slices.Index(log, "hello:exec-b#1"), slices.Index(log, "done:exec-a#1")
				if iNew < 0 || iOld < 0 || iNew > iOld {
					t.Errorf("events = %v, want hello:exec-b#1 before done:exec-a#1", log)
				}
				if got := d.Session(); got.ExecutorID != "exec-b" || got.GroupID != "group-2" || got.Label != "moved" {
					t.Errorf("Session() = %+v, want exec-b in group-2 under label moved", got)
				}
				if got := h.cp.count(); got != 1 {
					t.Errorf("Assign called %d times, want 1", got)
				}
				if got := d.Stats().Redirects; got != 1 {
					t.Errorf("Stats().Redirects = %d, want 1", got)
				}
				for _, c := range h.stateChanges() {
					if c.To != Connected && c.From == Connected {
						t.Errorf("left Connected during a redirect: %+v", c)
					}
				}
			},
		},
		{
			name: "rebalance redirect whose destination refuses: the old stream stays",
			execs: []execSpec{
				{id: "exec-a"},
				{id: "exec-b", group: "group-2", reject: func(context.Context, int, *executorv1.Hello) error {
					return status.Error(codes.Unavailable, "executor draining")
				}},
			},
			endpoints: []string{"exec-a"},
			check: func(t *testing.T, h *harness, d *Device) {
				old := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				if err := d.WaitForState(waitCtx(t), Connected); err != nil {
					t.Fatalf("WaitForState(Connected) = %v", err)
				}
				old.send(t, redirectFrame(&executorv1.Redirect{
					Reason: executorv1.RedirectReason_REDIRECT_REASON_REBALANCE,
					Destination: &controlplanev1.Destination{
						GroupId: "group-2", Token: "tok-moved",
						Endpoints: []*controlplanev1.Endpoint{{ExecutorId: "exec-b", Address: addrOf("exec-b")}},
					},
				}))
				for deadline := time.Now().Add(waitTimeout); h.execs["exec-b"].helloCount() == 0; time.Sleep(5 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("exec-b saw no Hello")
					}
				}
				// The old stream still carries the device: a ping is
				// answered on it.
				old.send(t, pingFrame(7))
				if got := old.next(t).GetPong(); got.GetNonce() != 7 {
					t.Errorf("answer to Ping(7) on the old stream = %v, want Pong(7)", got)
				}
				if got := d.Session(); got.ExecutorID != "exec-a" {
					t.Errorf("Session() = %+v, want still exec-a", got)
				}
				for _, c := range h.stateChanges() {
					if c.From == Connected && c.To != Connected {
						t.Errorf("left Connected: %+v", c)
					}
				}
				if got := h.cp.count(); got != 1 {
					t.Errorf("Assign called %d times, want 1", got)
				}
			},
		},
		{
			name:  "redirect without destination calls Assign again",
			execs: []execSpec{{id: "exec-a"}},
			check: func(t *testing.T, h *harness, d *Device) {
				old := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				first := recv(t, h.cp.calls, "first Assign")
				if first.GetPrevious() != nil {
					t.Errorf("first Assign has Previous %v, want none", first.GetPrevious())
				}
				old.send(t, redirectFrame(&executorv1.Redirect{Reason: executorv1.RedirectReason_REDIRECT_REASON_DRAINING}))
				second := recv(t, h.cp.calls, "second Assign")
				want := &controlplanev1.PreviousAssignment{GroupId: "group-1", Label: "default"}
				if !proto.Equal(second.GetPrevious(), want) {
					t.Errorf("second Assign Previous = %v, want %v", second.GetPrevious(), want)
				}
				nc := recv(t, h.execs["exec-a"].conns, "second stream on exec-a")
				if got := nc.hello.GetToken(); got != "tok-2" {
					t.Errorf("second Hello token = %q, want tok-2", got)
				}
				recv(t, old.done, "old stream closed")
			},
		},
		{
			name:  "stream broken by server, reconnect reuses the destination",
			execs: []execSpec{{id: "exec-a"}},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				c.end <- status.Error(codes.Unavailable, "executor stopping")
				nc := recv(t, h.execs["exec-a"].conns, "second stream on exec-a")
				if got := nc.hello.GetToken(); got != "tok-1" {
					t.Errorf("second Hello token = %q, want tok-1 (destination reused)", got)
				}
				if got := h.cp.count(); got != 1 {
					t.Errorf("Assign called %d times, want 1", got)
				}
				if err := d.WaitForState(waitCtx(t), Connected); err != nil {
					t.Fatalf("WaitForState(Connected) = %v", err)
				}
				if got := d.Stats().Connects; got != 2 {
					t.Errorf("Stats().Connects = %d, want 2", got)
				}
			},
		},
		{
			name:  "stream ended with OK status, reconnect",
			execs: []execSpec{{id: "exec-a"}},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				c.end <- nil
				recv(t, h.execs["exec-a"].conns, "second stream on exec-a")
			},
		},
		{
			name:  "goodbye REPLACED, reconnect after backoff",
			execs: []execSpec{{id: "exec-a"}},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				c.send(t, goodbyeFrame(executorv1.GoodbyeReason_GOODBYE_REASON_REPLACED))
				recv(t, h.execs["exec-a"].conns, "second stream on exec-a")
				var gb *GoodbyeError
				for _, sc := range h.stateChanges() {
					if sc.To == Backoff && errors.As(sc.Err, &gb) {
						break
					}
				}
				if gb == nil || gb.Reason != GoodbyeReplaced {
					t.Errorf("no Backoff with a REPLACED GoodbyeError in %v", h.stateChanges())
				}
			},
		},
		{
			name:  "silent stream killed by the watchdog",
			execs: []execSpec{{id: "exec-a", heartbeat: 20 * time.Millisecond}},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				recv(t, c.done, "silent stream closed")
				recv(t, h.execs["exec-a"].conns, "second stream on exec-a")
				found := false
				for _, sc := range h.stateChanges() {
					found = found || (sc.To == Backoff && errors.Is(sc.Err, ErrSilentStream))
				}
				if !found {
					t.Errorf("no Backoff caused by the watchdog in %v", h.stateChanges())
				}
			},
		},
		{
			name:  "expired token, reconnect calls Assign again",
			execs: []execSpec{{id: "exec-a"}},
			answer: func(n int, _ *controlplanev1.AssignRequest) (*controlplanev1.AssignResponse, error) {
				dest := destination(fmt.Sprintf("tok-%d", n), "exec-a")
				dest.TokenExpiresAt = timestamppb.New(time.Now().Add(time.Hour))
				if n == 1 {
					dest.TokenExpiresAt = timestamppb.New(time.Now().Add(-time.Minute))
				}
				return &controlplanev1.AssignResponse{Destination: dest}, nil
			},
			check: func(t *testing.T, h *harness, d *Device) {
				c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				c.send(t, goodbyeFrame(executorv1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN))
				nc := recv(t, h.execs["exec-a"].conns, "second stream on exec-a")
				if got := nc.hello.GetToken(); got != "tok-2" {
					t.Errorf("second Hello token = %q, want tok-2", got)
				}
				if got := h.cp.count(); got != 2 {
					t.Errorf("Assign called %d times, want 2", got)
				}
			},
		},
		{
			name:  "Assign shed with RESOURCE_EXHAUSTED and a retry hint, retried",
			execs: []execSpec{{id: "exec-a"}},
			answer: func(n int, _ *controlplanev1.AssignRequest) (*controlplanev1.AssignResponse, error) {
				if n == 1 {
					st, _ := status.New(codes.ResourceExhausted, "overloaded").
						WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(5 * time.Millisecond)})
					return nil, st.Err()
				}
				return &controlplanev1.AssignResponse{Destination: destination("tok", "exec-a")}, nil
			},
			check: func(t *testing.T, h *harness, d *Device) {
				recv(t, h.execs["exec-a"].conns, "stream on exec-a")
				if got := h.cp.count(); got != 2 {
					t.Errorf("Assign called %d times, want 2", got)
				}
				if st := d.Stats(); st.Assigns != 2 || st.Failures != 1 {
					t.Errorf("Stats() = %+v, want 2 assigns and 1 failure", st)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.execs...)
			h.cp.answer = tt.answer
			h.cp.endpoints = tt.endpoints
			if h.cp.endpoints == nil {
				for _, e := range tt.execs {
					h.cp.endpoints = append(h.cp.endpoints, e.id)
				}
			}
			cfg := h.config()
			if tt.configure != nil {
				tt.configure(&cfg)
			}
			d := h.connect(cfg)
			tt.check(t, h, d)
		})
	}
}

func TestCloseIsIdempotentAndLeavesNoGoroutine(t *testing.T) {
	h := newHarness(t, execSpec{id: "exec-a"})
	h.cp.endpoints = []string{"exec-a"}
	ignore := goleak.IgnoreCurrent()

	d, err := Connect(t.Context(), h.config())
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	c := recv(t, h.execs["exec-a"].conns, "stream on exec-a")
	if err := d.WaitForState(waitCtx(t), Connected); err != nil {
		t.Fatalf("WaitForState(Connected) = %v", err)
	}
	for i := range 2 {
		if err := d.Close(); err != nil {
			t.Errorf("Close() #%d = %v", i+1, err)
		}
	}
	recv(t, c.done, "stream closed on the executor")
	if got := d.State(); got != Closed {
		t.Errorf("State() = %v, want closed", got)
	}
	if got := d.Session(); got != (SessionInfo{}) {
		t.Errorf("Session() = %+v after Close, want zero", got)
	}
	if _, ok := <-d.Messages(); ok {
		t.Errorf("Messages() still open after Close")
	}
	if err := d.Publish(t.Context(), "t", nil, ""); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Publish() after Close = %v, want ErrNotConnected", err)
	}
	if err := d.WaitForState(t.Context(), Connecting); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitForState(Connecting) after Close = %v, want ErrClosed", err)
	}
	if err := d.WaitForState(t.Context(), Closed); err != nil {
		t.Errorf("WaitForState(Closed) after Close = %v", err)
	}
	changes := h.stateChanges()
	if last := changes[len(changes)-1]; last.To != Closed || !errors.Is(last.Err, ErrClosed) {
		t.Errorf("last state change = %+v, want Closed with ErrClosed", last)
	}
	goleak.VerifyNone(t, ignore)
}

func TestContextCancelStopsDevice(t *testing.T) {
	h := newHarness(t, execSpec{id: "exec-a"})
	h.cp.endpoints = []string{"exec-a"}
	ctx, cancel := context.WithCancel(t.Context())
	d, err := Connect(ctx, h.config())
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if err := d.WaitForState(waitCtx(t), Connected); err != nil {
		t.Fatalf("WaitForState(Connected) = %v", err)
	}
	cancel()
	if err := d.WaitForState(waitCtx(t), Closed); err != nil {
		t.Fatalf("WaitForState(Closed) = %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
}

func TestSharedControlPlaneConnIsNotClosed(t *testing.T) {
	h := newHarness(t, execSpec{id: "exec-a"})
	h.cp.endpoints = []string{"exec-a"}
	conn, err := grpc.NewClient(addrOf("cp"),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(h.dialer))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer conn.Close()

	for i := range 2 { // two devices share the conn
		cfg := h.config()
		cfg.ControlPlane = ""
		cfg.ControlPlaneConn = conn
		cfg.DeviceID = []string{"dev-1", "dev-2"}[i]
		d, err := Connect(t.Context(), cfg)
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		if err := d.WaitForState(waitCtx(t), Connected); err != nil {
			t.Fatalf("WaitForState(Connected) = %v", err)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("Close() = %v", err)
		}
		if s := conn.GetState(); s == connectivity.Shutdown {
			t.Fatalf("shared conn is %v after Close", s)
		}
	}
	if got := h.cp.count(); got != 2 {
		t.Errorf("Assign called %d times through the shared conn, want 2", got)
	}
}

func TestPublishNotConnected(t *testing.T) {
	h := newHarness(t) // no executor: the device never connects
	h.cp.answer = func(int, *controlplanev1.AssignRequest) (*controlplanev1.AssignResponse, error) {
		return nil, status.Error(codes.Unavailable, "no group")
	}
	d := h.connect(h.config())
	if err := d.WaitForState(waitCtx(t), Backoff); err != nil {
		t.Fatalf("WaitForState(Backoff) = %v", err)
	}
	if err := d.Publish(t.Context(), "status", nil, ""); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Publish() = %v, want ErrNotConnected", err)
	}
	if got := d.Session(); got != (SessionInfo{}) {
		t.Errorf("Session() = %+v, want zero", got)
	}
}

func TestWaitForStateHonoursContext(t *testing.T) {
	h := newHarness(t)
	h.cp.answer = func(int, *controlplanev1.AssignRequest) (*controlplanev1.AssignResponse, error) {
		return nil, status.Error(codes.Unavailable, "no group")
	}
	d := h.connect(h.config())
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := d.WaitForState(ctx, Connected); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitForState(Connected) = %v, want context.DeadlineExceeded", err)
	}
}

func TestConnectRejectsBadConfig(t *testing.T) {
	if _, err := Connect(t.Context(), Config{ControlPlane: "cp:1"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Connect without DeviceID = %v, want ErrInvalidConfig", err)
	}
}
