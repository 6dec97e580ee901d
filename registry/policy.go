package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// policyKey holds the placement policy in force.
const policyKey = "/policy"

// Policy reads the stored policy; ErrNotFound when none was ever applied.
func (r *Registry) Policy(ctx context.Context) (StoredPolicy, error) {
	resp, err := r.cli.Get(ctx, r.prefix+policyKey)
	if err != nil {
		return StoredPolicy{}, fmt.Errorf("registry: get policy: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return StoredPolicy{}, fmt.Errorf("%w: policy", ErrNotFound)
	}
	var p StoredPolicy
	if err := json.Unmarshal(resp.Kvs[0].Value, &p); err != nil {
		return StoredPolicy{}, fmt.Errorf("registry: decode policy: %w", err)
	}
	p.Version = resp.Kvs[0].ModRevision
	return p, nil
}

// PutPolicy stores p if the stored policy is still at version basedOn (0:
// no policy stored yet), atomically; otherwise it returns ErrConflict and
// changes nothing. It returns the new version.
func (r *Registry) PutPolicy(ctx context.Context, p StoredPolicy, basedOn int64) (int64, error) {
	return r.putPolicy(ctx, p, basedOn)
}

// putPolicy is PutPolicy that also makes the extra operations in the same
// transaction when it succeeds.
func (r *Registry) putPolicy(ctx context.Context, p StoredPolicy, basedOn int64, extra ...clientv3.Op) (int64, error) {
	if len(p.Document) == 0 || !json.Valid(p.Document) {
		return 0, fmt.Errorf("%w: policy document is not JSON", ErrInvalid)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return 0, fmt.Errorf("registry: encode policy: %w", err)
	}
	key := r.prefix + policyKey
	ops := append([]clientv3.Op{clientv3.OpPut(key, string(b))}, extra...)
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", basedOn)).
		Then(ops...).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("registry: put policy: %w", err)
	}
	if !resp.Succeeded {
		cur := int64(0)
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			cur = kvs[0].ModRevision
		}
		return 0, fmt.Errorf("%w: policy is at version %d, not %d; get it again and reapply", ErrConflict, cur, basedOn)
	}
	return resp.Header.Revision, nil
}

const tenantsDir = "/tenants/"

func (r *Registry) tenantKey(id string) string { return r.prefix + tenantsDir + id }

// PutTenant creates or replaces a tenant.
func (r *Registry) PutTenant(ctx context.Context, t Tenant) error {
	if err := t.Validate(); err != nil {
		return err
	}
	t.Attributes = maps.Clone(t.Attributes)
	return r.putJSON(ctx, r.tenantKey(t.ID), t)
}

// Tenant reads one tenant.
func (r *Registry) Tenant(ctx context.Context, id string) (Tenant, error) {
	var t Tenant
	err := r.getJSON(ctx, r.tenantKey(id), &t)
	return t, err
}

// Tenants lists every tenant, sorted by id.
func (r *Registry) Tenants(ctx context.Context) ([]Tenant, error) {
	return listJSON[Tenant](ctx, r, r.prefix+tenantsDir)
}

// DeleteTenant removes a tenant. It is not an error if it does not exist.
func (r *Registry) DeleteTenant(ctx context.Context, id string) error {
	if _, err := r.cli.Delete(ctx, r.tenantKey(id)); err != nil {
		return fmt.Errorf("registry: delete tenant %s: %w", id, err)
	}
	return nil
}

// LoadSnapshot reads groups, executors, tenants and the policy straight
// from etcd into a snapshot (assignment records are not part of it), for
// tools that have no cache.
func (r *Registry) LoadSnapshot(ctx context.Context) (*Snapshot, error) {
	p := parts{groups: map[string]Group{}, execs: map[string]Executor{}, tenants: map[string]Tenant{}}
	c := r.NewCache(nil)
	now := time.Now()
	var rev int64
	for _, dir := range []string{groupsDir, executorsDir, tenantsDir} {
		rv, err := r.listKVs(ctx, r.prefix+dir, func(kv *mvccpb.KeyValue) error {
			c.decode(string(kv.Key), kv.Value, kv.ModRevision, &p, devices{}, now)
			return nil
		})
		if err != nil {
			return nil, err
		}
		rev = max(rev, rv)
	}
	sp, err := r.Policy(ctx)
	switch {
	case err == nil:
		p.policy = &sp
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}
	return newSnapshot(rev, p), nil
}
