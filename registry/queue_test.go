package registry_test

import (
	"errors"
	"testing"
	"time"

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

// Enqueue refuses past the per-device and the total bounds, and counts
// what it queued itself between two counts of the whole queue.
func TestEnqueueBounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	limits := registry.QueueLimits{PerDevice: 2, Total: 3}
	exp := time.Now().Add(time.Hour)
	enqueue := func(device string) error {
		_, _, err := e.reg.Enqueue(ctx, registry.QueuedMessage{DeviceID: device, Payload: []byte("x"), ExpiresAt: exp}, limits)
		return err
	}
	for _, d := range []string{"dev-1", "dev-1"} {
		if err := enqueue(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := enqueue("dev-1"); !errors.Is(err, registry.ErrQueueFull) {
		t.Fatalf("third message for dev-1 = %v, want ErrQueueFull (per device)", err)
	}
	if err := enqueue("dev-2"); err != nil {
		t.Fatal(err)
	}
	// Three waiting in all, within one count interval: this registry's
	// own enqueues are counted.
	if err := enqueue("dev-3"); !errors.Is(err, registry.ErrQueueFull) {
		t.Fatalf("fourth message in all = %v, want ErrQueueFull (total)", err)
	}
	// Another registry (another replica) counts etcd afresh.
	other := registry.New(e.cli, testPrefix)
	if _, _, err := other.Enqueue(ctx, registry.QueuedMessage{DeviceID: "dev-3", Payload: []byte("x"), ExpiresAt: exp}, limits); !errors.Is(err, registry.ErrQueueFull) {
		t.Fatalf("fourth message through another registry = %v, want ErrQueueFull (total)", err)
	}
	// Once a message is removed, a registry that counts afresh takes one.
	if err := e.reg.Dequeue(ctx, "dev-2", 1); err != nil {
		t.Fatal(err)
	}
	fresh := registry.New(e.cli, testPrefix)
	if _, _, err := fresh.Enqueue(ctx, registry.QueuedMessage{DeviceID: "dev-3", Payload: []byte("x"), ExpiresAt: exp}, limits); err != nil {
		t.Fatalf("after a dequeue, through a registry counting afresh: %v, want it queued", err)
	}
}
