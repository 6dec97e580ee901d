package registry_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// TestAPIKeys: a key is created once, listed, revoked; the view follows
// the revocation.
func TestAPIKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	view := e.reg.NewAPIKeyView(nil)
	goRun(t, view.Run)
	k := registry.APIKey{ID: "k1", Name: "ops", Roles: []string{"admin"}, SecretHash: "h", CreatedAt: time.Now().UTC()}
	if err := e.reg.CreateAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.CreateAPIKey(ctx, k); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("a second create = %v; want ErrConflict", err)
	}
	if err := e.reg.CreateAPIKey(ctx, registry.APIKey{ID: "../x"}); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("create with a bad id = %v; want ErrInvalid", err)
	}
	if err := view.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "the view showing k1", func() bool { got, ok := view.APIKey("k1"); return ok && !got.Disabled })
	got, err := e.reg.RevokeAPIKey(ctx, "k1")
	if err != nil || !got.Disabled || got.Name != "ops" {
		t.Fatalf("RevokeAPIKey = %+v, %v; want ops disabled", got, err)
	}
	if _, err := e.reg.RevokeAPIKey(ctx, "nope"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("revoking an unknown key = %v; want ErrNotFound", err)
	}
	testutil.WaitFor(t, 2*time.Second, "the view showing k1 revoked", func() bool { got, ok := view.APIKey("k1"); return ok && got.Disabled })
	keys, err := e.reg.APIKeys(ctx)
	if err != nil || len(keys) != 1 || !keys[0].Disabled {
		t.Errorf("APIKeys = %+v, %v; want k1 disabled", keys, err)
	}
}

// TestAudit: entries are kept newest first, bounded, and paged.
func TestAudit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 7 {
		if err := e.reg.AppendAudit(ctx, registry.AuditEntry{At: at.Add(time.Duration(i) * time.Second), Who: fmt.Sprint(i), Method: "/m", Outcome: "OK"}, 5); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	before := ""
	for pages := 0; ; pages++ {
		entries, next, err := e.reg.AuditEntries(ctx, before, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range entries {
			got = append(got, en.Who)
		}
		if next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		before = next
	}
	if want := "[6 5 4 3 2]"; fmt.Sprint(got) != want {
		t.Errorf("audit, newest first = %v; want %s (the oldest two trimmed)", got, want)
	}
}
