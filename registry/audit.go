package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// auditDir holds the audit trail: one key per change, named so that keys
// sort by time.
const auditDir = "/audit/"

// DefaultAuditLimit is how many audit entries are kept unless told.
const DefaultAuditLimit = 10_000

// AuditEntry is one change made through the control plane: who made it,
// with which RPC, on what, when, from where, and how it ended.
type AuditEntry struct {
	// ID sorts entries by time; it is set by AppendAudit.
	ID string `json:"id"`
	// At is when the call ended.
	At time.Time `json:"at"`
	// Who is the authenticated caller.
	Who string `json:"who"`
	// Method is the RPC's full name.
	Method string `json:"method"`
	// Target is what the call named (a group, an executor, a key…), if
	// anything.
	Target string `json:"target,omitempty"`
	// Peer is the caller's address.
	Peer string `json:"peer,omitempty"`
	// Outcome is the call's status code ("OK", "InvalidArgument"…).
	Outcome string `json:"outcome"`
}

// auditID makes a key that sorts by time: nanoseconds, zero padded, and a
// random suffix so that two replicas never collide.
func auditID(at time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%020d-%s", at.UnixNano(), hex.EncodeToString(b[:]))
}

// AppendAudit stores e (its ID set from e.At) and then deletes the oldest
// entries beyond limit (limit <= 0: DefaultAuditLimit).
func (r *Registry) AppendAudit(ctx context.Context, e AuditEntry, limit int) error {
	if limit <= 0 {
		limit = DefaultAuditLimit
	}
	e.ID = auditID(e.At)
	dir := r.prefix + auditDir
	if err := r.putJSON(ctx, dir+e.ID, e); err != nil {
		return err
	}
	cnt, err := r.cli.Get(ctx, dir, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("registry: count audit entries: %w", err)
	}
	extra := cnt.Count - int64(limit)
	if extra <= 0 {
		return nil
	}
	old, err := r.cli.Get(ctx, dir, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(extra),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return fmt.Errorf("registry: list old audit entries: %w", err)
	}
	if len(old.Kvs) == 0 {
		return nil
	}
	// One range delete up to and including the newest of the oldest.
	last := string(old.Kvs[len(old.Kvs)-1].Key)
	if _, err := r.cli.Delete(ctx, dir, clientv3.WithRange(last+"\x00")); err != nil {
		return fmt.Errorf("registry: trim audit entries: %w", err)
	}
	return nil
}

// AuditEntries returns at most limit entries, newest first, older than the
// entry whose ID is before ("": from the newest), and the ID to pass as
// before for the next page ("" when there is none).
func (r *Registry) AuditEntries(ctx context.Context, before string, limit int) ([]AuditEntry, string, error) {
	dir := r.prefix + auditDir
	end := clientv3.GetPrefixRangeEnd(dir)
	if before != "" {
		end = dir + before
	}
	resp, err := r.cli.Get(ctx, dir, clientv3.WithRange(end), clientv3.WithLimit(int64(limit)),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	if err != nil {
		return nil, "", fmt.Errorf("registry: list audit entries: %w", err)
	}
	out := make([]AuditEntry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e AuditEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			continue
		}
		e.ID = strings.TrimPrefix(string(kv.Key), dir)
		out = append(out, e)
	}
	next := ""
	if resp.More && len(resp.Kvs) > 0 {
		next = strings.TrimPrefix(string(resp.Kvs[len(resp.Kvs)-1].Key), dir)
	}
	return out, next, nil
}
