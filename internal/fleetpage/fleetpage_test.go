package fleetpage_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthproject/berth/access"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/fleetpage"
	"github.com/berthproject/berth/registry"
)

type fakeKeys map[string]registry.APIKey

func (k fakeKeys) APIKey(id string) (registry.APIKey, bool) { r, ok := k[id]; return r, ok }
func (fakeKeys) Loaded() bool                               { return true }

type fakeAssignments map[string]registry.Assignment

func (a fakeAssignments) Assignment(id string) (registry.Assignment, bool) {
	r, ok := a[id]
	return r, ok
}

type fakeAudit struct{}

func (*fakeAudit) AppendAudit(context.Context, registry.AuditEntry, int) error { return nil }

// fakeAdmin answers from fixed data and records the page sizes asked.
type fakeAdmin struct {
	mu    sync.Mutex
	sizes []int32
}

func (f *fakeAdmin) ListGroups(_ context.Context, r *adminv1.ListGroupsRequest) (*adminv1.ListGroupsResponse, error) {
	f.mu.Lock()
	f.sizes = append(f.sizes, r.GetPageSize())
	f.mu.Unlock()
	return &adminv1.ListGroupsResponse{Groups: []*adminv1.Group{
		{GroupId: "g1", Labels: []string{"std", "eu"}, Capacity: 10, State: "active", Executors: 2, Connections: 4, Utilization: 0.4},
		{GroupId: "g2", Capacity: 0},
	}, NextPageToken: "bmV4dA"}, nil
}

func (f *fakeAdmin) ListExecutors(_ context.Context, r *adminv1.ListExecutorsRequest) (*adminv1.ListExecutorsResponse, error) {
	if r.GetGroupId() != "" && r.GetGroupId() != "g1" {
		return &adminv1.ListExecutorsResponse{}, nil
	}
	return &adminv1.ListExecutorsResponse{Executors: []*adminv1.Executor{
		{ExecutorId: "e1", GroupId: "g1", Address: "127.0.0.1:1", Capacity: 5, Connections: 3, Load: 3.5, Draining: true},
	}}, nil
}

func (f *fakeAdmin) GetRebalanceStatus(context.Context, *adminv1.GetRebalanceStatusRequest) (*adminv1.GetRebalanceStatusResponse, error) {
	return &adminv1.GetRebalanceStatusResponse{Leader: "cp-1", Plan: &adminv1.RebalancePlan{Total: 7, Balance: 7},
		Progress: &adminv1.RebalanceProgress{Moved: 3, InFlight: 1}}, nil
}

func (f *fakeAdmin) Explain(_ context.Context, r *adminv1.ExplainRequest) (*adminv1.ExplainResponse, error) {
	if r.GetDeviceId() != "dev-1" {
		return nil, status.Error(codes.NotFound, "no assignment record")
	}
	return &adminv1.ExplainResponse{DeviceId: "dev-1", Rule: "eu", Label: "std", Method: "balance", GroupId: "g1", Reason: "least utilized",
		RecordedGroupId: "g1", RecordedLabel: "std", RecordedAt: timestamppb.New(time.Unix(1700000000, 0)),
		Candidates: []*adminv1.CandidateGroup{{GroupId: "g1", Label: "std", Utilization: 0.4, Capacity: 10, Kept: true}}}, nil
}

type fakeDevices struct{}

func (fakeDevices) GetDevice(_ context.Context, r *messagingv1.GetDeviceRequest) (*messagingv1.GetDeviceResponse, error) {
	switch r.GetDeviceId() {
	case "dev-1":
		return &messagingv1.GetDeviceResponse{DeviceId: "dev-1", Online: true, GroupId: "g1", ExecutorId: "e1", QueuedMessages: 2,
			AssignedGroupId: "g1", AssignedLabel: "std"}, nil
	case "dev-2":
		return &messagingv1.GetDeviceResponse{DeviceId: "dev-2", QueuedMessages: 1}, nil
	}
	return nil, status.Errorf(codes.NotFound, "device %s is unknown", r.GetDeviceId())
}

var (
	_ fleetpage.Admin   = (*fakeAdmin)(nil)
	_ fleetpage.Devices = fakeDevices{}
)

// keys of every kind the tests present.
type keys struct{ viewer, operator, service, tenantViewer, revoked string }

func newHandler(t *testing.T) (*fleetpage.Handler, *fakeAdmin, keys) {
	t.Helper()
	now := time.Now()
	store := fakeKeys{}
	var k keys
	for _, c := range []struct {
		secret  *string
		roles   []string
		tenants []string
		off     bool
	}{
		{&k.viewer, []string{"viewer"}, nil, false},
		{&k.operator, []string{"operator"}, nil, false},
		{&k.service, []string{"service"}, nil, false},
		{&k.tenantViewer, []string{"viewer"}, []string{"t-a"}, false},
		{&k.revoked, []string{"admin"}, nil, true},
	} {
		rec, secret, err := access.NewAPIKey("k", c.roles, c.tenants, nil, "test", now)
		if err != nil {
			t.Fatal(err)
		}
		rec.Disabled = c.off
		store[rec.ID] = rec
		*c.secret = secret
	}
	assigned := fakeAssignments{"dev-1": {DeviceID: "dev-1", GroupID: "g1", Inputs: &registry.DeviceInputs{Tenant: "t-b"}}}
	g, err := access.New(access.Config{}, access.Deps{Keys: store, Assignments: assigned, Audit: &fakeAudit{}})
	if err != nil {
		t.Fatal(err)
	}
	adm := &fakeAdmin{}
	h, err := fleetpage.New(fleetpage.Deps{Admin: adm, Devices: fakeDevices{}, Auth: g})
	if err != nil {
		t.Fatal(err)
	}
	return h, adm, k
}

func do(t *testing.T, h http.Handler, method, path, key string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestAuth(t *testing.T) {
	h, _, k := newHandler(t)
	paths := []string{"/fleet/api/groups", "/fleet/api/executors", "/fleet/api/rebalance", "/fleet/api/devices/dev-1"}
	tests := []struct {
		name string
		key  string
		want int
	}{
		{"no key", "", http.StatusUnauthorized},
		{"malformed key", "nodot", http.StatusUnauthorized},
		{"wrong secret", strings.Split(k.viewer, ".")[0] + ".AAAA", http.StatusUnauthorized},
		{"revoked admin key", k.revoked, http.StatusUnauthorized},
		{"service key", k.service, http.StatusForbidden},
		{"viewer key", k.viewer, http.StatusOK},
		{"operator key", k.operator, http.StatusOK},
	}
	for _, tt := range tests {
		for _, p := range paths {
			t.Run(tt.name+p, func(t *testing.T) {
				w := do(t, h, http.MethodGet, p, tt.key)
				if w.Code != tt.want {
					t.Fatalf("GET %s with %s = %d %s; want %d", p, tt.name, w.Code, w.Body, tt.want)
				}
				if got := w.Header().Get("Cache-Control"); got != "no-store" {
					t.Errorf("Cache-Control = %q; want no-store", got)
				}
				if tt.want == http.StatusUnauthorized && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without WWW-Authenticate: Bearer")
				}
				if tt.want != http.StatusOK {
					var e struct{ Error string }
					if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
						t.Errorf("refusal body %q: want {\"error\": …}", w.Body)
					}
					if strings.Contains(w.Body.String(), tt.key) && tt.key != "" {
						t.Errorf("refusal body %q repeats the key", w.Body)
					}
				}
			})
		}
	}
	t.Run("other scheme", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "/fleet/api/groups", nil)
		r.Header.Set("Authorization", "Basic "+k.viewer)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusUnauthorized {
			t.Errorf("Basic auth = %d; want 401", w.Code)
		}
	})
	t.Run("tenant-limited viewer", func(t *testing.T) {
		if w := do(t, h, http.MethodGet, "/fleet/api/devices/dev-1", k.tenantViewer); w.Code != http.StatusForbidden {
			t.Errorf("device of another tenant = %d %s; want 403", w.Code, w.Body)
		}
		if w := do(t, h, http.MethodGet, "/fleet/api/groups", k.tenantViewer); w.Code != http.StatusOK {
			t.Errorf("groups = %d %s; want 200", w.Code, w.Body)
		}
	})
}

func TestReadOnly(t *testing.T) {
	h, _, k := newHandler(t)
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		for _, p := range []string{"/fleet/", "/fleet/api/groups", "/fleet/api/devices/dev-1"} {
			w := do(t, h, m, p, k.operator)
			if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s = %d (Allow %q); want 405 with Allow: GET, HEAD", m, p, w.Code, w.Header().Get("Allow"))
			}
		}
	}
}

func TestPage(t *testing.T) {
	h, _, _ := newHandler(t)
	for path, want := range map[string]string{
		"/fleet/":          "<title>berth fleet</title>",
		"/fleet/app.js":    "sessionStorage",
		"/fleet/style.css": ".bar",
	} {
		w := do(t, h, http.MethodGet, path, "")
		if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), want) {
			t.Errorf("GET %s without a key = %d; want 200 with %q (the page's files are public)", path, w.Code, want)
		}
		csp := w.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q: want self only, no framing", path, csp)
		}
		if strings.Contains(w.Body.String(), "https://") || strings.Contains(w.Body.String(), "http://") {
			t.Errorf("GET %s names another origin: assets are embedded, no CDN", path)
		}
	}
	if w := do(t, h, http.MethodGet, "/fleet/api/nothing", ""); w.Code != http.StatusNotFound {
		t.Errorf("unknown API = %d; want 404", w.Code)
	}
}

func decode(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d %s; want 200", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q; want application/json", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	return m
}

func keysOf(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestShapes(t *testing.T) {
	h, _, k := newHandler(t)

	g := decode(t, do(t, h, http.MethodGet, "/fleet/api/groups", k.viewer))
	groups := g["groups"].([]any)
	if len(groups) != 2 || g["next_page_token"] != "bmV4dA" {
		t.Fatalf("groups = %v; want 2 groups and the next page token", g)
	}
	g1 := groups[0].(map[string]any)
	if got, want := keysOf(g1), []string{"capacity", "connections", "executors", "id", "labels", "state", "utilization"}; !slices.Equal(got, want) {
		t.Errorf("group keys %v; want %v", got, want)
	}
	if g1["id"] != "g1" || g1["utilization"] != 0.4 || g1["connections"] != 4.0 || g1["capacity"] != 10.0 || len(g1["labels"].([]any)) != 2 {
		t.Errorf("group g1 = %v", g1)
	}
	if labels, ok := groups[1].(map[string]any)["labels"].([]any); !ok || len(labels) != 0 {
		t.Errorf("group without labels: labels = %v; want []", groups[1].(map[string]any)["labels"])
	}

	e := decode(t, do(t, h, http.MethodGet, "/fleet/api/executors?group=g1", k.viewer))
	ex := e["executors"].([]any)[0].(map[string]any)
	if ex["id"] != "e1" || ex["group"] != "g1" || ex["connections"] != 3.0 || ex["capacity"] != 5.0 || ex["draining"] != true {
		t.Errorf("executor = %v", ex)
	}
	if e := decode(t, do(t, h, http.MethodGet, "/fleet/api/executors?group=g9", k.viewer)); len(e["executors"].([]any)) != 0 {
		t.Errorf("executors of g9 = %v; want [] (never null)", e)
	}

	r := decode(t, do(t, h, http.MethodGet, "/fleet/api/rebalance", k.viewer))
	if r["leader"] != "cp-1" || r["plan"].(map[string]any)["total"] != 7.0 || r["progress"].(map[string]any)["moved"] != 3.0 {
		t.Errorf("rebalance = %v", r)
	}

	d := decode(t, do(t, h, http.MethodGet, "/fleet/api/devices/dev-1", k.viewer))
	if d["online"] != true || d["executor"] != "e1" || d["queued_messages"] != 2.0 || d["assigned_label"] != "std" {
		t.Errorf("device dev-1 = %v", d)
	}
	x, ok := d["explanation"].(map[string]any)
	if !ok || x["group"] != "g1" || x["rule"] != "eu" || x["method"] != "balance" || len(x["candidates"].([]any)) != 1 {
		t.Errorf("dev-1 explanation = %v", d["explanation"])
	}

	d2 := decode(t, do(t, h, http.MethodGet, "/fleet/api/devices/dev-2", k.viewer))
	if d2["online"] != false || d2["explanation"] != nil || d2["queued_messages"] != 1.0 {
		t.Errorf("dev-2 (offline, no record) = %v; want offline, explanation null", d2)
	}
	if w := do(t, h, http.MethodGet, "/fleet/api/devices/dev-9", k.viewer); w.Code != http.StatusNotFound {
		t.Errorf("unknown device = %d; want 404", w.Code)
	}
}

func TestBounds(t *testing.T) {
	h, adm, k := newHandler(t)
	for _, tt := range []struct {
		query string
		code  int
	}{
		{"", http.StatusOK},
		{"?limit=7", http.StatusOK},
		{"?limit=500", http.StatusOK},
		{"?limit=501", http.StatusBadRequest},
		{"?limit=0", http.StatusBadRequest},
		{"?limit=x", http.StatusBadRequest},
		{"?page_token=" + strings.Repeat("A", 300), http.StatusBadRequest},
	} {
		if w := do(t, h, http.MethodGet, "/fleet/api/groups"+tt.query, k.viewer); w.Code != tt.code {
			t.Errorf("groups%s = %d %s; want %d", tt.query, w.Code, w.Body, tt.code)
		}
	}
	if want := []int32{fleetpage.DefaultPageSize, 7, fleetpage.MaxPageSize}; !slices.Equal(adm.sizes, want) {
		t.Errorf("page sizes asked of AdminService %v; want %v", adm.sizes, want)
	}
	for _, p := range []string{"/fleet/api/devices/" + strings.Repeat("d", 200), "/fleet/api/devices/a%20b", "/fleet/api/executors?group=a%2Fb"} {
		if w := do(t, h, http.MethodGet, p, k.viewer); w.Code != http.StatusBadRequest {
			t.Errorf("GET %s = %d; want 400", p, w.Code)
		}
	}
}

// TestOverHTTP serves the handler on a real listener: a HEAD of the page
// and a GET of the API with a key.
func TestOverHTTP(t *testing.T) {
	h, _, k := newHandler(t)
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/fleet/api/groups", nil)
	req.Header.Set("Authorization", "Bearer "+k.viewer)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"id":"g1"`) {
		t.Errorf("GET groups over HTTP = %d %s", resp.StatusCode, body)
	}
	resp, err = srv.Client().Get(srv.URL + "/fleet")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/fleet/" {
		t.Errorf("GET /fleet = %d at %s; want a redirect to /fleet/", resp.StatusCode, resp.Request.URL.Path)
	}
	srv.Client().CloseIdleConnections()
}
