package fleet_test

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/fleet"
)

func TestValidID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want bool
	}{
		{name: "plain", id: "group-1", want: true},
		{name: "every allowed character", id: "Az09._:@-", want: true},
		{name: "128 characters", id: strings.Repeat("a", 128), want: true},
		{name: "empty", id: "", want: false},
		{name: "129 characters", id: strings.Repeat("a", 129), want: false},
		{name: "slash would split the key", id: "a/b", want: false},
		{name: "space", id: "a b", want: false},
		{name: "newline", id: "a\n", want: false},
		{name: "non-ascii", id: "gruppé", want: false},
		{name: "dot", id: ".", want: false},
		{name: "dot dot", id: "..", want: false},
		{name: "three dots", id: "...", want: true},
		{name: "dot dot prefix", id: "..a", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fleet.ValidID(tt.id); got != tt.want {
				t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
	// Every byte, alone and inside an id, against the rule written as a
	// regular expression.
	rule := regexp.MustCompile(`^[A-Za-z0-9._:@-]{1,128}$`)
	for c := range 256 {
		for _, id := range []string{string([]byte{byte(c)}), "a" + string([]byte{byte(c)}) + "b"} {
			want := rule.MatchString(id) && id != "." && id != ".."
			if got := fleet.ValidID(id); got != want {
				t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
			}
		}
	}
}

func TestGroupValidate(t *testing.T) {
	valid := fleet.Group{ID: "g1", Labels: []string{"eu", "gpu"}, Capacity: 100, State: fleet.GroupActive}
	tests := []struct {
		name    string
		modify  func(g *fleet.Group)
		wantErr bool
	}{
		{name: "valid", modify: func(*fleet.Group) {}},
		{name: "no labels", modify: func(g *fleet.Group) { g.Labels = nil }},
		{name: "draining", modify: func(g *fleet.Group) { g.State = fleet.GroupDraining }},
		{name: "disabled", modify: func(g *fleet.Group) { g.State = fleet.GroupDisabled }},
		{name: "empty id", modify: func(g *fleet.Group) { g.ID = "" }, wantErr: true},
		{name: "id with slash", modify: func(g *fleet.Group) { g.ID = "a/b" }, wantErr: true},
		{name: "zero capacity", modify: func(g *fleet.Group) { g.Capacity = 0 }, wantErr: true},
		{name: "negative capacity", modify: func(g *fleet.Group) { g.Capacity = -1 }, wantErr: true},
		{name: "empty state", modify: func(g *fleet.Group) { g.State = "" }, wantErr: true},
		{name: "unknown state", modify: func(g *fleet.Group) { g.State = "paused" }, wantErr: true},
		{name: "empty label", modify: func(g *fleet.Group) { g.Labels = []string{"eu", ""} }, wantErr: true},
		{name: "label with space", modify: func(g *fleet.Group) { g.Labels = []string{"e u"} }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := valid
			g.Labels = append([]string(nil), valid.Labels...)
			tt.modify(&g)
			err := g.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("Validate(%+v) = %v, want error: %v", g, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, fleet.ErrInvalid) {
				t.Errorf("Validate(%+v) = %v, want errors.Is ErrInvalid", g, err)
			}
		})
	}
}

func TestExecutorValidate(t *testing.T) {
	valid := fleet.Executor{ID: "ex-1", GroupID: "g1", Address: "10.0.0.1:7000", Capacity: 10}
	tests := []struct {
		name    string
		modify  func(e *fleet.Executor)
		wantErr bool
	}{
		{name: "valid", modify: func(*fleet.Executor) {}},
		{name: "zero connections and load", modify: func(e *fleet.Executor) { e.Connections, e.Load = 0, 0 }},
		{name: "draining", modify: func(e *fleet.Executor) { e.Draining = true }},
		{name: "empty id", modify: func(e *fleet.Executor) { e.ID = "" }, wantErr: true},
		{name: "id with slash", modify: func(e *fleet.Executor) { e.ID = "a/b" }, wantErr: true},
		{name: "empty group", modify: func(e *fleet.Executor) { e.GroupID = "" }, wantErr: true},
		{name: "group with slash", modify: func(e *fleet.Executor) { e.GroupID = "g/1" }, wantErr: true},
		{name: "empty address", modify: func(e *fleet.Executor) { e.Address = "" }, wantErr: true},
		{name: "internal address", modify: func(e *fleet.Executor) { e.InternalAddress = "10.1.0.1:7001" }},
		{name: "internal address without port", modify: func(e *fleet.Executor) { e.InternalAddress = "10.1.0.1" }, wantErr: true},
		{name: "internal address without host", modify: func(e *fleet.Executor) { e.InternalAddress = ":7001" }, wantErr: true},
		{name: "zero capacity", modify: func(e *fleet.Executor) { e.Capacity = 0 }, wantErr: true},
		{name: "negative capacity", modify: func(e *fleet.Executor) { e.Capacity = -5 }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid
			tt.modify(&e)
			err := e.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("Validate(%+v) = %v, want error: %v", e, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, fleet.ErrInvalid) {
				t.Errorf("Validate(%+v) = %v, want errors.Is ErrInvalid", e, err)
			}
		})
	}
}

// TestExecutorControlAddress: control planes dial the internal address
// when the record has one, the device address otherwise, and records
// written before the field existed decode without it.
func TestExecutorControlAddress(t *testing.T) {
	tests := []struct {
		name, record, want string
	}{
		{"old record", `{"id":"ex-1","group":"g1","address":"10.0.0.1:7000","capacity":10}`, "10.0.0.1:7000"},
		{"empty internal address", `{"id":"ex-1","group":"g1","address":"10.0.0.1:7000","internal_address":"","capacity":10}`, "10.0.0.1:7000"},
		{"internal address", `{"id":"ex-1","group":"g1","address":"10.0.0.1:7000","internal_address":"10.1.0.1:7001","capacity":10}`, "10.1.0.1:7001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e fleet.Executor
			if err := json.Unmarshal([]byte(tt.record), &e); err != nil {
				t.Fatal(err)
			}
			if err := e.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got := e.ControlAddress(); got != tt.want {
				t.Errorf("ControlAddress() = %q, want %q", got, tt.want)
			}
		})
	}
	b, err := json.Marshal(fleet.Executor{ID: "ex-1", Address: "10.0.0.1:7000"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "internal_address") {
		t.Errorf("a record without an internal address encodes it: %s", b)
	}
}

func TestAssignmentValidate(t *testing.T) {
	valid := fleet.Assignment{DeviceID: "dev-1", GroupID: "g1", Label: "eu", AssignedAt: time.Unix(1700000000, 0).UTC()}
	tests := []struct {
		name    string
		modify  func(a *fleet.Assignment)
		wantErr bool
	}{
		{name: "valid", modify: func(*fleet.Assignment) {}},
		{name: "no label", modify: func(a *fleet.Assignment) { a.Label = "" }},
		{name: "zero time", modify: func(a *fleet.Assignment) { a.AssignedAt = time.Time{} }},
		{name: "empty device", modify: func(a *fleet.Assignment) { a.DeviceID = "" }, wantErr: true},
		{name: "device with slash", modify: func(a *fleet.Assignment) { a.DeviceID = "d/1" }, wantErr: true},
		{name: "empty group", modify: func(a *fleet.Assignment) { a.GroupID = "" }, wantErr: true},
		{name: "group too long", modify: func(a *fleet.Assignment) { a.GroupID = strings.Repeat("g", 129) }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := valid
			tt.modify(&a)
			err := a.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("Validate(%+v) = %v, want error: %v", a, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, fleet.ErrInvalid) {
				t.Errorf("Validate(%+v) = %v, want errors.Is ErrInvalid", a, err)
			}
		})
	}
}

func TestGroupStateValid(t *testing.T) {
	tests := []struct {
		state fleet.GroupState
		want  bool
	}{
		{fleet.GroupActive, true},
		{fleet.GroupDraining, true},
		{fleet.GroupDisabled, true},
		{"", false},
		{"Active", false},
		{"paused", false},
	}
	for _, tt := range tests {
		if got := tt.state.Valid(); got != tt.want {
			t.Errorf("GroupState(%q).Valid() = %v, want %v", tt.state, got, tt.want)
		}
	}
}

func TestGroupHasLabel(t *testing.T) {
	g := fleet.Group{ID: "g", Labels: []string{"eu", "gpu"}}
	tests := []struct {
		label string
		want  bool
	}{
		{"eu", true},
		{"gpu", true},
		{"us", false},
		{"", false},
		{"EU", false},
	}
	for _, tt := range tests {
		if got := g.HasLabel(tt.label); got != tt.want {
			t.Errorf("HasLabel(%q) = %v, want %v", tt.label, got, tt.want)
		}
	}
}

func TestTenantValidate(t *testing.T) {
	many := map[string]string{}
	for i := range 65 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	tests := []struct {
		name    string
		tenant  fleet.Tenant
		wantErr bool
	}{
		{name: "plain", tenant: fleet.Tenant{ID: "acme", Attributes: map[string]string{"tier": "gold"}, Services: []string{"print"}}},
		{name: "empty id", tenant: fleet.Tenant{ID: ""}, wantErr: true},
		{name: "slash in id", tenant: fleet.Tenant{ID: "a/b"}, wantErr: true},
		{name: "empty attribute key", tenant: fleet.Tenant{ID: "t", Attributes: map[string]string{"": "x"}}, wantErr: true},
		{name: "long attribute value", tenant: fleet.Tenant{ID: "t", Attributes: map[string]string{"k": strings.Repeat("v", 1025)}}, wantErr: true},
		{name: "65 attributes", tenant: fleet.Tenant{ID: "t", Attributes: many}, wantErr: true},
		{name: "empty service", tenant: fleet.Tenant{ID: "t", Services: []string{""}}, wantErr: true},
		{name: "long service", tenant: fleet.Tenant{ID: "t", Services: []string{strings.Repeat("s", 65)}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.tenant.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("Validate() = %v, want error: %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, fleet.ErrInvalid) {
				t.Errorf("Validate() = %v, want errors.Is ErrInvalid", err)
			}
		})
	}
}
