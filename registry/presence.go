package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// presenceDir holds one record per connected device, written by the
// executor that holds its stream, under that executor's lease: when the
// executor dies, its devices' presence goes with it.
const presenceDir = "/presence/"

// Presence says which executor holds a device's stream.
type Presence struct {
	// DeviceID is the device.
	DeviceID string `json:"device"`
	// ExecutorID holds its stream.
	ExecutorID string `json:"executor"`
	// GroupID is the executor's group.
	GroupID string `json:"group"`
	// Address is the executor's address.
	Address string `json:"address"`
	// SessionID identifies the stream.
	SessionID string `json:"session"`
	// Since is when the stream was admitted.
	Since time.Time `json:"since"`
}

func (r *Registry) presenceKey(id string) string { return r.prefix + presenceDir + id }

// Presence reads where a device is connected; ErrNotFound when it is not.
func (r *Registry) Presence(ctx context.Context, deviceID string) (Presence, error) {
	var p Presence
	err := r.getJSON(ctx, r.presenceKey(deviceID), &p)
	return p, err
}

// maxTxnOps bounds the operations of one transaction (etcd's default limit
// is 128).
const maxTxnOps = 100

// SetPresence records that the device's stream is held here. It is written
// within moments, batched with others, under the registration's lease; after
// a lease is lost, every presence is written again under the new one.
func (g *Registration) SetPresence(p Presence) {
	g.pmu.Lock()
	g.present[p.DeviceID] = p
	g.pdirty[p.DeviceID] = true
	g.pmu.Unlock()
	g.signalPresence()
}

// ClearPresence removes the device's presence if it still names session.
// The record is deleted only if it is still under this executor's lease:
// the device may already be present elsewhere.
func (g *Registration) ClearPresence(deviceID, sessionID string) {
	g.pmu.Lock()
	if p, ok := g.present[deviceID]; ok && p.SessionID == sessionID {
		delete(g.present, deviceID)
		g.pdirty[deviceID] = true
	}
	g.pmu.Unlock()
	g.signalPresence()
}

// PresencePending counts presence changes not yet written.
func (g *Registration) PresencePending() int {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	return len(g.pdirty)
}

func (g *Registration) signalPresence() {
	select {
	case g.psignal <- struct{}{}:
	default:
	}
}

// presenceLoop writes presence changes under lease until ctx is done.
func (g *Registration) presenceLoop(ctx context.Context, lease clientv3.LeaseID) {
	// Everything held here is written again under this lease.
	g.pmu.Lock()
	for id := range g.present {
		g.pdirty[id] = true
	}
	g.pmu.Unlock()
	g.signalPresence()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.psignal:
		}
		for {
			g.pmu.Lock()
			batch := make(map[string]*Presence, min(len(g.pdirty), maxTxnOps))
			for id := range g.pdirty {
				if len(batch) == maxTxnOps {
					break
				}
				if p, ok := g.present[id]; ok {
					batch[id] = &p
				} else {
					batch[id] = nil
				}
				delete(g.pdirty, id)
			}
			more := len(g.pdirty) > 0
			g.pmu.Unlock()
			if len(batch) == 0 {
				break
			}
			if err := g.writePresence(ctx, lease, batch); err != nil {
				if ctx.Err() != nil {
					return
				}
				g.log.Warn("presence write failed; retrying", "devices", len(batch), "err", err)
				g.pmu.Lock()
				for id := range batch {
					g.pdirty[id] = true
				}
				g.pmu.Unlock()
				t := time.NewTimer(g.cfg.RetryDelay)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				continue
			}
			if !more {
				break
			}
		}
	}
}

// writePresence puts (p != nil) or deletes (p == nil, only if still under
// lease) each device's presence in one transaction.
func (g *Registration) writePresence(ctx context.Context, lease clientv3.LeaseID, batch map[string]*Presence) error {
	ops := make([]clientv3.Op, 0, len(batch))
	for id, p := range maps.All(batch) {
		key := g.reg.presenceKey(id)
		if p == nil {
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(key), "=", lease)},
				[]clientv3.Op{clientv3.OpDelete(key)}, nil))
			continue
		}
		b, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("registry: encode presence: %w", err)
		}
		ops = append(ops, clientv3.OpPut(key, string(b), clientv3.WithLease(lease)))
	}
	wctx, cancel := context.WithTimeout(ctx, g.cfg.Refresh)
	defer cancel()
	if _, err := g.reg.client().Txn(wctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("registry: write presence: %w", err)
	}
	return nil
}
