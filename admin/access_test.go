package admin_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/admin"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/registry"
)

func TestAdminAPIKeys(t *testing.T) {
	e, ctx := newFleetEnv(t)
	bad := []struct {
		name string
		req  *adminv1.CreateAPIKeyRequest
		want string
	}{
		{"no roles", &adminv1.CreateAPIKeyRequest{Name: "x"}, "roles"},
		{"unknown role", &adminv1.CreateAPIKeyRequest{Name: "x", Roles: []string{"root"}}, "root"},
		{"no name", &adminv1.CreateAPIKeyRequest{Roles: []string{"viewer"}}, "name"},
		{"bad tenant", &adminv1.CreateAPIKeyRequest{Name: "x", Roles: []string{"service"}, Tenants: []string{"a/b"}}, "tenants"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.admin.CreateAPIKey(ctx, tt.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.want) {
				t.Errorf("CreateAPIKey = %v; want INVALID_ARGUMENT naming %q", err, tt.want)
			}
		})
	}
	var ids []string
	for _, n := range []string{"a", "b", "c"} {
		r, err := e.admin.CreateAPIKey(ctx, &adminv1.CreateAPIKeyRequest{Name: n, Roles: []string{"viewer"}})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(r.GetSecret(), r.GetKey().GetId()+".") {
			t.Errorf("secret %q does not start with the id %s", r.GetSecret(), r.GetKey().GetId())
		}
		ids = append(ids, r.GetKey().GetId())
	}
	first, err := e.admin.ListAPIKeys(ctx, &adminv1.ListAPIKeysRequest{PageSize: 2})
	if err != nil || len(first.GetKeys()) != 2 || first.GetNextPageToken() == "" {
		t.Fatalf("first page = %v, %v; want 2 keys and a next page", first, err)
	}
	second, err := e.admin.ListAPIKeys(ctx, &adminv1.ListAPIKeysRequest{PageSize: 2, PageToken: first.GetNextPageToken()})
	if err != nil || len(second.GetKeys()) != 1 || second.GetNextPageToken() != "" {
		t.Fatalf("second page = %v, %v; want the last key", second, err)
	}
	if _, err := e.admin.RevokeAPIKey(ctx, &adminv1.RevokeAPIKeyRequest{Id: "0000000000000000"}); status.Code(err) != codes.NotFound {
		t.Errorf("revoking an unknown key = %v; want NOT_FOUND", err)
	}
	if _, err := e.admin.RevokeAPIKey(ctx, &adminv1.RevokeAPIKeyRequest{Id: "../x"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("revoking a bad id = %v; want INVALID_ARGUMENT", err)
	}
	if r, err := e.admin.RevokeAPIKey(ctx, &adminv1.RevokeAPIKeyRequest{Id: ids[0]}); err != nil || !r.GetKey().GetDisabled() {
		t.Errorf("RevokeAPIKey = %v, %v; want the key disabled", r, err)
	}
	if _, err := e.admin.ListAudit(ctx, &adminv1.ListAuditRequest{PageSize: -1}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ListAudit page_size -1 = %v; want INVALID_ARGUMENT", err)
	}
	if r, err := e.admin.ListAudit(ctx, &adminv1.ListAuditRequest{}); err != nil || len(r.GetEntries()) != 0 {
		t.Errorf("ListAudit = %v, %v; want none (the interceptors, absent here, write it)", r, err)
	}
}

func TestAdminAccessUnimplementedWithoutStore(t *testing.T) {
	reg := registry.New(nil, "/none") // never called
	a, err := admin.New(admin.Deps{Cache: reg.NewCache(nil), Policies: defaultPolicies{}, Store: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateAPIKey(context.Background(), &adminv1.CreateAPIKeyRequest{Name: "x", Roles: []string{"admin"}}); status.Code(err) != codes.Unimplemented {
		t.Errorf("CreateAPIKey = %v; want UNIMPLEMENTED", err)
	}
	if _, err := a.ListAudit(context.Background(), &adminv1.ListAuditRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("ListAudit = %v; want UNIMPLEMENTED", err)
	}
}
