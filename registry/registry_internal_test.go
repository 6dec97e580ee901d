package registry

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestListRangeOneRevision changes the directory while listRange is between
// pages: every page is read at the first page's revision, so the listing
// shows neither the new key nor the deletion.
func TestListRangeOneRevision(t *testing.T) {
	t.Parallel()
	r, cli, ctx := newInternalRegistry(t)
	const n = listPageSize + 500
	for start := 0; start < n; start += 128 {
		var ops []clientv3.Op
		for i := start; i < min(start+128, n); i++ {
			b, err := json.Marshal(Assignment{DeviceID: fmt.Sprintf("dev-%05d", i), GroupID: "g"})
			if err != nil {
				t.Fatal(err)
			}
			ops = append(ops, clientv3.OpPut(r.assignmentKey(fmt.Sprintf("dev-%05d", i)), string(b)))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	last := fmt.Sprintf("dev-%05d", n-1)

	var keys []string
	changed := false
	rev, err := r.listRange(ctx, r.prefix+assignmentsDir, func(key string, _ []byte) error {
		keys = append(keys, strings.TrimPrefix(key, r.prefix+assignmentsDir))
		if !changed {
			changed = true
			if _, err := cli.Put(ctx, r.assignmentKey("dev-99999"), `{}`); err != nil {
				return err
			}
			if _, err := cli.Delete(ctx, r.assignmentKey(last)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listRange: %v", err)
	}
	if len(keys) != n {
		t.Fatalf("listRange returned %d keys, want %d", len(keys), n)
	}
	for i, k := range keys {
		if want := fmt.Sprintf("dev-%05d", i); k != want {
			t.Fatalf("key %d = %s, want %s", i, k, want)
		}
	}
	resp, err := cli.Get(ctx, "any")
	if err != nil {
		t.Fatal(err)
	}
	if rev != resp.Header.Revision-2 {
		t.Errorf("listRange revision = %d, want %d: the revision before the two changes", rev, resp.Header.Revision-2)
	}
}
