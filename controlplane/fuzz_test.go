package controlplane_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/controlplane"
	"github.com/berthproject/berth/fleet"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// fuzzPolicy has rules over every input Assign passes to the policy, so that
// fuzzed requests run through CEL.
const fuzzPolicy = `{
  "default_label": "default",
  "rules": [
    {"name": "eu", "when": "device.model.startsWith(\"EU-\") || device.attributes[\"region\"] == \"eu\"", "label": "eu"},
    {"name": "gold", "when": "tenant.attributes[\"tier\"] == \"gold\" && \"print\" in services.requested", "label": "gold"},
    {"name": "fw", "when": "device.firmware.matches(\"^2\\\\.\") && history.connects_last_day >= 0", "label": "eu"}
  ],
  "fallbacks": {"gold": {"labels": ["default"]}},
  "affinity": {"key": "tenant.id", "load_factor": 0.5}
}`

// FuzzAssign sends arbitrary Assign requests to an in-process control
// plane over a fake cache (no etcd): the edge validation never panics; a
// request out of the documented bounds is INVALID_ARGUMENT; the only other
// answers are a destination or a capacity/availability status (never
// INTERNAL); and a destination names a group of the snapshot and carries a
// token for the requested device and that group. Requests gRPC can carry
// (valid UTF-8) also go through a real client and server on bufconn and get
// the same answer.
func FuzzAssign(f *testing.F) {
	groups := []registry.Group{
		{ID: "g1", Capacity: 1 << 30, State: registry.GroupActive, Labels: []string{"default", "eu"}},
		{ID: "g2", Capacity: 1 << 30, State: registry.GroupActive, Labels: []string{"default", "gold"}},
	}
	execs := []registry.Executor{
		{ID: "g1-a", GroupID: "g1", Address: "10.0.0.1:1", Capacity: 1 << 30},
		{ID: "g2-a", GroupID: "g2", Address: "10.0.0.2:1", Capacity: 1 << 30},
	}
	fx := start(f, controlplane.DefaultConfig(), groups, execs)
	gm := map[string]fleet.Group{}
	for _, g := range groups {
		gm[g.ID] = g
	}
	em := map[string]fleet.Executor{}
	for _, e := range execs {
		em[e.ID] = e
	}
	fx.cache.mu.Lock()
	fx.cache.snap = fleet.Build(2, gm, em,
		map[string]fleet.Tenant{"acme": {ID: "acme", Attributes: map[string]string{"tier": "gold"}, Services: []string{"print"}}},
		&fleet.StoredPolicy{Document: []byte(fuzzPolicy), Version: 2})
	fx.cache.mu.Unlock()

	f.Fuzz(func(t *testing.T, device, model, firmware, attrKey, attrVal, tenant, user, services, prevGroup, prevLabel string, nAttrs uint8, grow uint16, which uint8) {
		// grow makes one field long, to reach the bounds.
		fields := []*string{&device, &model, &firmware, &attrKey, &attrVal, &tenant, &user, &services, &prevGroup, &prevLabel}
		if p := fields[int(which)%len(fields)]; *p != "" && grow > 0 {
			*p = strings.Repeat(*p, 1+int(grow)%2048)
		}
		req := &controlplanev1.AssignRequest{
			DeviceId: device,
			Spec:     &controlplanev1.DeviceSpec{Model: model, Firmware: firmware},
			TenantId: tenant,
			UserId:   user,
			Previous: &controlplanev1.PreviousAssignment{GroupId: prevGroup, Label: prevLabel},
		}
		if services != "" {
			req.Services = strings.Split(services, ",")
		}
		if nAttrs > 0 || attrKey != "" {
			req.Spec.Attributes = map[string]string{attrKey: attrVal}
			for i := range int(nAttrs) {
				req.Spec.Attributes[attrKey+strings.Repeat("+", i+1)] = attrVal
			}
		}
		resp, err := fx.srv.Assign(context.Background(), req)
		check(t, fx, req, resp, err)
		if !validUTF8(req) {
			return // gRPC refuses to marshal it; the server never sees it
		}
		resp, err = fx.client.Assign(context.Background(), req)
		check(t, fx, req, resp, err)
	})
}

// check holds one answer to req to FuzzAssign's properties.
func check(t *testing.T, fx *fixture, req *controlplanev1.AssignRequest, resp *controlplanev1.AssignResponse, err error) {
	t.Helper()
	code := status.Code(err)
	if bad := outOfBounds(req); bad != "" {
		if code != codes.InvalidArgument {
			t.Fatalf("request with %s: got %v (%v), want InvalidArgument", bad, code, err)
		}
		return
	}
	switch code {
	case codes.OK:
	case codes.ResourceExhausted, codes.Unavailable:
		return
	default:
		t.Fatalf("request within bounds: got %v (%v), want a destination", code, err)
	}
	d := resp.GetDestination()
	if d.GetGroupId() != "g1" && d.GetGroupId() != "g2" {
		t.Fatalf("destination group %q is not in the snapshot", d.GetGroupId())
	}
	c, err := fx.verifier.Verify(d.GetToken())
	if err != nil {
		t.Fatalf("destination token does not verify: %v", err)
	}
	if c.DeviceID != req.GetDeviceId() || c.GroupID != d.GetGroupId() {
		t.Fatalf("token for %q in %q, want %q in %q", c.DeviceID, c.GroupID, req.GetDeviceId(), d.GetGroupId())
	}
}

// outOfBounds says which documented bound of AssignRequest req passes, or
// "" when it is within all of them. It is written from the API's comments
// and policy's bounds, not from the server's code.
func outOfBounds(r *controlplanev1.AssignRequest) string {
	if registry.CheckID("device_id", r.GetDeviceId()) != nil {
		return "a bad device id"
	}
	spec := r.GetSpec()
	if len(spec.GetModel()) > policy.MaxSpecField || len(spec.GetFirmware()) > policy.MaxSpecField {
		return "a long model or firmware"
	}
	if len(spec.GetAttributes()) > policy.MaxAttributes {
		return "too many attributes"
	}
	for k, v := range spec.GetAttributes() {
		if k == "" || len(k) > policy.MaxAttrKey || len(v) > policy.MaxAttrValue {
			return "a bad attribute"
		}
	}
	if len(r.GetTenantId()) > policy.MaxIDLen || len(r.GetUserId()) > policy.MaxIDLen {
		return "a long tenant or user"
	}
	if len(r.GetServices()) > policy.MaxRequestedServices {
		return "too many services"
	}
	for _, s := range r.GetServices() {
		if s == "" || len(s) > policy.MaxServiceName {
			return "a bad service"
		}
	}
	if len(r.GetPrevious().GetGroupId()) > policy.MaxIDLen || len(r.GetPrevious().GetLabel()) > policy.MaxIDLen {
		return "a long previous assignment"
	}
	return ""
}

// validUTF8 reports whether every string of r is valid UTF-8, as proto3
// requires of a message on the wire.
func validUTF8(r *controlplanev1.AssignRequest) bool {
	ss := []string{r.GetDeviceId(), r.GetSpec().GetModel(), r.GetSpec().GetFirmware(), r.GetTenantId(), r.GetUserId(),
		r.GetPrevious().GetGroupId(), r.GetPrevious().GetLabel()}
	ss = append(ss, r.GetServices()...)
	for k, v := range r.GetSpec().GetAttributes() {
		ss = append(ss, k, v)
	}
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}
