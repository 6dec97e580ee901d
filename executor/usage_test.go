package executor_test

import (
	"sync"
	"testing"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// usageLog is an executor.UsageRecorder that remembers what it was told.
type usageLog struct {
	mu  sync.Mutex
	got map[string]registry.Usage
}

func (u *usageLog) AddUsage(device string, x registry.Usage) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.got[device] = u.got[device].Add(x)
}

func (u *usageLog) of(device string) registry.Usage {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got[device]
}

// A stream's messages and publishes, both ways, and its connect are
// reported once it ends; a stream that carried nothing reports only its
// connect.
func TestUsageReportedWhenStreamEnds(t *testing.T) {
	log := &usageLog{got: map[string]registry.Usage{}}
	h := startWith(t, nil, executor.WithUsage(log))
	d, _ := h.connect(t, "d1")
	idle, _ := h.connect(t, "d2")

	res := h.deliverAsync(h.serviceCtx(t), &executorv1.DeliverRequest{DeviceId: "d1", Message: &executorv1.Message{MessageId: "m1", Payload: []byte("12345")}})
	d.message(t)
	d.ack(t, "m1")
	if r := result(t, res); r.err != nil {
		t.Fatalf("Deliver: %v", r.err)
	}
	if err := d.send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Publish{Publish: &executorv1.Publish{Topic: "t", Payload: []byte("abc")}}}); err != nil {
		t.Fatal(err)
	}
	if got := log.of("d1"); got != (registry.Usage{}) {
		t.Errorf("usage reported while the stream is open: %+v", got)
	}
	d.leave(t)
	idle.leave(t)
	want := registry.Usage{Connects: 1, Messages: 2, Bytes: 8}
	testutil.WaitFor(t, testutil.DefaultTimeout, "d1's usage reported", func() bool { return log.of("d1") == want })
	testutil.WaitFor(t, testutil.DefaultTimeout, "d2's connect reported", func() bool { return log.of("d2") == registry.Usage{Connects: 1} })
}
