package registry_test

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// Executors adding usage for the same devices at once lose nothing: every
// addition is in the records exactly once, and the cache follows them.
func TestAddUsageConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Every write collides with the others', so most devices are written
	// one transaction each: a few thousand transactions, slow when other
	// test packages load the machine. The bound is for a hang, not speed.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, _ := startCache(t, e.reg)
	now := time.Now()
	const writers, rounds, devices = 4, 3, 120 // more devices than one transaction takes
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for range rounds {
				batch := map[string]registry.Usage{}
				for d := range devices {
					batch[fmt.Sprintf("dev-%03d", d)] = registry.Usage{Connects: 1, Messages: int64(w + 1), Bytes: 100}
				}
				// The same instant for every write: no decay between them.
				if left, err := e.reg.AddUsage(ctx, batch, now); err != nil {
					t.Errorf("AddUsage: %v (%d left)", err, len(left))
					return
				}
			}
		})
	}
	wg.Wait()
	wantMsgs := float64(rounds * (1 + 2 + 3 + 4))
	for d := range devices {
		id := fmt.Sprintf("dev-%03d", d)
		h, err := e.reg.History(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if h.Connects != writers*rounds || h.Messages != wantMsgs || h.Bytes != writers*rounds*100 {
			t.Fatalf("%s: %+v, want %d connects, %v messages, %d bytes", id, h, writers*rounds, wantMsgs, writers*rounds*100)
		}
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the cache holding the histories", func() bool {
		h, ok := c.History(fmt.Sprintf("dev-%03d", devices-1))
		return ok && h.Messages == wantMsgs
	})
}

// The recorder batches what executors report and writes it on Flush; a
// failed write keeps it for the next one.
func TestUsageRecorder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	u := e.reg.NewUsageRecorder(time.Hour, nil)
	u.AddUsage("dev-a", registry.Usage{Connects: 1, Messages: 3, Bytes: 30})
	u.AddUsage("dev-a", registry.Usage{Messages: 2, Bytes: 20})
	u.AddUsage("dev-b", registry.Usage{})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	u.Flush(cctx) // fails: the context is done
	if w, f := u.Written(); w != 0 || f != 1 {
		t.Fatalf("after a failed flush: written %d, failed %d; want 0, 1", w, f)
	}
	u.Flush(ctx)
	if w, _ := u.Written(); w != 1 {
		t.Fatalf("written %d records, want 1 (dev-b reported nothing)", w)
	}
	h, err := e.reg.History(ctx, "dev-a")
	if err != nil {
		t.Fatal(err)
	}
	if h.Connects != 1 || math.Abs(h.Messages-5) > 1e-6 || math.Abs(h.Bytes-50) > 1e-6 {
		t.Errorf("dev-a: %+v, want 1 connect, 5 messages, 50 bytes", h)
	}
	if _, err := e.reg.History(ctx, "dev-b"); err == nil {
		t.Error("dev-b has a record; it reported nothing")
	}
}
