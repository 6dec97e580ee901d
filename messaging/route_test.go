package messaging_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/testutil"
)

func TestSendRoutesFromCache(t *testing.T) {
	k := newKeys(t)
	ex1 := startExec(t, "e1", k.verifier)
	ex2 := startExec(t, "e2", k.verifier)
	f := startMessaging(t, k, testMessagingConfig(), ex1, ex2)
	ctx := ctxT(t)
	f.store.setPresence(ex1.presence("d1"))
	send := func() error {
		_, err := f.client.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")})
		return err
	}

	for i := range 3 {
		if err := send(); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	if n := f.store.presenceReads(); n != 1 {
		t.Errorf("3 Sends read the presence %d times; want once, then the cached route", n)
	}

	// The device moves to e2: e1 answers NOT_FOUND, the record is read
	// again and the same Send reaches e2.
	ex1.setDeliver(func(context.Context, *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		return nil, status.Error(codes.NotFound, "no stream for d1")
	})
	f.store.setPresence(ex2.presence("d1"))
	if err := send(); err != nil {
		t.Fatalf("Send after the device moved: %v", err)
	}
	if n1, n2 := len(ex1.deliveries()), len(ex2.deliveries()); n1 != 4 || n2 != 1 {
		t.Errorf("deliveries: e1 %d, e2 %d; want 4 (3 + the stale try) and 1", n1, n2)
	}
	if n := f.store.presenceReads(); n != 2 {
		t.Errorf("presence read %d times; want 2 (the stale route read again)", n)
	}
	if err := send(); err != nil {
		t.Fatalf("Send to the new route: %v", err)
	}
	if n := len(ex2.deliveries()); n != 2 {
		t.Errorf("e2 got %d deliveries; want 2", n)
	}

	// The device leaves: the cached route fails, the record says offline.
	ex2.setDeliver(func(context.Context, *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		return nil, status.Error(codes.NotFound, "no stream for d1")
	})
	f.store.clearPresence("d1")
	wantCode(t, "Send after the device left", send(), codes.Unavailable, "device d1 is not connected")
	wantCode(t, "Send again", send(), codes.Unavailable, "device d1 is not connected")
	if n := len(ex2.deliveries()); n != 3 {
		t.Errorf("e2 got %d deliveries; want 3: nothing is sent on a route known to be gone", n)
	}
}

func TestSendRouteCacheOff(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	cfg := testMessagingConfig()
	cfg.PresenceCacheSize = 0
	f := startMessaging(t, k, cfg, ex)
	f.store.setPresence(ex.presence("d1"))
	for i := range 3 {
		if _, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: "d1"}); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	if n := f.store.presenceReads(); n != 3 {
		t.Errorf("3 Sends without a cache read the presence %d times; want 3", n)
	}
}

// TestRouteKeptFreshByDeliveries: a route proved by acknowledged
// deliveries is not read again when its TTL passes; one left unused is.
func TestRouteKeptFreshByDeliveries(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	cfg := testMessagingConfig()
	cfg.PresenceCacheTTL = 200 * time.Millisecond
	// The route cache's clock is the test's: time passes when it says.
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	advance := func(d time.Duration) { clock.Add(int64(d)) }
	f := startMessagingAt(t, k, cfg, now, ex)
	f.store.setPresence(ex.presence("d1"))
	send := func() {
		t.Helper()
		if _, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: "d1"}); err != nil {
			t.Fatal(err)
		}
	}
	send()
	// A send every 50ms for four TTLs: each acknowledged delivery keeps
	// the route fresh.
	for range 16 {
		advance(50 * time.Millisecond)
		send()
	}
	if n := f.store.presenceReads(); n != 1 {
		t.Errorf("presence read %d times while deliveries kept the route fresh; want 1", n)
	}
	advance(300 * time.Millisecond) // past the TTL, unused
	send()
	if n := f.store.presenceReads(); n != 2 {
		t.Errorf("presence read %d times after the route went unused past its TTL; want 2", n)
	}
}

// TestSendFollowsReplacement: a record read just now (no cache) names a
// session that a newer one replaces before the delivery reaches it; its
// executor answers NOT_FOUND, the record is read again and the same Send
// reaches the newer session. A record that still names the failed session
// is not tried twice.
func TestSendFollowsReplacement(t *testing.T) {
	k := newKeys(t)
	ex1 := startExec(t, "e1", k.verifier)
	ex2 := startExec(t, "e2", k.verifier)
	cfg := testMessagingConfig()
	cfg.PresenceCacheSize = 0
	f := startMessaging(t, k, cfg, ex1, ex2)
	f.store.setPresence(ex1.presence("d1"))
	ex1.setDeliver(func(context.Context, *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		// Replaced on e2 between the read and the delivery.
		f.store.setPresence(ex2.presence("d1"))
		return nil, status.Error(codes.NotFound, "no stream for d1")
	})
	if _, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: "d1"}); err != nil {
		t.Fatalf("Send while the device was replaced: %v", err)
	}
	if n1, n2 := len(ex1.deliveries()), len(ex2.deliveries()); n1 != 1 || n2 != 1 {
		t.Errorf("deliveries: e1 %d, e2 %d; want 1 and 1", n1, n2)
	}
	if n := f.store.presenceReads(); n != 2 {
		t.Errorf("presence read %d times; want 2", n)
	}

	ex2.setDeliver(func(context.Context, *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		return nil, status.Error(codes.NotFound, "no stream for d1")
	})
	if _, err := f.client.Send(ctxT(t), &messagingv1.SendRequest{DeviceId: "d1"}); status.Code(err) == codes.OK {
		t.Fatal("Send to a session that is gone while its record stays: OK; want an error")
	}
	if n := len(ex2.deliveries()); n != 2 {
		t.Errorf("e2 got %d deliveries; want 2: the same stale session is not tried twice", n)
	}
}

// TestSendTriesLastKnownRoute: when the registry cannot say where a device
// is (etcd unreachable) or has lost its record (with its executor's lease,
// while etcd was away) although the device never left, a Send tries where
// the device was last seen, and its executor delivers; only when that
// executor no longer holds it is the device "not connected". GetDevice
// keeps telling what the registry says.
func TestSendTriesLastKnownRoute(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	cfg := testMessagingConfig()
	cfg.PresenceCacheTTL = time.Nanosecond // every cached route is past its TTL
	f := startMessaging(t, k, cfg, ex)
	ctx := ctxT(t)
	send := func() error {
		_, err := f.client.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")})
		return err
	}
	f.store.setPresence(ex.presence("d1"))
	if err := send(); err != nil {
		t.Fatalf("Send: %v", err)
	}
	f.store.clearPresence("d1") // the record went with the lease
	if err := send(); err != nil {
		t.Fatalf("Send with the record lost: %v", err)
	}
	f.store.setFail(status.Error(codes.Unavailable, "etcd unreachable"))
	if err := send(); err != nil {
		t.Fatalf("Send with the registry unreachable: %v", err)
	}
	if n := len(ex.deliveries()); n != 3 {
		t.Fatalf("e1 got %d deliveries, want 3", n)
	}
	f.store.setFail(nil)
	if resp, err := f.client.GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: "d1"}); status.Code(err) != codes.NotFound || resp.GetOnline() {
		t.Errorf("GetDevice with no record: %v, online %v; want the registry's answer, NOT_FOUND", err, resp.GetOnline())
	}
	// The device did leave: e1 says so, and the Send answers "not
	// connected" after reading the record again; the next Send does not
	// try e1.
	ex.setDeliver(func(context.Context, *executorv1.DeliverRequest) (*executorv1.DeliverResponse, error) {
		return nil, status.Error(codes.NotFound, "no stream for d1")
	})
	wantCode(t, "Send after the device left", send(), codes.Unavailable, "device d1 is not connected")
	wantCode(t, "Send again", send(), codes.Unavailable, "device d1 is not connected")
	if n := len(ex.deliveries()); n != 4 {
		t.Errorf("e1 got %d deliveries, want 4: the failed try, then none", n)
	}
}

// TestSendAndSubscribeUseInternalAddress: for an executor that serves
// control planes on an internal listener, Sends (the first, read from the
// record, and the next, from the cached route) and the publish stream go
// to its internal address, never its device port.
func TestSendAndSubscribeUseInternalAddress(t *testing.T) {
	k := newKeys(t)
	ex := startExec(t, "e1", k.verifier)
	ex.splitPorts(t)
	f := startMessaging(t, k, testMessagingConfig(), ex)
	ctx := ctxT(t)
	f.store.setPresence(ex.presence("d1"))
	for i := range 2 {
		if _, err := f.client.Send(ctx, &messagingv1.SendRequest{DeviceId: "d1", Payload: []byte("x")}); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	if n, reads := len(ex.deliveries()), f.store.presenceReads(); n != 2 || reads != 1 {
		t.Errorf("%d deliveries at the internal address, %d presence reads; want 2, and 1 (the second Send from the cached route)", n, reads)
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if _, err := f.client.Subscribe(sctx, &messagingv1.SubscribeRequest{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "a publish stream to the internal address", func() bool { return ex.subscribers() == 1 })
}
