package admin

import (
	"container/heap"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/registry"
)

// Bounds of the fleet part of AdminService.
const (
	// defaultPageSize is the page of a listing that asks for none.
	defaultPageSize = 100
	// maxPageSize is the largest page; a larger page_size is treated as it.
	maxPageSize = 1000
	// maxGroupLabels bounds the labels of a group.
	maxGroupLabels = 64
	// maxGroupCapacity bounds a group's capacity.
	maxGroupCapacity = 1_000_000_000
	// maxTenantAttributes, maxTenantAttrKey and maxTenantAttrValue bound a
	// tenant's attributes (as registry.Tenant.Validate does).
	maxTenantAttributes, maxTenantAttrKey, maxTenantAttrValue = 64, 128, 1024
	// maxTenantServices and maxTenantService bound its services.
	maxTenantServices, maxTenantService = 256, 64
	// cacheSettle bounds how long a write waits for this replica's view of
	// the registry to show it, so that a listing right after it does.
	cacheSettle = 2 * time.Second
)

// FleetStore is what the group and tenant part of AdminService reads and
// writes. *registry.Registry implements it; a Server without one (Deps.Fleet
// nil) answers those calls UNIMPLEMENTED.
type FleetStore interface {
	Group(ctx context.Context, id string) (registry.Group, error)
	PutGroup(ctx context.Context, g registry.Group) error
	DeleteGroup(ctx context.Context, id string) error
	Tenant(ctx context.Context, id string) (registry.Tenant, error)
	PutTenant(ctx context.Context, t registry.Tenant) error
	DeleteTenant(ctx context.Context, id string) error
}

var _ FleetStore = (*registry.Registry)(nil)

func (a *Server) fleetStore() (FleetStore, error) {
	if a.fleet == nil {
		return nil, status.Error(codes.Unimplemented, "this control plane cannot write groups or tenants")
	}
	return a.fleet, nil
}

// inSync refuses a listing while the replica's view of the registry is not
// in sync (before its first load, or relisting after a failed watch).
func (a *Server) inSync() error {
	if r, ok := a.cache.(interface{ Ready() bool }); ok && !r.Ready() {
		return status.Error(codes.Unavailable, "this control plane's view of the registry is not in sync (etcd unreachable or still loading); retry")
	}
	return nil
}

// settle waits, at most cacheSettle, until done reports that this
// replica's view of the registry shows a write. A view that lags longer
// shows it later; the write stands either way.
func (a *Server) settle(ctx context.Context, done func(*registry.Snapshot) bool) {
	a.settleFunc(ctx, func() bool { return done(a.cache.Snapshot()) })
}

// settleFunc waits, at most cacheSettle, until done reports true.
func (a *Server) settleFunc(ctx context.Context, done func() bool) {
	if done() {
		return
	}
	deadline := time.NewTimer(cacheSettle)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
	}
}

// ListGroups implements AdminService.ListGroups.
func (a *Server) ListGroups(_ context.Context, req *adminv1.ListGroupsRequest) (*adminv1.ListGroupsResponse, error) {
	pg, err := newPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if err := a.inSync(); err != nil {
		return nil, err
	}
	snap := a.cache.Snapshot()
	gs, next := pageOf(pg, func(g registry.Group) string { return g.ID }, slices.Values(snap.SortedGroups()))
	out := &adminv1.ListGroupsResponse{NextPageToken: next}
	for _, g := range gs {
		out.Groups = append(out.Groups, groupProto(snap, g))
	}
	return out, nil
}

// PutGroup implements AdminService.PutGroup.
func (a *Server) PutGroup(ctx context.Context, req *adminv1.PutGroupRequest) (*adminv1.PutGroupResponse, error) {
	g, err := groupFrom(req)
	if err != nil {
		return nil, err
	}
	fs, err := a.fleetStore()
	if err != nil {
		return nil, err
	}
	old, err := fs.Group(ctx, g.ID)
	created := errors.Is(err, registry.ErrNotFound)
	if err != nil && !created {
		return nil, rebalanceStatus(err, "group "+g.ID)
	}
	if err := fs.PutGroup(ctx, g); err != nil {
		return nil, rebalanceStatus(err, "group "+g.ID)
	}
	if created {
		a.log.Info("group created", "group", g.ID, "labels", g.Labels, "capacity", g.Capacity, "state", g.State)
	} else {
		a.log.Info("group replaced", "group", g.ID, "labels", g.Labels, "capacity", g.Capacity, "state", g.State,
			"old_labels", old.Labels, "old_capacity", old.Capacity, "old_state", old.State)
	}
	a.settle(ctx, func(s *registry.Snapshot) bool {
		cur, ok := s.Groups[g.ID]
		return ok && slices.Equal(cur.Labels, g.Labels) && cur.Capacity == g.Capacity && cur.State == g.State
	})
	snap := a.cache.Snapshot()
	return &adminv1.PutGroupResponse{Group: groupProto(snap, g), Created: created}, nil
}

// DeleteGroup implements AdminService.DeleteGroup: refused while any
// executor is registered for the group.
func (a *Server) DeleteGroup(ctx context.Context, req *adminv1.DeleteGroupRequest) (*adminv1.DeleteGroupResponse, error) {
	id := req.GetGroupId()
	if err := checkID("group_id", id); err != nil {
		return nil, err
	}
	fs, err := a.fleetStore()
	if err != nil {
		return nil, err
	}
	if _, err := fs.Group(ctx, id); err != nil {
		return nil, rebalanceStatus(err, "group "+id)
	}
	if es := a.cache.Snapshot().GroupExecutors(id); len(es) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition,
			"group %s has %d registered executor(s) (%s first): stop them or move them to another group before deleting it", id, len(es), es[0].ID)
	}
	if err := fs.DeleteGroup(ctx, id); err != nil {
		return nil, rebalanceStatus(err, "group "+id)
	}
	var records int64
	a.cache.RangeAssignments(func(r registry.Assignment) bool {
		if r.GroupID == id {
			records++
		}
		return true
	})
	a.log.Info("group deleted", "group", id, "assignment_records_naming_it", records)
	a.settle(ctx, func(s *registry.Snapshot) bool { _, ok := s.Groups[id]; return !ok })
	return &adminv1.DeleteGroupResponse{Assignments: records}, nil
}

// ListExecutors implements AdminService.ListExecutors.
func (a *Server) ListExecutors(_ context.Context, req *adminv1.ListExecutorsRequest) (*adminv1.ListExecutorsResponse, error) {
	pg, err := newPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	group := req.GetGroupId()
	if group != "" {
		if err := checkID("group_id", group); err != nil {
			return nil, err
		}
	}
	if err := a.inSync(); err != nil {
		return nil, err
	}
	es, next := pageOf(pg, func(e registry.Executor) string { return e.ID }, func(yield func(registry.Executor) bool) {
		for _, e := range a.cache.Snapshot().Executors {
			if (group == "" || e.GroupID == group) && !yield(e) {
				return
			}
		}
	})
	out := &adminv1.ListExecutorsResponse{NextPageToken: next}
	for _, e := range es {
		out.Executors = append(out.Executors, &adminv1.Executor{
			ExecutorId: e.ID, GroupId: e.GroupID, Address: e.Address, InternalAddress: e.InternalAddress, Capacity: int64(e.Capacity), Connections: int64(e.Connections),
			Load: e.Load, Draining: e.Draining, DrainMarked: e.DrainMarked, UpdatedAt: optTime(e.UpdatedAt),
		})
	}
	return out, nil
}

// ListDevices implements AdminService.ListDevices.
func (a *Server) ListDevices(_ context.Context, req *adminv1.ListDevicesRequest) (*adminv1.ListDevicesResponse, error) {
	pg, err := newPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	group := req.GetGroupId()
	if group != "" {
		if err := checkID("group_id", group); err != nil {
			return nil, err
		}
	}
	if err := a.inSync(); err != nil {
		return nil, err
	}
	recs, next := pageOf(pg, func(r registry.Assignment) string { return r.DeviceID }, func(yield func(registry.Assignment) bool) {
		a.cache.RangeAssignments(func(r registry.Assignment) bool {
			return (group != "" && r.GroupID != group) || yield(r)
		})
	})
	out := &adminv1.ListDevicesResponse{NextPageToken: next}
	for _, r := range recs {
		out.Devices = append(out.Devices, deviceProto(r))
	}
	return out, nil
}

// PutTenant implements AdminService.PutTenant.
func (a *Server) PutTenant(ctx context.Context, req *adminv1.PutTenantRequest) (*adminv1.PutTenantResponse, error) {
	t, err := tenantFrom(req)
	if err != nil {
		return nil, err
	}
	fs, err := a.fleetStore()
	if err != nil {
		return nil, err
	}
	old, err := fs.Tenant(ctx, t.ID)
	created := errors.Is(err, registry.ErrNotFound)
	if err != nil && !created {
		return nil, rebalanceStatus(err, "tenant "+t.ID)
	}
	if err := fs.PutTenant(ctx, t); err != nil {
		return nil, rebalanceStatus(err, "tenant "+t.ID)
	}
	if created {
		a.log.Info("tenant created", "tenant", t.ID, "attributes", t.Attributes, "services", t.Services)
	} else {
		a.log.Info("tenant replaced", "tenant", t.ID, "attributes", t.Attributes, "services", t.Services,
			"old_attributes", old.Attributes, "old_services", old.Services)
	}
	a.settle(ctx, func(s *registry.Snapshot) bool {
		cur, ok := s.Tenants[t.ID]
		return ok && maps.Equal(cur.Attributes, t.Attributes) && slices.Equal(cur.Services, t.Services)
	})
	return &adminv1.PutTenantResponse{Tenant: tenantProto(t), Created: created}, nil
}

// ListTenants implements AdminService.ListTenants.
func (a *Server) ListTenants(_ context.Context, req *adminv1.ListTenantsRequest) (*adminv1.ListTenantsResponse, error) {
	pg, err := newPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if err := a.inSync(); err != nil {
		return nil, err
	}
	ts, next := pageOf(pg, func(t registry.Tenant) string { return t.ID }, maps.Values(a.cache.Snapshot().Tenants))
	out := &adminv1.ListTenantsResponse{NextPageToken: next}
	for _, t := range ts {
		out.Tenants = append(out.Tenants, tenantProto(t))
	}
	return out, nil
}

// DeleteTenant implements AdminService.DeleteTenant.
func (a *Server) DeleteTenant(ctx context.Context, req *adminv1.DeleteTenantRequest) (*adminv1.DeleteTenantResponse, error) {
	id := req.GetTenantId()
	if err := checkID("tenant_id", id); err != nil {
		return nil, err
	}
	fs, err := a.fleetStore()
	if err != nil {
		return nil, err
	}
	if _, err := fs.Tenant(ctx, id); err != nil {
		return nil, rebalanceStatus(err, "tenant "+id)
	}
	if err := fs.DeleteTenant(ctx, id); err != nil {
		return nil, rebalanceStatus(err, "tenant "+id)
	}
	a.log.Info("tenant deleted", "tenant", id)
	a.settle(ctx, func(s *registry.Snapshot) bool { _, ok := s.Tenants[id]; return !ok })
	return &adminv1.DeleteTenantResponse{}, nil
}

// groupFrom validates a PutGroupRequest into the group to store.
func groupFrom(req *adminv1.PutGroupRequest) (registry.Group, error) {
	if err := checkID("group_id", req.GetGroupId()); err != nil {
		return registry.Group{}, err
	}
	if n := len(req.GetLabels()); n > maxGroupLabels {
		return registry.Group{}, invalidField("labels", "%d labels; at most %d", n, maxGroupLabels)
	}
	for i, l := range req.GetLabels() {
		if err := checkID(fmt.Sprintf("labels[%d]", i), l); err != nil {
			return registry.Group{}, err
		}
	}
	if c := req.GetCapacity(); c <= 0 || c > maxGroupCapacity {
		return registry.Group{}, invalidField("capacity", "%d: want 1 to %d", c, maxGroupCapacity)
	}
	st := registry.GroupState(req.GetState())
	if st == "" {
		st = registry.GroupActive
	}
	if !st.Valid() {
		return registry.Group{}, invalidField("state", "%q: want active, draining or disabled", req.GetState())
	}
	return registry.Group{ID: req.GetGroupId(), Labels: slices.Clone(req.GetLabels()), Capacity: int(req.GetCapacity()), State: st}, nil
}

// tenantFrom validates a PutTenantRequest into the tenant to store.
func tenantFrom(req *adminv1.PutTenantRequest) (registry.Tenant, error) {
	if err := checkID("tenant_id", req.GetTenantId()); err != nil {
		return registry.Tenant{}, err
	}
	attrs := req.GetAttributes()
	if len(attrs) > maxTenantAttributes {
		return registry.Tenant{}, invalidField("attributes", "%d entries; at most %d", len(attrs), maxTenantAttributes)
	}
	for k, v := range attrs {
		if k == "" || len(k) > maxTenantAttrKey {
			return registry.Tenant{}, invalidField("attributes", "key of %d bytes: want 1 to %d", len(k), maxTenantAttrKey)
		}
		if len(v) > maxTenantAttrValue {
			return registry.Tenant{}, invalidField(fmt.Sprintf("attributes[%q]", k), "%d bytes; at most %d", len(v), maxTenantAttrValue)
		}
	}
	if n := len(req.GetServices()); n > maxTenantServices {
		return registry.Tenant{}, invalidField("services", "%d services; at most %d", n, maxTenantServices)
	}
	for i, s := range req.GetServices() {
		if s == "" || len(s) > maxTenantService {
			return registry.Tenant{}, invalidField(fmt.Sprintf("services[%d]", i), "%d bytes: want 1 to %d", len(s), maxTenantService)
		}
	}
	t := registry.Tenant{ID: req.GetTenantId(), Services: slices.Clone(req.GetServices())}
	if len(attrs) > 0 {
		t.Attributes = maps.Clone(attrs)
	}
	return t, nil
}

func groupProto(snap *registry.Snapshot, g registry.Group) *adminv1.Group {
	out := &adminv1.Group{GroupId: g.ID, Labels: slices.Clone(g.Labels), Capacity: int64(g.Capacity), State: string(g.State)}
	for _, e := range snap.GroupExecutors(g.ID) {
		out.Executors++
		out.Connections += int64(e.Connections)
	}
	if g.Capacity > 0 {
		out.Utilization = float64(out.Connections) / float64(g.Capacity)
	}
	return out
}

func tenantProto(t registry.Tenant) *adminv1.Tenant {
	return &adminv1.Tenant{TenantId: t.ID, Attributes: maps.Clone(t.Attributes), Services: slices.Clone(t.Services)}
}

func deviceProto(r registry.Assignment) *adminv1.Device {
	out := &adminv1.Device{
		DeviceId: r.DeviceID, GroupId: r.GroupID, Label: r.Label, AssignedAt: timestamppb.New(r.AssignedAt), Rule: r.Rule,
		Reason: r.Reason, PolicyVersion: r.PolicyVersion, Writer: r.Writer, MovedAt: optTime(r.MovedAt),
	}
	if in := r.Inputs; in != nil {
		out.Inputs = &adminv1.DeviceInputs{Model: in.Model, Firmware: in.Firmware, Attributes: maps.Clone(in.Attributes),
			TenantId: in.Tenant, UserId: in.User, Services: slices.Clone(in.Services), Weight: in.Weight}
	}
	return out
}

// checkID refuses an id that cannot be a key segment.
func checkID(field, id string) error {
	if !registry.ValidID(id) {
		return invalidField(field, "%q: want 1-128 of [A-Za-z0-9._:@-]", id)
	}
	return nil
}

// invalidField is INVALID_ARGUMENT naming field, in the message and in a
// BadRequest detail.
func invalidField(field, format string, args ...any) error {
	desc := fmt.Sprintf(format, args...)
	st := status.New(codes.InvalidArgument, field+" "+desc)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}}}); err == nil {
		return d.Err()
	}
	return st.Err()
}

// page is where a listing starts and how much it returns.
type page struct {
	size  int
	after string // the last id of the previous page; "" for the first
}

// newPage checks page_size and page_token.
func newPage(size int32, token string) (page, error) {
	switch {
	case size < 0:
		return page{}, invalidField("page_size", "%d: want 0 (the default, %d) to %d", size, defaultPageSize, maxPageSize)
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	p := page{size: int(size)}
	if token == "" {
		return p, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || !registry.ValidID(string(b)) {
		return page{}, invalidField("page_token", "is not one this service issued: pass next_page_token of the previous page")
	}
	p.after = string(b)
	return p, nil
}

// pageToken is the opaque token of the page after the one ending at id.
func pageToken(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

// pageOf picks, from items given in any order, the p.size of smallest id
// after p.after, in order, keeping no more than p.size+1 of them at a time;
// and the token of the next page ("" when this one is the last).
func pageOf[T any](p page, id func(T) string, all iter.Seq[T]) ([]T, string) {
	h := &maxByID[T]{id: id}
	for v := range all {
		k := id(v)
		if k <= p.after {
			continue
		}
		if h.Len() <= p.size {
			heap.Push(h, v)
		} else if k < id(h.items[0]) {
			h.items[0] = v
			heap.Fix(h, 0)
		}
	}
	items := h.items
	slices.SortFunc(items, func(a, b T) int { return strings.Compare(id(a), id(b)) })
	if len(items) <= p.size {
		return items, ""
	}
	items = items[:p.size]
	return items, pageToken(id(items[len(items)-1]))
}

// maxByID is a max-heap by id.
type maxByID[T any] struct {
	items []T
	id    func(T) string
}

func (h *maxByID[T]) Len() int           { return len(h.items) }
func (h *maxByID[T]) Less(i, j int) bool { return h.id(h.items[j]) < h.id(h.items[i]) }
func (h *maxByID[T]) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *maxByID[T]) Push(x any)         { h.items = append(h.items, x.(T)) }
func (h *maxByID[T]) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}
