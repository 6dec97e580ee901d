package registry

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TrustedEnrollment is an enrollment as the trust view holds it, with its
// CA certificates parsed (x509 kind).
type TrustedEnrollment struct {
	Enrollment
	// Pool holds the CA certificates of an x509 enrollment; nil otherwise.
	Pool *x509.CertPool
}

// TrustChange is what a trust view's subscribers hear about: a device
// revoked, or an enrollment disabled or deleted. Exactly one field is set.
type TrustChange struct {
	// RevokedDevice is a device just revoked.
	RevokedDevice string
	// ClosedEnrollment is an enrollment just disabled or deleted.
	ClosedEnrollment string
}

// TrustView is a watch-fed, in-memory copy of the enrollments and revoked
// devices, as Cache is of the fleet: it lists both at one revision, watches
// from the next, and lists again after a failed watch. Reads never touch
// etcd, so Assign and an executor's Hello check identities without a round
// trip; a change reaches every view within the watch's latency.
type TrustView struct {
	reg *Registry
	log *slog.Logger
	syncState

	mu          sync.RWMutex
	enrollments map[string]TrustedEnrollment
	revoked     map[string]Revocation
	subs        []func(TrustChange)
	// generation counts the changes to the enrollments (each load, each
	// watched put or delete of one), so that what was derived from them
	// can tell it is stale.
	generation atomic.Uint64
}

// NewTrustView returns a view of r's enrollments and revocations. It does
// no I/O; Run does.
func (r *Registry) NewTrustView(log *slog.Logger) *TrustView {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &TrustView{reg: r, log: log, enrollments: map[string]TrustedEnrollment{}, revoked: map[string]Revocation{}}
	v.first = make(chan struct{})
	return v
}

// OnChange subscribes fn to revocations and to enrollments disabled or
// deleted, from the watch and from every listing (a listing reports every
// revoked device and every disabled enrollment, so nothing missed during a
// relist stays unseen). fn runs on the view's goroutine and must not block.
// Subscribe before Run.
func (v *TrustView) OnChange(fn func(TrustChange)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.subs = append(slices.Clip(v.subs), fn)
}

// Enrollment returns an enrollment by id.
func (v *TrustView) Enrollment(id string) (TrustedEnrollment, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e, ok := v.enrollments[id]
	return e, ok
}

// EnrollmentGeneration changes whenever an enrollment is added, changed or
// removed (never otherwise): results derived from the enrollments, such as
// verified certificate chains, hold while it stays the same.
func (v *TrustView) EnrollmentGeneration() uint64 { return v.generation.Load() }

// X509Enrollments returns the x509 enrollments, disabled ones included,
// sorted by id.
func (v *TrustView) X509Enrollments() []TrustedEnrollment {
	v.mu.RLock()
	out := make([]TrustedEnrollment, 0, len(v.enrollments))
	for _, e := range v.enrollments {
		if e.Kind == EnrollmentX509 && e.Pool != nil {
			out = append(out, e)
		}
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b TrustedEnrollment) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Revoked reports whether a device is revoked.
func (v *TrustView) Revoked(deviceID string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	_, ok := v.revoked[deviceID]
	return ok
}

// Run keeps the view in sync until ctx is cancelled; it returns nil then.
func (v *TrustView) Run(ctx context.Context) error {
	return listWatch(ctx, &v.syncState, v.log, "trust view", v.load, v.watch, nil)
}

// load lists both directories at one revision and replaces the contents.
func (v *TrustView) load(ctx context.Context) (int64, error) {
	enr := map[string]TrustedEnrollment{}
	rev, err := v.reg.listKVsAt(ctx, v.reg.prefix+enrollmentsDir, 0, func(kv *mvccpb.KeyValue) error {
		v.decodeEnrollment(enr, string(kv.Key), kv.Value)
		return nil
	})
	if err != nil {
		return 0, err
	}
	rvk := map[string]Revocation{}
	if _, err := v.reg.listKVsAt(ctx, v.reg.prefix+revokedDir, rev, func(kv *mvccpb.KeyValue) error {
		v.decodeRevocation(rvk, string(kv.Key), kv.Value)
		return nil
	}); err != nil {
		return 0, err
	}
	v.mu.Lock()
	v.enrollments, v.revoked = enr, rvk
	v.generation.Add(1)
	subs := v.subs
	v.mu.Unlock()
	var changes []TrustChange
	for id := range rvk {
		changes = append(changes, TrustChange{RevokedDevice: id})
	}
	for id, e := range enr {
		if e.Disabled {
			changes = append(changes, TrustChange{ClosedEnrollment: id})
		}
	}
	notify(subs, changes)
	return rev, nil
}

func notify(subs []func(TrustChange), changes []TrustChange) {
	for _, c := range changes {
		for _, fn := range subs {
			fn(c)
		}
	}
}

// decodeEnrollment files one enrollment into m (value nil: deleted). A
// value that does not decode or validate reads as absent.
func (v *TrustView) decodeEnrollment(m map[string]TrustedEnrollment, key string, value []byte) {
	id := strings.TrimPrefix(key, v.reg.prefix+enrollmentsDir)
	delete(m, id)
	if value == nil {
		return
	}
	var e Enrollment
	if err := json.Unmarshal(value, &e); err != nil {
		v.log.Warn("registry: skipping undecodable enrollment", "key", key, "err", err)
		return
	}
	if err := e.Validate(); err != nil || e.ID != id {
		v.log.Warn("registry: skipping invalid enrollment", "key", key, "err", err)
		return
	}
	te := TrustedEnrollment{Enrollment: e}
	if e.Kind == EnrollmentX509 {
		te.Pool, _ = ParseCAPool(e.CAPEM) // Validate parsed it
	}
	m[id] = te
}

// decodeRevocation files one revocation into m (value nil: lifted). An
// undecodable value still revokes the device its key names: failing closed.
func (v *TrustView) decodeRevocation(m map[string]Revocation, key string, value []byte) {
	id := strings.TrimPrefix(key, v.reg.prefix+revokedDir)
	if value == nil {
		delete(m, id)
		return
	}
	var rv Revocation
	if err := json.Unmarshal(value, &rv); err != nil {
		v.log.Warn("registry: undecodable revocation; the device stays revoked", "key", key, "err", err)
	}
	rv.DeviceID = id
	m[id] = rv
}

// watch applies changes after rev until the watch fails.
func (v *TrustView) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	cli := v.reg.client()
	enr := cli.Watch(wctx, v.reg.prefix+enrollmentsDir, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	rvk := cli.Watch(wctx, v.reg.prefix+revokedDir, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case <-wctx.Done():
			return ctx.Err()
		case resp, ok = <-enr:
		case resp, ok = <-rvk:
		}
		if !ok {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errWatchClosed
		}
		if err := resp.Err(); err != nil {
			return err
		}
		if resp.Canceled {
			return errWatchClosed
		}
		v.apply(resp.Events)
	}
}

// apply folds watch events into the view and tells the subscribers.
func (v *TrustView) apply(events []*clientv3.Event) {
	var changes []TrustChange
	v.mu.Lock()
	for _, ev := range events {
		key := string(ev.Kv.Key)
		value := ev.Kv.Value
		if ev.Type == mvccpb.DELETE {
			value = nil
		}
		switch {
		case strings.HasPrefix(key, v.reg.prefix+enrollmentsDir):
			id := strings.TrimPrefix(key, v.reg.prefix+enrollmentsDir)
			_, had := v.enrollments[id]
			v.decodeEnrollment(v.enrollments, key, value)
			v.generation.Add(1)
			e, has := v.enrollments[id]
			if (had && !has) || (has && e.Disabled) {
				changes = append(changes, TrustChange{ClosedEnrollment: id})
			}
		case strings.HasPrefix(key, v.reg.prefix+revokedDir):
			v.decodeRevocation(v.revoked, key, value)
			if value != nil {
				changes = append(changes, TrustChange{RevokedDevice: strings.TrimPrefix(key, v.reg.prefix+revokedDir)})
			}
		}
	}
	subs := v.subs
	v.mu.Unlock()
	notify(subs, changes)
}
