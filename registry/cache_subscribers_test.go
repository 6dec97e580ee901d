package registry_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// TestCacheOnAssignmentSubscribers runs a cache with two subscribers on a
// real etcd and changes assignment records step by step: every subscriber
// gets every record the watch delivers, in registration order, and nothing
// of the first load or of a deletion; a third subscriber added while the
// cache runs gets the records written after it.
func TestCacheOnAssignmentSubscribers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	put := func(ids ...string) {
		t.Helper()
		var ops []clientv3.Op
		for _, id := range ids {
			b, err := json.Marshal(registry.Assignment{DeviceID: id, GroupID: "g1", Label: "std", AssignedAt: time.Unix(0, 0).UTC()})
			if err != nil {
				t.Fatal(err)
			}
			ops = append(ops, clientv3.OpPut(testPrefix+"/assignments/"+id, string(b)))
		}
		// One transaction: the watch delivers its records in one response.
		if _, err := e.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatalf("put assignments %v: %v", ids, err)
		}
	}
	put("dev-0") // before Run: in the first load, for no subscriber

	// got receives "<subscriber>:<device>" for every call; subscribers
	// must not block, so it is buffered beyond what the test writes.
	got := make(chan string, 64)
	subscribe := func(c *registry.Cache, name string) {
		c.OnAssignment(func(a registry.Assignment) { got <- name + ":" + a.DeviceID })
	}
	c := e.reg.NewCache(nil)
	subscribe(c, "A")
	subscribe(c, "B")
	stop := goRun(t, c.Run)
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}

	for _, step := range []struct {
		name string
		do   func()
		want []string
	}{
		{
			name: "one record",
			do:   func() { put("dev-1") },
			want: []string{"A:dev-1", "B:dev-1"},
		},
		{
			name: "a deletion, then a record",
			do: func() {
				if _, err := e.cli.Delete(ctx, testPrefix+"/assignments/dev-1"); err != nil {
					t.Fatal(err)
				}
				put("dev-2")
			},
			want: []string{"A:dev-2", "B:dev-2"},
		},
		{
			name: "two records in one response",
			do:   func() { put("dev-3", "dev-4") },
			want: []string{"A:dev-3", "B:dev-3", "A:dev-4", "B:dev-4"},
		},
		{
			name: "a third subscriber while running",
			do: func() {
				subscribe(c, "C")
				put("dev-5")
			},
			want: []string{"A:dev-5", "B:dev-5", "C:dev-5"},
		},
	} {
		step.do()
		var calls []string
		timeout := time.After(testutil.DefaultTimeout)
		for len(calls) < len(step.want) {
			select {
			case s := <-got:
				calls = append(calls, s)
			case <-timeout:
				t.Fatalf("%s: subscribers called with %v within %v, want %v", step.name, calls, testutil.DefaultTimeout, step.want)
			}
		}
		if !slices.Equal(calls, step.want) {
			t.Errorf("%s: subscribers called with %v, want %v", step.name, calls, step.want)
		}
	}
	if err := stop(); err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
	close(got)
	var extra []string
	for s := range got {
		extra = append(extra, s)
	}
	if len(extra) > 0 {
		t.Errorf("subscribers called with %v after the last step, want no more calls", extra)
	}
}
