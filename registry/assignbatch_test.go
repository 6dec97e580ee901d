package registry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// TestAssignmentBatcherGroupCommits: concurrent writes all land, in fewer
// transactions than records; two writes of one device land as the later.
func TestAssignmentBatcherGroupCommits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	b := e.reg.NewAssignmentBatcher(5 * time.Second)
	const n = 600
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- b.PutAssignment(ctx, registry.Assignment{DeviceID: fmt.Sprintf("dev-%03d", i), GroupID: "g1", Label: "default"})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("PutAssignment: %v", err)
		}
	}
	got, err := e.reg.Assignments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d records, want %d", len(got), n)
	}
	st := b.Stats()
	if st.Puts != n || st.Batches >= n || st.Batches < n/registry.MaxBatchPuts {
		t.Errorf("stats %+v: want %d records in fewer than %d transactions, at least %d", st, n, n, n/registry.MaxBatchPuts)
	}
	t.Logf("%d records in %d transactions", st.Puts, st.Batches)

	// One device written twice at once: both succeed, the record is one
	// of the two (whichever was later), never an error for a duplicate key.
	var wg2 sync.WaitGroup
	for _, g := range []string{"g1", "g2"} {
		wg2.Go(func() {
			if err := b.PutAssignment(ctx, registry.Assignment{DeviceID: "twice", GroupID: g, Label: "default"}); err != nil {
				t.Errorf("PutAssignment twice (%s): %v", g, err)
			}
		})
	}
	wg2.Wait()
	if a, err := e.reg.Assignment(ctx, "twice"); err != nil || (a.GroupID != "g1" && a.GroupID != "g2") {
		t.Errorf("record of twice: %+v, %v", a, err)
	}
	if err := b.PutAssignment(ctx, registry.Assignment{DeviceID: "..", GroupID: "g1"}); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("invalid record: %v, want ErrInvalid", err)
	}
}

// TestAssignmentBatcherEtcdDown: with etcd gone, a write fails within the
// batcher's timeout, and a caller with a shorter context returns at its
// end; nothing is left running (goleak checks the package).
func TestAssignmentBatcherEtcdDown(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cli := goneEtcdClient(t)
	b := registry.New(cli, testPrefix).NewAssignmentBatcher(500 * time.Millisecond)
	if err := b.PutAssignment(ctx, registry.Assignment{DeviceID: "d1", GroupID: "g1"}); err == nil {
		t.Fatal("PutAssignment with etcd down succeeded")
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := b.PutAssignment(short, registry.Assignment{DeviceID: "d2", GroupID: "g1"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("PutAssignment with a short context: %v, want its deadline", err)
	}
	// The transaction in flight ends within the batcher's timeout.
	testutil.WaitFor(t, testutil.DefaultTimeout, "the batch to end", func() bool { return b.Stats().Batches == 2 })
}
