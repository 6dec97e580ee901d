package admin_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// fleetEnv is a control plane on a real registry, for the fleet RPCs.
type fleetEnv struct {
	reg   *registry.Registry
	admin adminv1.AdminServiceClient
}

func newFleetEnv(t *testing.T) (*fleetEnv, context.Context) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration: embedded etcd")
	}
	cli := testutil.EtcdClient(t, testutil.StartEtcd(t))
	reg := registry.New(cli, "/it")
	key, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	r := startReplica(t, reg, "replica-a", key)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	t.Cleanup(cancel)
	testutil.WaitFor(t, testutil.DefaultTimeout, "the replica's registry view in sync", func() bool {
		_, err := r.admin.ListGroups(ctx, &adminv1.ListGroupsRequest{})
		return err == nil
	})
	return &fleetEnv{reg: reg, admin: r.admin}, ctx
}

// register keeps an executor registered until the returned func is called.
func (e *fleetEnv) register(t *testing.T, ex registry.Executor, connections int) func() {
	t.Helper()
	r, err := e.reg.NewRegistration(ex, registry.DefaultRegistrationConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Update(func(x *registry.Executor) { x.Connections = connections })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stop := func() {
		if cancel != nil {
			cancel()
			<-done
			cancel = nil
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestAdminPutGroupValidation(t *testing.T) {
	e, ctx := newFleetEnv(t)
	many := make([]string, 65)
	for i := range many {
		many[i] = fmt.Sprintf("l%d", i)
	}
	tests := []struct {
		name  string
		req   *adminv1.PutGroupRequest
		field string
	}{
		{"no id", &adminv1.PutGroupRequest{Capacity: 1}, "group_id"},
		{"slash in id", &adminv1.PutGroupRequest{GroupId: "a/b", Capacity: 1}, "group_id"},
		{"too many labels", &adminv1.PutGroupRequest{GroupId: "g", Labels: many, Capacity: 1}, "labels"},
		{"bad label", &adminv1.PutGroupRequest{GroupId: "g", Labels: []string{"ok", "no good"}, Capacity: 1}, "labels[1]"},
		{"zero capacity", &adminv1.PutGroupRequest{GroupId: "g"}, "capacity"},
		{"negative capacity", &adminv1.PutGroupRequest{GroupId: "g", Capacity: -5}, "capacity"},
		{"huge capacity", &adminv1.PutGroupRequest{GroupId: "g", Capacity: 1 << 40}, "capacity"},
		{"bad state", &adminv1.PutGroupRequest{GroupId: "g", Capacity: 1, State: "sleeping"}, "state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.admin.PutGroup(ctx, tt.req)
			if got := status.Code(err); got != codes.InvalidArgument {
				t.Fatalf("PutGroup(%v) code = %v, want InvalidArgument (%v)", tt.req, got, err)
			}
			if msg := status.Convert(err).Message(); !strings.HasPrefix(msg, tt.field+" ") {
				t.Errorf("PutGroup(%v) message = %q, want it to name %s", tt.req, msg, tt.field)
			}
		})
	}
	if gs, err := e.reg.Groups(ctx); err != nil || len(gs) != 0 {
		t.Errorf("groups stored after refused puts = %v, %v; want none", gs, err)
	}
}

func TestAdminGroups(t *testing.T) {
	e, ctx := newFleetEnv(t)
	put, err := e.admin.PutGroup(ctx, &adminv1.PutGroupRequest{GroupId: "g1", Labels: []string{"default", "eu"}, Capacity: 100})
	if err != nil || !put.GetCreated() || put.GetGroup().GetState() != "active" {
		t.Fatalf("PutGroup(g1) = %v, %v; want created, active", put, err)
	}
	put, err = e.admin.PutGroup(ctx, &adminv1.PutGroupRequest{GroupId: "g1", Labels: []string{"default"}, Capacity: 200, State: "draining"})
	if err != nil || put.GetCreated() {
		t.Fatalf("PutGroup(g1) again = %v, %v; want replaced", put, err)
	}
	if g, err := e.reg.Group(ctx, "g1"); err != nil || g.Capacity != 200 || g.State != registry.GroupDraining || !slices.Equal(g.Labels, []string{"default"}) {
		t.Errorf("stored g1 = %+v, %v; want capacity 200, draining, [default]", g, err)
	}
	if _, err := e.admin.PutGroup(ctx, &adminv1.PutGroupRequest{GroupId: "g2", Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	e.register(t, registry.Executor{ID: "g1-x", GroupID: "g1", Address: "127.0.0.1:1", Capacity: 100}, 50)
	testutil.WaitFor(t, testutil.DefaultTimeout, "g1's executor in the listing", func() bool {
		l, err := e.admin.ListGroups(ctx, &adminv1.ListGroupsRequest{})
		return err == nil && len(l.GetGroups()) == 2 && l.GetGroups()[0].GetExecutors() == 1
	})
	l, err := e.admin.ListGroups(ctx, &adminv1.ListGroupsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	g1, g2 := l.GetGroups()[0], l.GetGroups()[1]
	if g1.GetGroupId() != "g1" || g1.GetConnections() != 50 || g1.GetUtilization() != 0.25 || g1.GetState() != "draining" || g1.GetCapacity() != 200 {
		t.Errorf("listed g1 = %v; want 1 executor, 50 connections, utilization 0.25, draining, capacity 200", g1)
	}
	if g2.GetGroupId() != "g2" || g2.GetExecutors() != 0 || g2.GetUtilization() != 0 {
		t.Errorf("listed g2 = %v; want no executor", g2)
	}

	// Delete: unknown, busy, then empty.
	if _, err := e.admin.DeleteGroup(ctx, &adminv1.DeleteGroupRequest{GroupId: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("DeleteGroup(nope) = %v, want NotFound", err)
	}
	if _, err := e.admin.DeleteGroup(ctx, &adminv1.DeleteGroupRequest{GroupId: "a/b"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("DeleteGroup(a/b) = %v, want InvalidArgument", err)
	}
	if _, err := e.admin.DeleteGroup(ctx, &adminv1.DeleteGroupRequest{GroupId: "g1"}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(status.Convert(err).Message(), "g1-x") {
		t.Errorf("DeleteGroup(g1) with an executor = %v, want FailedPrecondition naming g1-x", err)
	}
	if err := e.reg.PutAssignment(ctx, registry.Assignment{DeviceID: "d1", GroupID: "g2", Label: "default", AssignedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "d1's record in the listing", func() bool {
		l, err := e.admin.ListDevices(ctx, &adminv1.ListDevicesRequest{})
		return err == nil && len(l.GetDevices()) == 1
	})
	del, err := e.admin.DeleteGroup(ctx, &adminv1.DeleteGroupRequest{GroupId: "g2"})
	if err != nil || del.GetAssignments() != 1 {
		t.Errorf("DeleteGroup(g2) = %v, %v; want deleted, 1 record naming it", del, err)
	}
	if _, err := e.reg.Group(ctx, "g2"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("stored g2 after DeleteGroup: %v, want not found", err)
	}
	if l, _ := e.admin.ListGroups(ctx, &adminv1.ListGroupsRequest{}); len(l.GetGroups()) != 1 {
		t.Errorf("groups after deleting g2 = %v; want g1 only", l.GetGroups())
	}
}

func TestAdminExecutorsAndDevices(t *testing.T) {
	e, ctx := newFleetEnv(t)
	for _, ex := range []registry.Executor{
		{ID: "a-1", GroupID: "a", Address: "127.0.0.1:1", Capacity: 10},
		{ID: "a-2", GroupID: "a", Address: "127.0.0.1:2", Capacity: 10},
		{ID: "b-1", GroupID: "b", Address: "127.0.0.1:3", Capacity: 10},
	} {
		e.register(t, ex, 3)
	}
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 7 {
		g := "a"
		if i%2 == 1 {
			g = "b"
		}
		rec := registry.Assignment{DeviceID: fmt.Sprintf("dev-%02d", i), GroupID: g, Label: "default", AssignedAt: at, Rule: "r", PolicyVersion: 3,
			Inputs: &registry.DeviceInputs{Model: "m", Tenant: "acme", Attributes: map[string]string{"k": "v"}, Weight: 2}}
		if err := e.reg.PutAssignment(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, testutil.DefaultTimeout, "every executor and record in the view", func() bool {
		ex, err1 := e.admin.ListExecutors(ctx, &adminv1.ListExecutorsRequest{})
		dv, err2 := e.admin.ListDevices(ctx, &adminv1.ListDevicesRequest{})
		return err1 == nil && err2 == nil && len(ex.GetExecutors()) == 3 && len(dv.GetDevices()) == 7
	})

	ids := func(n int, f func(int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	devs := func(r *adminv1.ListDevicesResponse) []string {
		return ids(len(r.GetDevices()), func(i int) string { return r.GetDevices()[i].GetDeviceId() })
	}
	tests := []struct {
		name  string
		size  int32
		group string
		want  [][]string // pages
	}{
		{"default size", 0, "", [][]string{{"dev-00", "dev-01", "dev-02", "dev-03", "dev-04", "dev-05", "dev-06"}}},
		{"pages of 3", 3, "", [][]string{{"dev-00", "dev-01", "dev-02"}, {"dev-03", "dev-04", "dev-05"}, {"dev-06"}}},
		{"exact pages", 7, "", [][]string{{"dev-00", "dev-01", "dev-02", "dev-03", "dev-04", "dev-05", "dev-06"}}},
		{"size above the maximum is clamped", 5000, "", [][]string{{"dev-00", "dev-01", "dev-02", "dev-03", "dev-04", "dev-05", "dev-06"}}},
		{"one group in pages of 2", 2, "b", [][]string{{"dev-01", "dev-03"}, {"dev-05"}}},
		{"unknown group", 2, "zzz", [][]string{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got [][]string
			token := ""
			for range 10 {
				r, err := e.admin.ListDevices(ctx, &adminv1.ListDevicesRequest{PageSize: tt.size, PageToken: token, GroupId: tt.group})
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, devs(r))
				if token = r.GetNextPageToken(); token == "" {
					break
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("pages = %v, want %v", got, tt.want)
			}
		})
	}

	d, err := e.admin.ListDevices(ctx, &adminv1.ListDevicesRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	d0 := d.GetDevices()[0]
	if d0.GetGroupId() != "a" || d0.GetRule() != "r" || d0.GetPolicyVersion() != 3 || !d0.GetAssignedAt().AsTime().Equal(at) ||
		d0.GetInputs().GetTenantId() != "acme" || d0.GetInputs().GetAttributes()["k"] != "v" || d0.GetInputs().GetWeight() != 2 || d0.GetMovedAt() != nil {
		t.Errorf("dev-00 = %v; want its whole record", d0)
	}

	ex, err := e.admin.ListExecutors(ctx, &adminv1.ListExecutorsRequest{GroupId: "a", PageSize: 1})
	if err != nil || len(ex.GetExecutors()) != 1 || ex.GetExecutors()[0].GetExecutorId() != "a-1" || ex.GetNextPageToken() == "" {
		t.Fatalf("ListExecutors(a, 1) = %v, %v; want a-1 and a next page", ex, err)
	}
	if x := ex.GetExecutors()[0]; x.GetAddress() != "127.0.0.1:1" || x.GetConnections() != 3 || x.GetCapacity() != 10 || x.GetUpdatedAt() == nil {
		t.Errorf("a-1 = %v; want its record", x)
	}
	ex, err = e.admin.ListExecutors(ctx, &adminv1.ListExecutorsRequest{GroupId: "a", PageSize: 1, PageToken: ex.GetNextPageToken()})
	if err != nil || len(ex.GetExecutors()) != 1 || ex.GetExecutors()[0].GetExecutorId() != "a-2" || ex.GetNextPageToken() != "" {
		t.Errorf("ListExecutors(a, page 2) = %v, %v; want a-2, last page", ex, err)
	}

	bad := []struct {
		name  string
		req   *adminv1.ListDevicesRequest
		field string
	}{
		{"negative size", &adminv1.ListDevicesRequest{PageSize: -1}, "page_size"},
		{"token not base64", &adminv1.ListDevicesRequest{PageToken: "!!!"}, "page_token"},
		{"token of no id", &adminv1.ListDevicesRequest{PageToken: base64.RawURLEncoding.EncodeToString([]byte("a/b"))}, "page_token"},
		{"bad group filter", &adminv1.ListDevicesRequest{GroupId: "a b"}, "group_id"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.admin.ListDevices(ctx, tt.req)
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tt.field+" ") {
				t.Errorf("ListDevices(%v) = %v; want InvalidArgument naming %s", tt.req, err, tt.field)
			}
		})
	}
	for _, req := range []*adminv1.ListExecutorsRequest{{PageSize: -3}, {PageToken: "%%"}, {GroupId: "x/y"}} {
		if _, err := e.admin.ListExecutors(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("ListExecutors(%v) = %v; want InvalidArgument", req, err)
		}
	}
	for _, req := range []*adminv1.ListGroupsRequest{{PageSize: -3}, {PageToken: "%%"}} {
		if _, err := e.admin.ListGroups(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("ListGroups(%v) = %v; want InvalidArgument", req, err)
		}
	}
}

func TestAdminTenants(t *testing.T) {
	e, ctx := newFleetEnv(t)
	bad := []struct {
		name  string
		req   *adminv1.PutTenantRequest
		field string
	}{
		{"no id", &adminv1.PutTenantRequest{}, "tenant_id"},
		{"empty attribute key", &adminv1.PutTenantRequest{TenantId: "t", Attributes: map[string]string{"": "v"}}, "attributes"},
		{"long attribute value", &adminv1.PutTenantRequest{TenantId: "t", Attributes: map[string]string{"k": strings.Repeat("v", 1025)}}, `attributes["k"]`},
		{"empty service", &adminv1.PutTenantRequest{TenantId: "t", Services: []string{"print", ""}}, "services[1]"},
		{"too many services", &adminv1.PutTenantRequest{TenantId: "t", Services: slices.Repeat([]string{"s"}, 257)}, "services"},
	}
	many := map[string]string{}
	for i := range 65 {
		many[fmt.Sprint("k", i)] = "v"
	}
	bad = append(bad, struct {
		name  string
		req   *adminv1.PutTenantRequest
		field string
	}{"too many attributes", &adminv1.PutTenantRequest{TenantId: "t", Attributes: many}, "attributes"})
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.admin.PutTenant(ctx, tt.req)
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tt.field+" ") {
				t.Errorf("PutTenant(%s) = %v; want InvalidArgument naming %s", tt.name, err, tt.field)
			}
		})
	}

	for i, id := range []string{"t3", "t1", "t2"} {
		r, err := e.admin.PutTenant(ctx, &adminv1.PutTenantRequest{TenantId: id, Attributes: map[string]string{"tier": fmt.Sprint(i)}, Services: []string{"print"}})
		if err != nil || !r.GetCreated() {
			t.Fatalf("PutTenant(%s) = %v, %v; want created", id, r, err)
		}
	}
	if r, err := e.admin.PutTenant(ctx, &adminv1.PutTenantRequest{TenantId: "t1", Attributes: map[string]string{"tier": "gold"}}); err != nil || r.GetCreated() {
		t.Errorf("PutTenant(t1) again = %v, %v; want replaced", r, err)
	}
	first, err := e.admin.ListTenants(ctx, &adminv1.ListTenantsRequest{PageSize: 2})
	if err != nil || len(first.GetTenants()) != 2 || first.GetNextPageToken() == "" {
		t.Fatalf("ListTenants(2) = %v, %v; want 2 and a next page", first, err)
	}
	t1 := first.GetTenants()[0]
	if t1.GetTenantId() != "t1" || t1.GetAttributes()["tier"] != "gold" || len(t1.GetServices()) != 0 {
		t.Errorf("t1 = %v; want tier gold, no service", t1)
	}
	rest, err := e.admin.ListTenants(ctx, &adminv1.ListTenantsRequest{PageSize: 2, PageToken: first.GetNextPageToken()})
	if err != nil || len(rest.GetTenants()) != 1 || rest.GetTenants()[0].GetTenantId() != "t3" || rest.GetNextPageToken() != "" {
		t.Errorf("ListTenants page 2 = %v, %v; want t3, last", rest, err)
	}

	if _, err := e.admin.DeleteTenant(ctx, &adminv1.DeleteTenantRequest{TenantId: "t2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.DeleteTenant(ctx, &adminv1.DeleteTenantRequest{TenantId: "t2"}); status.Code(err) != codes.NotFound {
		t.Errorf("DeleteTenant(t2) twice = %v, want NotFound", err)
	}
	if l, _ := e.admin.ListTenants(ctx, &adminv1.ListTenantsRequest{}); len(l.GetTenants()) != 2 {
		t.Errorf("tenants after a delete = %v; want t1, t3", l.GetTenants())
	}
	if ts, _ := e.reg.Tenants(ctx); len(ts) != 2 {
		t.Errorf("stored tenants after a delete = %v; want 2", ts)
	}
}
