package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPrefix is where berth keeps its keys unless told otherwise.
const DefaultPrefix = "/berth"

// Key kinds under the prefix.
const (
	groupsDir      = "/groups/"
	executorsDir   = "/executors/"
	assignmentsDir = "/assignments/"
)

// Registry reads and writes berth's keys in etcd.
type Registry struct {
	cli    *clientv3.Client
	prefix string
}

// New returns a Registry over cli with keys under prefix ("" means
// DefaultPrefix). It does no I/O.
func New(cli *clientv3.Client, prefix string) *Registry {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Registry{cli: cli, prefix: strings.TrimSuffix(prefix, "/")}
}

// Prefix returns the key prefix.
func (r *Registry) Prefix() string { return r.prefix }

// Client returns the etcd client, for components of this package.
func (r *Registry) client() *clientv3.Client { return r.cli }

func (r *Registry) groupKey(id string) string      { return r.prefix + groupsDir + id }
func (r *Registry) executorKey(id string) string   { return r.prefix + executorsDir + id }
func (r *Registry) assignmentKey(id string) string { return r.prefix + assignmentsDir + id }

// PutGroup creates or replaces a group.
func (r *Registry) PutGroup(ctx context.Context, g Group) error {
	if g.State == "" {
		g.State = GroupActive
	}
	if err := g.Validate(); err != nil {
		return err
	}
	return r.putJSON(ctx, r.groupKey(g.ID), g)
}

// Group reads one group.
func (r *Registry) Group(ctx context.Context, id string) (Group, error) {
	var g Group
	err := r.getJSON(ctx, r.groupKey(id), &g)
	return g, err
}

// Groups lists every group, sorted by id.
func (r *Registry) Groups(ctx context.Context) ([]Group, error) {
	return listJSON[Group](ctx, r, r.prefix+groupsDir)
}

// DeleteGroup removes a group. It is not an error if it does not exist.
func (r *Registry) DeleteGroup(ctx context.Context, id string) error {
	if _, err := r.cli.Delete(ctx, r.groupKey(id)); err != nil {
		return fmt.Errorf("registry: delete group %s: %w", id, err)
	}
	return nil
}

// Executors lists every registered executor, sorted by id.
func (r *Registry) Executors(ctx context.Context) ([]Executor, error) {
	return listJSON[Executor](ctx, r, r.prefix+executorsDir)
}

// PutAssignment writes a device's assignment record.
func (r *Registry) PutAssignment(ctx context.Context, a Assignment) error {
	if err := a.Validate(); err != nil {
		return err
	}
	return r.putJSON(ctx, r.assignmentKey(a.DeviceID), a)
}

// Assignment reads one device's assignment record.
func (r *Registry) Assignment(ctx context.Context, deviceID string) (Assignment, error) {
	var a Assignment
	err := r.getJSON(ctx, r.assignmentKey(deviceID), &a)
	return a, err
}

// Assignments lists every assignment record, sorted by device id.
func (r *Registry) Assignments(ctx context.Context) ([]Assignment, error) {
	return listJSON[Assignment](ctx, r, r.prefix+assignmentsDir)
}

func (r *Registry) putJSON(ctx context.Context, key string, v any, opts ...clientv3.OpOption) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("registry: encode %s: %w", key, err)
	}
	if _, err := r.cli.Put(ctx, key, string(b), opts...); err != nil {
		return fmt.Errorf("registry: put %s: %w", key, err)
	}
	return nil
}

func (r *Registry) getJSON(ctx context.Context, key string, v any) error {
	resp, err := r.cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("registry: get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, strings.TrimPrefix(key, r.prefix))
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		return fmt.Errorf("registry: decode %s: %w", key, err)
	}
	return nil
}

// listPageSize bounds each range request of a list, so that a million
// assignment records never travel in one response.
const listPageSize = 1000

// listRange calls fn for every key under dir, as of one revision, in pages.
// It returns that revision.
func (r *Registry) listRange(ctx context.Context, dir string, fn func(key string, value []byte) error) (int64, error) {
	return r.listKVs(ctx, dir, func(kv *mvccpb.KeyValue) error { return fn(string(kv.Key), kv.Value) })
}

// listKVs is listRange with the whole key-value, revisions included.
func (r *Registry) listKVs(ctx context.Context, dir string, fn func(kv *mvccpb.KeyValue) error) (int64, error) {
	return r.listKVsAt(ctx, dir, 0, fn)
}

// listKVsAt is listKVs as of revision rev (0: the current one).
func (r *Registry) listKVsAt(ctx context.Context, dir string, rev int64, fn func(kv *mvccpb.KeyValue) error) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(dir)
	key := dir
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := r.cli.Get(ctx, key, opts...)
		if err != nil {
			return 0, fmt.Errorf("registry: list %s: %w", dir, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func listJSON[T any](ctx context.Context, r *Registry, dir string) ([]T, error) {
	var out []T
	_, err := r.listRange(ctx, dir, func(key string, value []byte) error {
		var v T
		if err := json.Unmarshal(value, &v); err != nil {
			return fmt.Errorf("registry: decode %s: %w", key, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}
