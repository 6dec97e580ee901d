package registry_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/registry"
)

// An idempotency key is taken once; MarkDelivered makes its record say the
// device acknowledged the message, which a later attempt reads back.
func TestIdempotencyMarkDelivered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	first := registry.IdempotencyRecord{MessageID: "M-1", ExpiresAt: time.Now().Add(time.Hour).UTC().Truncate(time.Second)}
	got, fresh, err := e.reg.RememberIdempotency(ctx, "dev-1", "job-1", first)
	if err != nil || !fresh || got != first {
		t.Fatalf("first RememberIdempotency = %+v, %v, %v; want the record, fresh", got, fresh, err)
	}
	got, fresh, err = e.reg.RememberIdempotency(ctx, "dev-1", "job-1", registry.IdempotencyRecord{MessageID: "M-2"})
	if err != nil || fresh || got != first {
		t.Fatalf("second RememberIdempotency = %+v, %v, %v; want the first record, not fresh", got, fresh, err)
	}
	if err := e.reg.MarkDelivered(ctx, "dev-1", "job-1", first); err != nil {
		t.Fatal(err)
	}
	got, fresh, err = e.reg.RememberIdempotency(ctx, "dev-1", "job-1", registry.IdempotencyRecord{MessageID: "M-3"})
	want := first
	want.Delivered = true
	if err != nil || fresh || got != want {
		t.Fatalf("after MarkDelivered = %+v, %v, %v; want %+v", got, fresh, err, want)
	}
	// Another device has keys of its own.
	if _, fresh, err := e.reg.RememberIdempotency(ctx, "dev-2", "job-1", first); err != nil || !fresh {
		t.Errorf("same key for dev-2: fresh %v, %v; want fresh", fresh, err)
	}
	if err := e.reg.MarkDelivered(ctx, "dev-1", "bad key", first); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("MarkDelivered with a bad key = %v; want ErrInvalid", err)
	}
}

// Enqueue refuses past each bound, in count and in bytes, per device and in
// all; removing messages (Dequeue, SweepExpired) frees what they were
// charged, through any registry.
func TestEnqueueBounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	exp := time.Now().Add(time.Hour)
	msg := func(device string, n int) registry.QueuedMessage {
		return registry.QueuedMessage{DeviceID: device, Payload: make([]byte, n), ExpiresAt: exp}
	}
	// What one message of 100 bytes of payload costs.
	probe, _, err := e.reg.Enqueue(ctx, msg("probe", 100), registry.QueueLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Dequeue(ctx, "probe", probe.Seq); err != nil {
		t.Fatal(err)
	}
	if u, err := e.reg.TotalQueueUsage(ctx); err != nil || u != (registry.QueueUsage{}) {
		t.Fatalf("usage after the probe left = %+v, %v; want zero", u, err)
	}
	size := probe.Size
	if size < 100 {
		t.Fatalf("a message of 100 bytes was charged %d bytes", size)
	}
	tests := []struct {
		name    string
		limits  registry.QueueLimits
		fill    []string // devices, one message each, all taken
		refused string   // the next device, refused
		want    string   // in the refusal
	}{
		{name: "count per device", limits: registry.QueueLimits{PerDevice: 2}, fill: []string{"d1", "d1"}, refused: "d1", want: "device d1 has 2 messages waiting (at most 2)"},
		{name: "bytes per device", limits: registry.QueueLimits{PerDeviceBytes: 2*size + size/2}, fill: []string{"d1", "d1"}, refused: "d1", want: "device d1 has"},
		{name: "count in all", limits: registry.QueueLimits{Total: 3}, fill: []string{"d1", "d2", "d3"}, refused: "d4", want: "3 messages"},
		{name: "bytes in all", limits: registry.QueueLimits{TotalBytes: registry.QueueShards * size}, fill: []string{"d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"}, refused: "d9", want: "waiting in all"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := fmt.Sprintf("%s-%d", testPrefix, i)
			reg := registry.New(e.cli, prefix)
			var stored []registry.QueuedMessage
			for _, d := range tt.fill {
				m, _, err := reg.Enqueue(ctx, msg(d, 100), tt.limits)
				if err != nil {
					t.Fatalf("filling: message for %s: %v", d, err)
				}
				stored = append(stored, m)
			}
			_, _, err := reg.Enqueue(ctx, msg(tt.refused, 100), tt.limits)
			if !errors.Is(err, registry.ErrQueueFull) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("past the bound: %v; want ErrQueueFull with %q", err, tt.want)
			}
			// Another replica sees the same counters.
			other := registry.New(e.cli, prefix)
			if _, _, err := other.Enqueue(ctx, msg(tt.refused, 100), tt.limits); !errors.Is(err, registry.ErrQueueFull) {
				t.Fatalf("past the bound through another registry: %v; want ErrQueueFull", err)
			}
			// Freeing the refused device's own message, or any one for a
			// bound in all, makes room for one.
			last := stored[len(stored)-1]
			if err := other.Dequeue(ctx, last.DeviceID, last.Seq); err != nil {
				t.Fatal(err)
			}
			if err := other.Dequeue(ctx, last.DeviceID, last.Seq); err != nil {
				t.Fatalf("second Dequeue of one message: %v; want nil", err)
			}
			if _, _, err := reg.Enqueue(ctx, msg(tt.refused, 100), tt.limits); err != nil {
				t.Fatalf("after a Dequeue: %v; want it queued", err)
			}
			// Sweeping everything frees everything.
			if _, err := reg.SweepExpired(ctx, exp.Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			if u, err := reg.TotalQueueUsage(ctx); err != nil || u != (registry.QueueUsage{}) {
				t.Errorf("total usage after the sweep = %+v, %v; want zero", u, err)
			}
			if u, err := reg.DeviceQueueUsage(ctx, "d1"); err != nil || u != (registry.QueueUsage{}) {
				t.Errorf("d1's usage after the sweep = %+v, %v; want zero", u, err)
			}
		})
	}
}

// Concurrent Sends never pass a bound: the counters are compared and
// updated in the enqueue transaction.
func TestEnqueueBoundsConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	exp := time.Now().Add(time.Hour)
	const senders, each = 8, 10
	// What one message of one byte to dev-N costs.
	probe, _, err := registry.New(e.cli, testPrefix+"-probe").Enqueue(ctx, registry.QueuedMessage{DeviceID: "dev-0", Payload: []byte("x"), EnqueuedAt: exp, ExpiresAt: exp}, registry.QueueLimits{})
	if err != nil {
		t.Fatal(err)
	}
	msgSize := probe.Size
	tests := []struct {
		name    string
		limits  registry.QueueLimits
		devices int
		want    int64 // messages taken
	}{
		{name: "one device, count", limits: registry.QueueLimits{PerDevice: 25}, devices: 1, want: 25},
		{name: "many devices, count in all", limits: registry.QueueLimits{Total: 37}, devices: 40, want: 37},
		// Messages of one byte of payload to dev-N cost the same; the
		// bound holds 25 and a half of them.
		{name: "one device, bytes", limits: registry.QueueLimits{PerDeviceBytes: 25*msgSize + msgSize/2}, devices: 1, want: 25},
		{name: "many devices, bytes in all", limits: registry.QueueLimits{TotalBytes: 8*(4*msgSize) + msgSize/2}, devices: 9, want: 32},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := registry.New(e.cli, fmt.Sprintf("%s-c%d", testPrefix, i))
			var taken, full atomic.Int64
			var wg sync.WaitGroup
			for s := range senders {
				// Each sender through its own registry, as replicas.
				r := registry.New(e.cli, reg.Prefix())
				wg.Go(func() {
					for k := range each {
						dev := fmt.Sprintf("dev-%d", (s*each+k)%tt.devices)
						// Fixed times: every message costs the same
						// (but for a digit of seq past 9).
						_, _, err := r.Enqueue(ctx, registry.QueuedMessage{DeviceID: dev, Payload: []byte("x"), EnqueuedAt: exp, ExpiresAt: exp}, tt.limits)
						switch {
						case err == nil:
							taken.Add(1)
						case errors.Is(err, registry.ErrQueueFull):
							full.Add(1)
						default:
							t.Errorf("Enqueue: %v", err)
						}
					}
				})
			}
			wg.Wait()
			if got := taken.Load(); got != tt.want {
				t.Errorf("taken %d (refused %d); want exactly %d", got, full.Load(), tt.want)
			}
			u, err := reg.TotalQueueUsage(ctx)
			if err != nil || u.Count != tt.want {
				t.Errorf("total usage %+v, %v; want %d messages", u, err, tt.want)
			}
			resp, err := e.cli.Get(ctx, reg.Prefix()+"/queue/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil || resp.Count != tt.want {
				t.Errorf("queued keys in etcd: %v, %v; want %d", resp, err, tt.want)
			}
		})
	}
}
