package registry_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/embedetcd"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// With queues filled to their total bound in bytes, etcd still has room:
// assignment and presence writes succeed and etcd raises no alarm. The
// etcd here has a quota of 16 MiB and the queues a bound of 4 MiB, the
// relation of the defaults (512 MiB of etcd's 2 GiB) with room to spare.
func TestQueueFullLeavesRoomInEtcd(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv, err := embedetcd.Start(ctx, embedetcd.Config{Dir: t.TempDir(), UnsafeNoFsync: true, QuotaBackendBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli := testutil.EtcdClient(t, srv)
	reg := registry.New(cli, testPrefix)
	limits := registry.QueueLimits{PerDevice: 1000, PerDeviceBytes: 1 << 20, Total: 1_000_000, TotalBytes: 4 << 20}
	exp := time.Now().Add(time.Hour)
	full := 0
	for i := 0; full < 20; i++ {
		if i > 1000 {
			t.Fatal("the total bound in bytes was never reached")
		}
		_, _, err := reg.Enqueue(ctx, registry.QueuedMessage{DeviceID: fmt.Sprintf("made-up-%d", i%40), Payload: make([]byte, 64<<10), ExpiresAt: exp}, limits)
		switch {
		case errors.Is(err, registry.ErrQueueFull):
			full++
		case err != nil:
			t.Fatalf("enqueue %d: %v; want success or ErrQueueFull before etcd is full", i, err)
		}
	}
	u, err := reg.TotalQueueUsage(ctx)
	if err != nil || u.Bytes > limits.TotalBytes || u.Bytes < limits.TotalBytes*3/4 {
		t.Fatalf("total usage %+v, %v; want close to and at most %d bytes", u, err, limits.TotalBytes)
	}
	for i := range 200 {
		a := registry.Assignment{DeviceID: fmt.Sprintf("dev-%d", i), GroupID: "g1", Label: "eu", AssignedAt: time.Now().UTC()}
		if err := reg.PutAssignment(ctx, a); err != nil {
			t.Fatalf("assignment write with the queues full: %v", err)
		}
	}
	g, err := reg.NewRegistration(testExecutor(), fastRegistration(), nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := goRun(t, g.Run)
	testutil.WaitFor(t, testutil.DefaultTimeout, "registration", g.Registered)
	for i := range 200 {
		g.SetPresence(registry.Presence{DeviceID: fmt.Sprintf("dev-%d", i), ExecutorID: "ex-1", GroupID: "g1", Address: "127.0.0.1:7001", SessionID: "s", Since: time.Now().UTC()})
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "presence written", func() bool {
		p, err := reg.Presence(ctx, "dev-199")
		return err == nil && p.ExecutorID == "ex-1" && g.PresencePending() == 0
	})
	if err := stop(); err != nil {
		t.Errorf("registration: %v", err)
	}
	alarms, err := cli.AlarmList(ctx)
	if err != nil || len(alarms.Alarms) != 0 {
		t.Errorf("etcd alarms %v, %v; want none", alarms, err)
	}
}
