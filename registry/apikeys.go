package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// apiKeysDir holds the API keys of services and operators, one key per id.
// Only a hash of each secret is stored.
const apiKeysDir = "/apikeys/"

// APIKey is a stored API key: who it names, what it may do, and the
// SHA-256 of its secret (never the secret).
type APIKey struct {
	// ID is the public part of the key, the part before the dot.
	ID string `json:"id"`
	// Name says whose key it is (free text, shown in audit entries).
	Name string `json:"name"`
	// Roles are the roles it carries.
	Roles []string `json:"roles"`
	// Tenants, when not empty, limit a service key to devices of these
	// tenants.
	Tenants []string `json:"tenants,omitempty"`
	// Topics, when not empty, limit a service key's subscriptions to these
	// topics.
	Topics []string `json:"topics,omitempty"`
	// SecretHash is the base64url SHA-256 of the secret part.
	SecretHash string `json:"secret_sha256"`
	// CreatedAt is when it was created.
	CreatedAt time.Time `json:"created_at"`
	// CreatedBy says who created it.
	CreatedBy string `json:"created_by,omitempty"`
	// Disabled keys are refused; revoking a key disables it.
	Disabled bool `json:"disabled,omitempty"`
}

func (r *Registry) apiKeyKey(id string) string { return r.prefix + apiKeysDir + id }

// CreateAPIKey stores a new API key; ErrConflict when its id exists.
func (r *Registry) CreateAPIKey(ctx context.Context, k APIKey) error {
	if !ValidID(k.ID) {
		return fmt.Errorf("%w: api key id %q", ErrInvalid, k.ID)
	}
	b, err := json.Marshal(k)
	if err != nil {
		return fmt.Errorf("registry: encode api key: %w", err)
	}
	key := r.apiKeyKey(k.ID)
	resp, err := r.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("registry: create api key %s: %w", k.ID, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: api key %s exists", ErrConflict, k.ID)
	}
	return nil
}

// APIKeys lists the stored API keys, sorted by id.
func (r *Registry) APIKeys(ctx context.Context) ([]APIKey, error) {
	return listJSON[APIKey](ctx, r, r.prefix+apiKeysDir)
}

// RevokeAPIKey disables an API key and returns it as stored; ErrNotFound
// for an unknown id. Revoking a revoked key changes nothing.
func (r *Registry) RevokeAPIKey(ctx context.Context, id string) (APIKey, error) {
	if !ValidID(id) {
		return APIKey{}, fmt.Errorf("%w: api key id %q", ErrInvalid, id)
	}
	key := r.apiKeyKey(id)
	for {
		resp, err := r.cli.Get(ctx, key)
		if err != nil {
			return APIKey{}, fmt.Errorf("registry: get api key %s: %w", id, err)
		}
		if len(resp.Kvs) == 0 {
			return APIKey{}, fmt.Errorf("%w: api key %s", ErrNotFound, id)
		}
		var k APIKey
		if err := json.Unmarshal(resp.Kvs[0].Value, &k); err != nil {
			return APIKey{}, fmt.Errorf("registry: decode api key %s: %w", id, err)
		}
		if k.Disabled {
			return k, nil
		}
		k.Disabled = true
		b, err := json.Marshal(k)
		if err != nil {
			return APIKey{}, fmt.Errorf("registry: encode api key: %w", err)
		}
		tx, err := r.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return APIKey{}, fmt.Errorf("registry: revoke api key %s: %w", id, err)
		}
		if tx.Succeeded {
			return k, nil
		}
	}
}

// APIKeyView is a watch-fed, in-memory copy of the API keys, so that a
// control plane checks a caller's key without an etcd round trip; a
// revocation reaches it within the watch's delay. Like the Cache, it lists
// at a revision, watches from the next, and lists again when the watch
// fails.
type APIKeyView struct {
	reg *Registry
	log *slog.Logger

	mu   sync.RWMutex
	keys map[string]APIKey

	syncState
}

// NewAPIKeyView returns a view of r's API keys. It does no I/O; Run does.
func (r *Registry) NewAPIKeyView(log *slog.Logger) *APIKeyView {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &APIKeyView{reg: r, log: log, keys: map[string]APIKey{}}
	v.first = make(chan struct{})
	return v
}

// APIKey returns a stored key by id.
func (v *APIKeyView) APIKey(id string) (APIKey, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	k, ok := v.keys[id]
	return k, ok
}

// Run keeps the view in sync until ctx is cancelled, then returns nil.
func (v *APIKeyView) Run(ctx context.Context) error {
	return listWatch(ctx, &v.syncState, v.log, "api key view", v.load, v.watch, nil)
}

func (v *APIKeyView) load(ctx context.Context) (int64, error) {
	keys := map[string]APIKey{}
	dir := v.reg.prefix + apiKeysDir
	rev, err := v.reg.listKVs(ctx, dir, func(kv *mvccpb.KeyValue) error {
		v.put(keys, strings.TrimPrefix(string(kv.Key), dir), kv.Value)
		return nil
	})
	if err != nil {
		return 0, err
	}
	v.mu.Lock()
	v.keys = keys
	v.mu.Unlock()
	return rev, nil
}

// put files one value into keys; an undecodable value reads as absent (a
// key that cannot be read cannot authenticate).
func (v *APIKeyView) put(keys map[string]APIKey, id string, value []byte) {
	var k APIKey
	if err := json.Unmarshal(value, &k); err != nil {
		delete(keys, id)
		v.log.Warn("registry: skipping undecodable api key", "id", id, "err", err)
		return
	}
	keys[id] = k
}

func (v *APIKeyView) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	dir := v.reg.prefix + apiKeysDir
	for resp := range v.reg.client().Watch(wctx, dir, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return err
		}
		v.mu.Lock()
		for _, ev := range resp.Events {
			id := strings.TrimPrefix(string(ev.Kv.Key), dir)
			if ev.Type == mvccpb.DELETE {
				delete(v.keys, id)
				continue
			}
			v.put(v.keys, id, ev.Kv.Value)
		}
		v.mu.Unlock()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errWatchClosed
}
