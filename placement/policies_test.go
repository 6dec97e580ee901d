package placement_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"

	"github.com/berthproject/berth/fleet"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/policy"
)

// records keeps the messages logged at each level.
type records struct {
	mu   sync.Mutex
	msgs map[slog.Level][]string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs[rec.Level] = append(r.msgs[rec.Level], rec.Message)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) count(l slog.Level) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs[l])
}

var _ slog.Handler = (*records)(nil)

// stored is a snapshot holding doc as its policy at version.
func stored(doc string, version int64) *fleet.Snapshot {
	var sp *fleet.StoredPolicy
	if doc != "" {
		sp = &fleet.StoredPolicy{Document: json.RawMessage(doc), Version: version}
	}
	return fleet.NewSnapshot(version, nil, nil).WithPolicy(sp, nil)
}

// TestPolicies follows a cache through a sequence of snapshots: each
// version is compiled once, a stored document that does not compile is
// logged once and leaves the last good policy in force under its version.
func TestPolicies(t *testing.T) {
	const bad = `{"defaultLabel": "x", "rules": [{"name": "r", "when": "device.model ==", "label": "y"}]}`
	steps := []struct {
		name        string
		snap        *fleet.Snapshot
		wantVersion int64
		wantDefault string
		wantSame    bool // the very policy of the previous step
		wantInfo    int
		wantErrors  int
	}{
		{name: "none stored: the default", snap: stored("", 0), wantVersion: 0, wantDefault: policy.DefaultLabel, wantSame: true},
		{name: "first policy", snap: stored(`{"defaultLabel": "gold"}`, 5), wantVersion: 5, wantDefault: "gold", wantInfo: 1},
		{name: "same version: compiled once", snap: stored(`{"defaultLabel": "gold"}`, 5), wantVersion: 5, wantDefault: "gold", wantSame: true, wantInfo: 1},
		{name: "none in a later snapshot: kept", snap: stored("", 6), wantVersion: 5, wantDefault: "gold", wantSame: true, wantInfo: 1},
		{name: "bad document: last good kept", snap: stored(bad, 7), wantVersion: 7, wantDefault: "gold", wantInfo: 1, wantErrors: 1},
		{name: "bad document again: logged once", snap: stored(bad, 7), wantVersion: 7, wantDefault: "gold", wantSame: true, wantInfo: 1, wantErrors: 1},
		{name: "good again", snap: stored(`{"defaultLabel": "silver"}`, 8), wantVersion: 8, wantDefault: "silver", wantInfo: 2, wantErrors: 1},
	}
	log := &records{msgs: map[slog.Level][]string{}}
	p := placement.NewPolicies(slog.New(log))
	prev := p.Current()
	for _, s := range steps {
		got := p.For(s.snap)
		if got.Version() != s.wantVersion || got.DefaultLabel() != s.wantDefault {
			t.Errorf("%s: For() = version %d, default label %q; want %d, %q", s.name, got.Version(), got.DefaultLabel(), s.wantVersion, s.wantDefault)
		}
		if same := got == prev; same != s.wantSame {
			t.Errorf("%s: For() returned the previous policy: %v, want %v", s.name, same, s.wantSame)
		}
		if cur := p.Current(); cur != got {
			t.Errorf("%s: Current() = version %d, want what For returned (version %d)", s.name, cur.Version(), got.Version())
		}
		if n := log.count(slog.LevelInfo); n != s.wantInfo {
			t.Errorf("%s: %d info lines logged, want %d", s.name, n, s.wantInfo)
		}
		if n := log.count(slog.LevelError); n != s.wantErrors {
			t.Errorf("%s: %d error lines logged, want %d", s.name, n, s.wantErrors)
		}
		prev = got
	}
}

// TestPoliciesConcurrent: callers racing on a new version get the same
// compiled policy, and a bad one is logged once.
func TestPoliciesConcurrent(t *testing.T) {
	log := &records{msgs: map[slog.Level][]string{}}
	p := placement.NewPolicies(slog.New(log))
	snap := stored(`{"defaultLabel": "x", "rules": [{"name": "r", "when": "nope(", "label": "y"}]}`, 3)
	got := make([]any, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() { got[i] = p.For(snap) })
	}
	wg.Wait()
	for i := range got {
		if got[i] != got[0] {
			t.Fatalf("caller %d got another policy than caller 0", i)
		}
	}
	if n := log.count(slog.LevelError); n != 1 {
		t.Errorf("%d error lines for one bad version, want 1", n)
	}
}

func TestCompileStored(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		wantErr bool
	}{
		{name: "JSON", doc: `{"defaultLabel": "gold"}`},
		{name: "not a policy", doc: `{"defaultLabel": 3}`, wantErr: true},
		{name: "bad expression", doc: `{"defaultLabel": "x", "rules": [{"name": "r", "when": "1 +", "label": "y"}]}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := placement.CompileStored(fleet.StoredPolicy{Document: json.RawMessage(tt.doc), Version: 42})
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("CompileStored(%s) = %v, want error: %v", tt.doc, err, tt.wantErr)
			}
			if err == nil && c.Version() != 42 {
				t.Errorf("CompileStored version = %d, want 42", c.Version())
			}
		})
	}
}
