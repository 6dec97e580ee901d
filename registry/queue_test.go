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
