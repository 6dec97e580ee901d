package registry_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berthproject/berth/registry"
)

func TestNewPrefix(t *testing.T) {
	tests := []struct {
		prefix string
		want   string
	}{
		{prefix: "", want: registry.DefaultPrefix},
		{prefix: "/other", want: "/other"},
		{prefix: "/other/", want: "/other"},
	}
	for _, tt := range tests {
		if got := registry.New(nil, tt.prefix).Prefix(); got != tt.want {
			t.Errorf("New(cli, %q).Prefix() = %q, want %q", tt.prefix, got, tt.want)
		}
	}
}

func TestGroupRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)

	if got, err := e.reg.Groups(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Groups() on an empty registry = %v, %v; want none, nil", got, err)
	}

	b := registry.Group{ID: "b", Labels: []string{"eu"}, Capacity: 20, State: registry.GroupDraining}
	a := registry.Group{ID: "a", Labels: []string{"us", "gpu"}, Capacity: 10}
	for _, g := range []registry.Group{b, a} {
		if err := e.reg.PutGroup(ctx, g); err != nil {
			t.Fatalf("PutGroup(%+v): %v", g, err)
		}
	}
	// PutGroup stores an empty state as active.
	a.State = registry.GroupActive

	got, err := e.reg.Group(ctx, "a")
	if err != nil {
		t.Fatalf("Group(a): %v", err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("Group(a) = %+v, want %+v", got, a)
	}
	all, err := e.reg.Groups(ctx)
	if err != nil {
		t.Fatalf("Groups(): %v", err)
	}
	if want := []registry.Group{a, b}; !reflect.DeepEqual(all, want) {
		t.Errorf("Groups() = %+v, want %+v (sorted by id)", all, want)
	}

	// Put replaces.
	b.Capacity = 30
	if err := e.reg.PutGroup(ctx, b); err != nil {
		t.Fatalf("PutGroup(%+v): %v", b, err)
	}
	if got, err := e.reg.Group(ctx, "b"); err != nil || got.Capacity != 30 {
		t.Errorf("Group(b) after replace = %+v, %v; want capacity 30", got, err)
	}

	if err := e.reg.DeleteGroup(ctx, "a"); err != nil {
		t.Fatalf("DeleteGroup(a): %v", err)
	}
	if _, err := e.reg.Group(ctx, "a"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Group(a) after delete: err = %v, want ErrNotFound", err)
	}
	if err := e.reg.DeleteGroup(ctx, "a"); err != nil {
		t.Errorf("DeleteGroup(a) again = %v, want nil: deleting a missing group is not an error", err)
	}
	if all, err := e.reg.Groups(ctx); err != nil || len(all) != 1 || all[0].ID != "b" {
		t.Errorf("Groups() after delete = %+v, %v; want only b", all, err)
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	if _, err := e.reg.Group(ctx, "missing"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Group(missing): err = %v, want ErrNotFound", err)
	}
	if _, err := e.reg.Assignment(ctx, "missing"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Assignment(missing): err = %v, want ErrNotFound", err)
	}
}

func TestPutRejectsInvalid(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	if err := e.reg.PutGroup(ctx, registry.Group{ID: "g", Capacity: 0}); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("PutGroup(capacity 0): err = %v, want ErrInvalid", err)
	}
	if err := e.reg.PutAssignment(ctx, registry.Assignment{DeviceID: "d/1", GroupID: "g"}); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("PutAssignment(device d/1): err = %v, want ErrInvalid", err)
	}
	resp, err := e.cli.Get(ctx, testPrefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("count keys: %v", err)
	}
	if resp.Count != 0 {
		t.Errorf("%d keys under %s after rejected writes, want 0", resp.Count, testPrefix)
	}
}

func TestAssignmentRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	want := registry.Assignment{DeviceID: "dev-1", GroupID: "g1", Label: "eu", AssignedAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	if err := e.reg.PutAssignment(ctx, want); err != nil {
		t.Fatalf("PutAssignment: %v", err)
	}
	got, err := e.reg.Assignment(ctx, "dev-1")
	if err != nil {
		t.Fatalf("Assignment(dev-1): %v", err)
	}
	if !got.AssignedAt.Equal(want.AssignedAt) {
		t.Errorf("AssignedAt = %v, want %v", got.AssignedAt, want.AssignedAt)
	}
	got.AssignedAt = want.AssignedAt
	if got != want {
		t.Errorf("Assignment(dev-1) = %+v, want %+v", got, want)
	}
}

// TestKeyLayout reads the raw keys with the etcd client: the layout and the
// JSON field names are documented in the package comment, and operators read
// them with etcdctl.
func TestKeyLayout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	if err := e.reg.PutGroup(ctx, registry.Group{ID: "g1", Labels: []string{"eu"}, Capacity: 5}); err != nil {
		t.Fatalf("PutGroup: %v", err)
	}
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	if err := e.reg.PutAssignment(ctx, registry.Assignment{DeviceID: "dev-1", GroupID: "g1", Label: "eu", AssignedAt: at}); err != nil {
		t.Fatalf("PutAssignment: %v", err)
	}

	tests := []struct {
		key  string
		want map[string]any
	}{
		{
			key:  testPrefix + "/groups/g1",
			want: map[string]any{"id": "g1", "labels": []any{"eu"}, "capacity": 5.0, "state": "active"},
		},
		{
			key:  testPrefix + "/assignments/dev-1",
			want: map[string]any{"device": "dev-1", "group": "g1", "label": "eu", "assigned_at": "2025-03-01T12:00:00Z"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got := getRawJSON(t, e.cli, tt.key)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("value of %s = %v, want %v", tt.key, got, tt.want)
			}
		})
	}
}

func TestDefaultPrefixLayout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	reg := registry.New(e.cli, "")
	if err := reg.PutGroup(ctx, registry.Group{ID: "g1", Capacity: 1}); err != nil {
		t.Fatalf("PutGroup: %v", err)
	}
	if got := getRawJSON(t, e.cli, "/berth/groups/g1"); got["id"] != "g1" {
		t.Errorf("value of /berth/groups/g1 = %v, want group g1", got)
	}
}

func getRawJSON(t *testing.T, cli *clientv3.Client, key string) map[string]any {
	t.Helper()
	resp, err := cli.Get(testContext(t), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("Get(%s) returned %d keys, want 1", key, len(resp.Kvs))
	}
	var m map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil {
		t.Fatalf("value of %s is not JSON: %v: %q", key, err, resp.Kvs[0].Value)
	}
	return m
}

// putAssignments writes n assignment records dev-00000... straight to etcd,
// in transactions of the most operations etcd allows by default (128).
func putAssignments(t *testing.T, cli *clientv3.Client, prefix string, n int) []registry.Assignment {
	t.Helper()
	ctx := testContext(t)
	const batch = 128
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var all []registry.Assignment
	for start := 0; start < n; start += batch {
		var ops []clientv3.Op
		for i := start; i < min(start+batch, n); i++ {
			a := registry.Assignment{DeviceID: fmt.Sprintf("dev-%05d", i), GroupID: fmt.Sprintf("g%d", i%7), Label: "eu", AssignedAt: at}
			b, err := json.Marshal(a)
			if err != nil {
				t.Fatal(err)
			}
			ops = append(ops, clientv3.OpPut(prefix+"/assignments/"+a.DeviceID, string(b)))
			all = append(all, a)
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatalf("write assignments %d..: %v", start, err)
		}
	}
	return all
}

// TestAssignmentsPaginates lists more records than one range page
// (listPageSize = 1000) holds.
func TestAssignmentsPaginates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	const n = 2345
	want := putAssignments(t, e.cli, testPrefix, n)
	// A neighbour key sorting right after the directory must not leak in.
	if _, err := e.cli.Put(ctx, testPrefix+"/assignments0", "not a record"); err != nil {
		t.Fatal(err)
	}

	got, err := e.reg.Assignments(ctx)
	if err != nil {
		t.Fatalf("Assignments(): %v", err)
	}
	if len(got) != n {
		t.Fatalf("Assignments() returned %d records, want %d", len(got), n)
	}
	for i := range got {
		if got[i].DeviceID != want[i].DeviceID || got[i].GroupID != want[i].GroupID {
			t.Fatalf("Assignments()[%d] = %+v, want %+v (all records, sorted by device id)", i, got[i], want[i])
		}
	}
}

func TestListDecodeError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	if _, err := e.cli.Put(ctx, testPrefix+"/groups/bad", "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Groups(ctx); err == nil {
		t.Error("Groups() over an undecodable value = nil error, want a decode error")
	}
	if _, err := e.reg.Group(ctx, "bad"); err == nil || errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Group(bad) over an undecodable value = %v, want a decode error", err)
	}
}
