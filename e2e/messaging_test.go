package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/berthproject/berth/device"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/testutil"
)

// TestMessagingThousandDevices sends one message to each of 1,000
// simulated devices spread over four executors in two groups: every Send
// answers DELIVERED (the device acknowledged it), and the fleet counts
// 1,000 messages acknowledged.
func TestMessagingThousandDevices(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	const devices = 1000
	c := startCluster(t, 2, 2, 400)
	sim := start(t, "simulate", "simulate", "--controlplane", c.cpAddr, "--devices", strconv.Itoa(devices),
		"--every", "200ms", "--backoff-base", "50ms", "--backoff-max", "1s")
	line := sim.waitLine(90*time.Second, "1,000 devices connected on four executors", func(line string) bool {
		s, ok := parseSummary(line)
		return ok && s.fields["connected"] == devices && len(s.executors) == 4
	})
	t.Logf("connected: %s", line)

	mc := messagingClient(t, c.cpAddr)
	// Presence is written moments after a stream is admitted.
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "presence of every device", func() bool {
		for _, i := range []int{0, devices / 2, devices - 1} {
			d, err := getDevice(mc, simID(i))
			if err != nil || !d.GetOnline() {
				return false
			}
		}
		return true
	})
	var delivered, failed atomic.Int64
	var firstErr onceError
	start := time.Now()
	parallel(32, devices, func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		id := simID(i)
		var resp *messagingv1.SendResponse
		var err error
		// A device whose presence is not written yet answers UNAVAILABLE:
		// ONLINE_ONLY fails fast, so the sender retries, 50 times at most.
		attempts := 0
		_ = testutil.Poll(ctx, 100*time.Millisecond, func() bool {
			resp, err = mc.Send(ctx, &messagingv1.SendRequest{DeviceId: id, Payload: []byte("hello " + id),
				ContentType: "text/plain", Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY, IdempotencyKey: "thousand-" + id})
			attempts++
			return status.Code(err) != codes.Unavailable || attempts > 50
		})
		switch {
		case err != nil:
			failed.Add(1)
			firstErr.set(fmt.Errorf("send to %s: %w", id, err))
		case resp.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED:
			failed.Add(1)
			firstErr.set(fmt.Errorf("send to %s: status %v (%s), want DELIVERED", id, resp.GetStatus(), resp.GetDetail()))
		default:
			delivered.Add(1)
		}
	})
	t.Logf("%d sends delivered and acknowledged in %v, %d failed", delivered.Load(), time.Since(start).Round(time.Millisecond), failed.Load())
	if err := firstErr.get(); err != nil {
		t.Fatalf("%d of %d sends failed; first: %v", failed.Load(), devices, err)
	}
	line = sim.waitLine(30*time.Second, "1,000 messages acknowledged by the fleet", func(line string) bool {
		s, ok := parseSummary(line)
		return ok && s.fields["messages"] >= devices
	})
	if s, _ := parseSummary(line); s.fields["messages"] != devices {
		t.Errorf("the fleet acknowledged %d messages, want %d: %s", s.fields["messages"], devices, line)
	}
	// A call reaches a device and comes back with its echo.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := mc.Call(ctx, &messagingv1.CallRequest{DeviceId: simID(7), Payload: []byte("ping"), ContentType: "text/plain"})
	if err != nil || string(r.GetPayload()) != "ping" {
		t.Errorf("Call(%s) = %q, %v; want the echo \"ping\"", simID(7), r.GetPayload(), err)
	}

	sim.signal(syscall.SIGINT)
	if err := sim.wait(30 * time.Second); err != nil {
		t.Errorf("simulate exited with %v after SIGINT", err)
	}
}

// TestMessagingExecutorKill sends QUEUE messages to devices spread over
// three executors and kills one with SIGKILL while messages are in flight.
// The devices (device SDK clients in this process) record every message
// they get. Once they have reconnected elsewhere, the count must show:
// every message whose Send answered DELIVERED had been seen by its device
// when Send returned, every other one reaches its device (from the queue)
// or is still queued, nothing is lost, and duplicates are counted.
func TestMessagingExecutorKill(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	const (
		devices  = 90
		perDev   = 12
		total    = devices * perDev
		killAt   = total / 3
		senders  = 12
		victimID = "group-1-exec-1"
	)
	c := startCluster(t, 1, 3, 100)
	fl := startFleet(t, c.cpAddr, "kill-", devices)
	fl.waitConnected(t, 60*time.Second)
	if n := fl.onExecutor(victimID); n == 0 {
		t.Fatalf("%s holds no device: %v", victimID, fl.byExecutor())
	}
	mc := messagingClient(t, c.cpAddr)
	fl.waitPresence(t, mc, 30*time.Second)

	type outcome struct {
		delivered bool
		err       error
	}
	outcomes := make([]outcome, total)
	var sent atomic.Int64
	var killed sync.Once
	var notSeenAtAck atomic.Int64
	start := time.Now()
	// Message k goes to device k%devices, so each device gets its messages
	// from several senders, interleaved.
	parallel(senders, total, func(k int) {
		if sent.Add(1) == killAt {
			killed.Do(func() {
				t.Logf("kill -9 %s after %d sends started: %v", victimID, killAt, fl.byExecutor())
				c.executors[victimID].signal(syscall.SIGKILL)
			})
		}
		dev := fl.id(k % devices)
		payload := fmt.Sprintf("%s/%d", dev, k)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		req := &messagingv1.SendRequest{DeviceId: dev, Payload: []byte(payload), ContentType: "text/plain",
			Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE, Ttl: durationpb.New(time.Hour), IdempotencyKey: fmt.Sprintf("kill-%d", k)}
		var resp *messagingv1.SendResponse
		var err error
		// Retried with the same idempotency key, 20 attempts at most: a
		// retry never queues the message twice.
		attempts := 0
		_ = testutil.Poll(ctx, 100*time.Millisecond, func() bool {
			actx, acancel := context.WithTimeout(ctx, 10*time.Second)
			defer acancel()
			resp, err = mc.Send(actx, req)
			attempts++
			return err == nil || attempts == 20
		})
		if err != nil {
			outcomes[k] = outcome{err: err}
			return
		}
		first := !strings.HasPrefix(resp.GetDetail(), "duplicate")
		delivered := first && resp.GetStatus() == messagingv1.SendStatus_SEND_STATUS_DELIVERED
		if delivered && !fl.seen(payload) {
			notSeenAtAck.Add(1)
		}
		outcomes[k] = outcome{delivered: delivered}
	})
	var acked, queued int
	for k, o := range outcomes {
		switch {
		case o.err != nil:
			t.Fatalf("message %d: Send failed after retries: %v", k, o.err)
		case o.delivered:
			acked++
		default:
			queued++
		}
	}
	t.Logf("%d sends in %v: %d delivered and acknowledged, %d queued", total, time.Since(start).Round(time.Millisecond), acked, queued)
	if queued == 0 {
		t.Errorf("no Send answered QUEUED: the kill did not catch messages in flight")
	}
	if n := notSeenAtAck.Load(); n > 0 {
		// The SDK acknowledges a redelivered duplicate at once, even while
		// the first copy still waits in the Messages channel.
		t.Logf("%d messages answered DELIVERED before their application had taken them (a duplicate acknowledged by the SDK)", n)
	}

	// The devices of the dead executor reconnect to the others; every
	// message reaches its device, from the queue when it was not acked.
	fl.waitConnected(t, 60*time.Second, victimID)
	want := make([]string, total)
	for k := range total {
		want[k] = fmt.Sprintf("%s/%d", fl.id(k%devices), k)
	}
	fl.waitSeen(t, 60*time.Second, "every message seen by its device", want)
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "every queue empty", func() bool {
		for i := range devices {
			d, err := getDevice(mc, fl.id(i))
			if err != nil || d.GetQueuedMessages() != 0 {
				return false
			}
		}
		return true
	})
	st := fl.stats()
	t.Logf("count: %d messages sent, %d acknowledged at once, %d queued; %d seen by their devices, lost 0; "+
		"redelivered duplicates dropped by the SDK %d, seen twice by the application %d; devices reconnected %d times",
		total, acked, queued, st.distinct, st.sdkDuplicates, st.appDuplicates, st.connects-devices)
	if st.distinct != total {
		t.Errorf("devices saw %d distinct messages, want %d", st.distinct, total)
	}
	if st.appDuplicates != 0 {
		t.Errorf("the application saw %d messages twice; the SDK should drop duplicates", st.appDuplicates)
	}
	if st.misrouted != 0 {
		t.Errorf("devices saw %d messages sent to another device", st.misrouted)
	}
	for k, o := range outcomes {
		if o.delivered && !fl.seen(want[k]) {
			t.Errorf("message %d (%s) was acknowledged but its device never saw it", k, want[k])
		}
	}
}

// TestMessagingQueueSurvivesControlPlaneRestart queues messages for a
// device that is not connected, kills the control plane with SIGKILL and
// starts another: it still knows the queue, and the device, connecting
// through it, receives the messages in order.
func TestMessagingQueueSurvivesControlPlaneRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	const n = 10
	c := startCluster(t, 1, 1, 100)
	mc := messagingClient(t, c.cpAddr)
	const dev = "restart-dev"
	sendQueued(t, mc, dev, "before-restart", n)

	c.cp.signal(syscall.SIGKILL)
	if err := c.cp.wait(30 * time.Second); err == nil {
		t.Fatal("control plane exited cleanly after SIGKILL")
	}
	cp2 := c.restartControlPlane(t)
	mc2 := messagingClient(t, cp2)
	d, err := getDevice(mc2, dev)
	if err != nil {
		t.Fatalf("GetDevice(%s) on the new control plane: %v", dev, err)
	}
	if d.GetOnline() || d.GetQueuedMessages() != n {
		t.Fatalf("GetDevice(%s) on the new control plane: online %v, %d queued; want offline with %d queued", dev, d.GetOnline(), d.GetQueuedMessages(), n)
	}
	fl := startFleetIDs(t, cp2, []string{dev})
	got := fl.waitMessages(t, dev, n, 30*time.Second)
	checkOrder(t, got, "before-restart", n)
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "the queue empty", func() bool {
		d, err := getDevice(mc2, dev)
		return err == nil && d.GetQueuedMessages() == 0 && d.GetOnline()
	})
}

// TestMessagingQueuedInOrder queues messages for a device before it ever
// connects; ONLINE_ONLY to it fails fast meanwhile. When it comes online it
// receives them in the order they were sent, and later QUEUE sends reach it
// at once.
func TestMessagingQueuedInOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	const n = 25
	c := startCluster(t, 1, 2, 100)
	mc := messagingClient(t, c.cpAddr)
	const dev = "late-dev"
	sendQueued(t, mc, dev, "queued", n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := mc.Send(ctx, &messagingv1.SendRequest{DeviceId: dev, Payload: []byte("now"), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("ONLINE_ONLY Send to an offline device: %v, want UNAVAILABLE", err)
	}

	fl := startFleetIDs(t, c.cpAddr, []string{dev})
	got := fl.waitMessages(t, dev, n, 30*time.Second)
	checkOrder(t, got, "queued", n)
	fl.waitPresence(t, mc, 30*time.Second)
	resp, err := mc.Send(ctx, &messagingv1.SendRequest{DeviceId: dev, Payload: []byte("online"), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE})
	if err != nil || resp.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED {
		t.Errorf("QUEUE Send to the online device: %v, %v (%s); want DELIVERED", resp.GetStatus(), err, resp.GetDetail())
	}
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "the queue empty", func() bool {
		d, err := getDevice(mc, dev)
		return err == nil && d.GetQueuedMessages() == 0
	})
}

// TestMessagingRedeliversToOnlineDevice is the case of a QUEUE message
// whose immediate delivery fails while the device stays connected: its
// application takes the message but does not acknowledge it before the
// Send's attempt ends. The executor delivers it again without the device
// reconnecting; the SDK acknowledges the duplicate and the queue empties.
func TestMessagingRedeliversToOnlineDevice(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	c := startCluster(t, 1, 1, 100)
	mc := messagingClient(t, c.cpAddr)
	const dev = "slow-dev"
	fl := startFleetIDs(t, c.cpAddr, []string{dev})
	fl.setAckIf(func(m *device.Message) bool { return !strings.HasPrefix(string(m.Payload), "slow") })
	fl.waitConnected(t, 30*time.Second)
	fl.waitPresence(t, mc, 30*time.Second)

	// The Send waits at most three quarters of its deadline for the Ack.
	// Until the drain that follows the connect is over, it may deliver
	// the same message a second time, which the SDK acks: then the Send
	// answers DELIVERED, and another message is tried.
	sent := 0
	for {
		sent++
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := mc.Send(ctx, &messagingv1.SendRequest{DeviceId: dev, Payload: fmt.Appendf(nil, "slow-%d", sent), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE})
		cancel()
		if err == nil && resp.GetStatus() == messagingv1.SendStatus_SEND_STATUS_QUEUED {
			break
		}
		if err != nil || resp.GetStatus() != messagingv1.SendStatus_SEND_STATUS_DELIVERED || sent == 5 {
			t.Fatalf("Send %d = %v, %v; want QUEUED after the attempt timed out", sent, resp.GetStatus(), err)
		}
		t.Logf("Send %d answered DELIVERED: the connect's drain delivered it again and the SDK acked the duplicate", sent)
	}
	connects := fl.stats().connects
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "the unacknowledged message redelivered and its queue empty", func() bool {
		d, err := getDevice(mc, dev)
		return err == nil && d.GetQueuedMessages() == 0
	})
	st := fl.stats()
	if st.connects != connects {
		t.Errorf("the device reconnected (%d connects, was %d): the redelivery should come on the same stream", st.connects, connects)
	}
	if st.sdkDuplicates < 1 {
		t.Errorf("the SDK dropped %d duplicates, want the redelivery dropped (at least 1)", st.sdkDuplicates)
	}
	if st.distinct != sent || st.appDuplicates != 0 {
		t.Errorf("the application saw %d distinct messages and %d twice, want %d and 0", st.distinct, st.appDuplicates, sent)
	}
}
