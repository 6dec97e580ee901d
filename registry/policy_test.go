package registry_test

import (
	"errors"
	"testing"

	"github.com/berthproject/berth/registry"
)

func TestPutPolicyCompareAndSwap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	if _, err := e.reg.Policy(ctx); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Policy() before any put = %v, want ErrNotFound", err)
	}
	v1, err := e.reg.PutPolicy(ctx, registry.StoredPolicy{Document: []byte(`{"defaultLabel":"a"}`), AppliedBy: "t"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A second "first" apply loses.
	if _, err := e.reg.PutPolicy(ctx, registry.StoredPolicy{Document: []byte(`{"defaultLabel":"b"}`)}, 0); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("PutPolicy based on 0 after a put = %v, want ErrConflict", err)
	}
	v2, err := e.reg.PutPolicy(ctx, registry.StoredPolicy{Document: []byte(`{"defaultLabel":"c"}`)}, v1)
	if err != nil || v2 <= v1 {
		t.Fatalf("PutPolicy based on %d = %d, %v; want a newer version", v1, v2, err)
	}
	if _, err := e.reg.PutPolicy(ctx, registry.StoredPolicy{Document: []byte(`{"defaultLabel":"d"}`)}, v1); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("stale PutPolicy = %v, want ErrConflict", err)
	}
	if _, err := e.reg.PutPolicy(ctx, registry.StoredPolicy{Document: []byte(`not json`)}, v2); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("PutPolicy of non-JSON = %v, want ErrInvalid", err)
	}
	got, err := e.reg.Policy(ctx)
	if err != nil || got.Version != v2 || string(got.Document) != `{"defaultLabel":"c"}` {
		t.Fatalf("Policy() = %+v, %v; want version %d with document c", got, err, v2)
	}
	snap, err := e.reg.LoadSnapshot(ctx)
	if err != nil || snap.Policy == nil || snap.Policy.Version != v2 {
		t.Fatalf("LoadSnapshot policy = %+v, %v; want version %d", snap.Policy, err, v2)
	}
}

func TestTenants(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testContext(t)
	bad := []registry.Tenant{
		{ID: ""},
		{ID: "a/b"},
		{ID: "t", Attributes: map[string]string{"": "x"}},
		{ID: "t", Services: []string{""}},
	}
	for _, tn := range bad {
		if err := e.reg.PutTenant(ctx, tn); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("PutTenant(%+v) = %v, want ErrInvalid", tn, err)
		}
	}
	want := registry.Tenant{ID: "acme", Attributes: map[string]string{"tier": "gold"}, Services: []string{"print"}}
	if err := e.reg.PutTenant(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := e.reg.Tenant(ctx, "acme")
	if err != nil || got.Attributes["tier"] != "gold" || len(got.Services) != 1 {
		t.Fatalf("Tenant(acme) = %+v, %v", got, err)
	}
	all, err := e.reg.Tenants(ctx)
	if err != nil || len(all) != 1 {
		t.Fatalf("Tenants() = %v, %v; want one", all, err)
	}
	if err := e.reg.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Tenant(ctx, "acme"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Tenant after delete = %v, want ErrNotFound", err)
	}
}
