package executor_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"pgregory.net/rapid"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// cluster is executors of one group on one real etcd, with real
// Registrations, sharing one signing key.
type cluster struct {
	reg    *registry.Registry
	key    ed25519.PrivateKey
	signer *token.Signer
	verify *token.Verifier
}

// etcdExec is one executor of a cluster.
type etcdExec struct {
	*harness
	rr *registry.Registration
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	etcd := testutil.StartEtcd(t)
	cli := testutil.EtcdClient(t, etcd)
	key, signer, verifier := testKeys(t)
	return &cluster{reg: registry.New(cli, "/replace-test"), key: key, signer: signer, verify: verifier}
}

// start runs executor id (in testGroup) until the test ends.
func (c *cluster) start(t *testing.T, id, address string) *etcdExec {
	t.Helper()
	cfg := testConfig()
	cfg.ID, cfg.Address = id, address
	cfg.Registration = registry.RegistrationConfig{TTL: 2 * time.Second, Refresh: time.Second, MinInterval: 20 * time.Millisecond, RetryDelay: 50 * time.Millisecond}
	rr, err := c.reg.NewRegistration(registry.Executor{ID: id, GroupID: cfg.GroupID, Address: address, Capacity: cfg.Capacity}, cfg.Registration, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := executor.New(cfg, c.verify, rr, nil, executor.WithQueue(c.reg))
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	ctx, stop := context.WithCancel(context.Background())
	h := &harness{cfg: cfg, srv: srv, key: c.key, signer: c.signer, lis: lis, stop: stop, done: make(chan error, 1)}
	go func() { h.done <- srv.Run(ctx, lis) }()
	t.Cleanup(func() {
		stop()
		if err := h.wait(t); err != nil {
			t.Errorf("Run %s: %v", id, err)
		}
	})
	h.conn = h.dial(t)
	h.client = executorv1.NewExecutorServiceClient(h.conn)
	testutil.WaitFor(t, waitTimeout, id+" registered", rr.Registered)
	return &etcdExec{harness: h, rr: rr}
}

// presence reads the device's record: its session, or "" when there is
// none.
func (c *cluster) presence(t *testing.T, device string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	p, err := c.reg.Presence(ctx, device)
	if errors.Is(err, registry.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatalf("Presence(%s): %v", device, err)
	}
	return p.SessionID
}

// settled reports whether every executor wrote all it had to.
func settled(es ...*etcdExec) bool {
	for _, e := range es {
		if e.rr.PresencePending() > 0 {
			return false
		}
	}
	return true
}

// waitPresence waits until the device's record names session ("" for
// none) and the executors have nothing left to write.
func (c *cluster) waitPresence(t *testing.T, device, session string, es ...*etcdExec) {
	t.Helper()
	testutil.WaitFor(t, waitTimeout, fmt.Sprintf("%s's presence naming %q", device, session), func() bool {
		return settled(es...) && c.presence(t, device) == session
	})
}

// replacedGoodbye waits for d's Goodbye REPLACED and the end of its stream
// with ABORTED.
func replacedGoodbye(t *testing.T, d *device) {
	t.Helper()
	d.next(t, "Goodbye REPLACED", func(f *executorv1.ConnectResponse) bool {
		return f.GetGoodbye().GetReason() == executorv1.GoodbyeReason_GOODBYE_REASON_REPLACED
	})
	if err := d.closed(t); status.Code(err) != codes.Aborted {
		t.Fatalf("device %s: replaced stream ended with %v; want ABORTED", d.id, err)
	}
}

// open reports whether d's stream has not ended.
func (d *device) open() bool {
	select {
	case err := <-d.end:
		d.end <- err
		return false
	default:
		return true
	}
}

// TestReplaceAcrossExecutors: a device on A connects to B. A's stream gets
// Goodbye REPLACED, presence names B's session; when B's stream ends the
// record is deleted and A's never comes back. A stream refused on B (a
// token for another group) neither ends A's nor touches its record.
func TestReplaceAcrossExecutors(t *testing.T) {
	c := newCluster(t)
	a := c.start(t, "ex-a", "10.0.0.1:7000")
	b := c.start(t, "ex-b", "10.0.0.2:7000")

	dA, wA := a.connect(t, "d1")
	c.waitPresence(t, "d1", wA.GetSessionId(), a, b)

	// Refused on B: nothing is written, A's stream and record stay.
	refused := b.hello(t, "d1", b.tokenFor(t, "d1", "other-group"))
	if err := refused.closed(t); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stream with another group's token ended with %v; want FAILED_PRECONDITION", err)
	}
	c.waitPresence(t, "d1", wA.GetSessionId(), a, b)
	if !dA.open() {
		t.Fatal("a refused stream on B ended the device's stream on A")
	}

	dB, wB := b.connect(t, "d1")
	replacedGoodbye(t, dA)
	c.waitPresence(t, "d1", wB.GetSessionId(), a, b)
	testutil.WaitFor(t, waitTimeout, "A holding no stream", func() bool { return a.srv.Stats().Sessions == 0 })
	if got := a.srv.Stats().Replaced; got != 1 {
		t.Errorf("A's Stats().Replaced = %d; want 1", got)
	}

	dB.leave(t)
	if err := dB.closed(t); err != nil {
		t.Fatalf("B's stream: %v", err)
	}
	c.waitPresence(t, "d1", "", a, b)
	testutil.WaitFor(t, waitTimeout, "B holding no stream", func() bool { return b.srv.Stats().Sessions == 0 })
	if s := c.presence(t, "d1"); s != "" {
		t.Errorf("presence after both streams ended names %q; want none", s)
	}
}

// TestReplaceDuplicateEnds is the case: the real device is on A, a
// duplicate stream of it opens on B and ends. Before, the duplicate's end
// deleted the record while the device stayed connected on A, unreachable.
// Now A's stream is ended (the device is correctly offline, and no record
// says otherwise); when it reconnects, to either executor, it is reachable
// again.
func TestReplaceDuplicateEnds(t *testing.T) {
	c := newCluster(t)
	a := c.start(t, "ex-a", "10.0.0.1:7000")
	b := c.start(t, "ex-b", "10.0.0.2:7000")

	real1, w1 := a.connect(t, "d1")
	c.waitPresence(t, "d1", w1.GetSessionId(), a, b)
	dup, wd := b.connect(t, "d1")
	// The duplicate's presence is written before it ends: a stream that
	// ends before its presence was ever written leaves no trace (nothing
	// is written for it), and replaces nothing.
	c.waitPresence(t, "d1", wd.GetSessionId(), a, b)
	dup.cancel()
	replacedGoodbye(t, real1)
	c.waitPresence(t, "d1", "", a, b)
	testutil.WaitFor(t, waitTimeout, "no stream of d1 on either executor", func() bool {
		return a.srv.Stats().Sessions == 0 && b.srv.Stats().Sessions == 0
	})

	// The device comes back (the SDK reconnects after REPLACED): reachable.
	real2, w2 := a.connect(t, "d1")
	c.waitPresence(t, "d1", w2.GetSessionId(), a, b)
	ctx := serviceCtxFor(t, a.harness)
	internal := executorv1.NewExecutorInternalServiceClient(a.conn)
	got := make(chan error, 1)
	go func() {
		_, err := internal.Deliver(ctx, &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "m1", Payload: []byte("x")}})
		got <- err
	}()
	real2.ack(t, real2.message(t).GetMessageId())
	if err := <-got; err != nil {
		t.Fatalf("Deliver to the reconnected device: %v", err)
	}
}

// serviceCtxFor is harness.serviceCtx for an executor of a cluster.
func serviceCtxFor(t *testing.T, h *harness) context.Context {
	t.Helper()
	return h.serviceCtx(t)
}

// TestReplaceRacingConnects: streams of the same devices opened on A and
// B at once converge, for every device, to exactly one live stream, which
// the presence record names; the other gets Goodbye REPLACED.
func TestReplaceRacingConnects(t *testing.T) {
	c := newCluster(t)
	a := c.start(t, "ex-a", "10.0.0.1:7000")
	b := c.start(t, "ex-b", "10.0.0.2:7000")
	const n = 8
	type pair struct {
		onA, onB *device
		sA, sB   string
	}
	pairs := make([]pair, n)
	var wg sync.WaitGroup
	for i := range pairs {
		id := fmt.Sprintf("r%d", i)
		wg.Go(func() {
			dA := a.hello(t, id, a.token(t, id))
			dB := b.hello(t, id, b.token(t, id))
			pairs[i] = pair{onA: dA, onB: dB}
		})
	}
	wg.Wait()
	for i := range pairs {
		p := &pairs[i]
		// A stream replaced at once may end before its Welcome is read;
		// then its session is not needed.
		p.sA, p.sB = welcomeSession(p.onA), welcomeSession(p.onB)
	}
	for i, p := range pairs {
		id := fmt.Sprintf("r%d", i)
		testutil.WaitFor(t, waitTimeout, id+" converging to one stream", func() bool {
			if !settled(a, b) || p.onA.open() == p.onB.open() {
				return false
			}
			live := p.sB
			if p.onA.open() {
				live = p.sA
			}
			return live != "" && c.presence(t, id) == live
		})
		loser := p.onA
		if p.onA.open() {
			loser = p.onB
		}
		replacedGoodbye(t, loser)
	}
}

// welcomeSession returns the session of d's Welcome, waiting for it while
// the stream is open; "" if the stream ended without one.
func welcomeSession(d *device) string {
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		select {
		case f := <-d.frames:
			if w := f.GetWelcome(); w != nil {
				return w.GetSessionId()
			}
		case err := <-d.end:
			d.end <- err
			select {
			case f := <-d.frames:
				if w := f.GetWelcome(); w != nil {
					return w.GetSessionId()
				}
				continue
			default:
				return ""
			}
		case <-timer.C:
			return ""
		}
	}
}

// TestReplaceInterleavings runs random sequences of connects (to A or B)
// and stream ends, without waiting between them beyond each Welcome, and
// checks that each converges: at most one live stream, and the presence
// record names it (none when no stream is live).
func TestReplaceInterleavings(t *testing.T) {
	c := newCluster(t)
	execs := []*etcdExec{c.start(t, "ex-a", "10.0.0.1:7000"), c.start(t, "ex-b", "10.0.0.2:7000")}
	run := 0
	rapid.Check(t, func(rt *rapid.T) {
		run++
		id := fmt.Sprintf("p%d", run)
		type stream struct {
			d       *device
			session string
		}
		var streams []stream
		steps := rapid.IntRange(1, 6).Draw(rt, "steps")
		for range steps {
			var live []int
			for i, s := range streams {
				if s.d.open() {
					live = append(live, i)
				}
			}
			if len(live) > 0 && rapid.Bool().Draw(rt, "end") {
				s := streams[live[rapid.IntRange(0, len(live)-1).Draw(rt, "which")]]
				if rapid.Bool().Draw(rt, "clean") {
					s.d.leave(t)
				} else {
					s.d.cancel()
				}
				continue
			}
			e := execs[rapid.IntRange(0, 1).Draw(rt, "executor")]
			d := e.hello(t, id, e.token(t, id))
			streams = append(streams, stream{d: d, session: welcomeSession(d)})
		}
		var live string
		pctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		ok := testutil.Poll(pctx, 5*time.Millisecond, func() bool {
			if !settled(execs...) {
				return false
			}
			n := 0
			live = ""
			for _, s := range streams {
				if s.d.open() {
					n++
					live = s.session
				}
			}
			return n <= 1 && c.presence(t, id) == live
		}) == nil
		if !ok {
			var st []string
			for _, s := range streams {
				st = append(st, fmt.Sprintf("%s open=%v", s.session, s.d.open()))
			}
			rt.Fatalf("%s did not converge: streams %v, presence %q, pending A=%d B=%d, sessions A=%d B=%d", id, st, c.presence(t, id),
				execs[0].rr.PresencePending(), execs[1].rr.PresencePending(), execs[0].srv.Stats().Sessions, execs[1].srv.Stats().Sessions)
		}
		for _, s := range streams {
			if s.d.open() && s.session == "" {
				rt.Fatalf("a live stream without a Welcome")
			}
			// The executors' capacity is for the next runs.
			s.d.cancel()
		}
		c.waitPresence(t, id, "", execs...)
	})
}
