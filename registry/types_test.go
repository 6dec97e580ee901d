package registry_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/registry"
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := registry.ValidID(tt.id); got != tt.want {
				t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestGroupValidate(t *testing.T) {
	valid := registry.Group{ID: "g1", Labels: []string{"eu", "gpu"}, Capacity: 100, State: registry.GroupActive}
	tests := []struct {
		name    string
		modify  func(g *registry.Group)
		wantErr bool
	}{
		{name: "valid", modify: func(*registry.Group) {}},
		{name: "no labels", modify: func(g *registry.Group) { g.Labels = nil }},
		{name: "draining", modify: func(g *registry.Group) { g.State = registry.GroupDraining }},
		{name: "disabled", modify: func(g *registry.Group) { g.State = registry.GroupDisabled }},
		{name: "empty id", modify: func(g *registry.Group) { g.ID = "" }, wantErr: true},
		{name: "id with slash", modify: func(g *registry.Group) { g.ID = "a/b" }, wantErr: true},
		{name: "zero capacity", modify: func(g *registry.Group) { g.Capacity = 0 }, wantErr: true},
		{name: "negative capacity", modify: func(g *registry.Group) { g.Capacity = -1 }, wantErr: true},
		{name: "empty state", modify: func(g *registry.Group) { g.State = "" }, wantErr: true},
		{name: "unknown state", modify: func(g *registry.Group) { g.State = "paused" }, wantErr: true},
		{name: "empty label", modify: func(g *registry.Group) { g.Labels = []string{"eu", ""} }, wantErr: true},
		{name: "label with space", modify: func(g *registry.Group) { g.Labels = []string{"e u"} }, wantErr: true},
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
			if err != nil && !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("Validate(%+v) = %v, want errors.Is ErrInvalid", g, err)
			}
		})
	}
}

func TestExecutorValidate(t *testing.T) {
	valid := registry.Executor{ID: "ex-1", GroupID: "g1", Address: "10.0.0.1:7000", Capacity: 10}
	tests := []struct {
		name    string
		modify  func(e *registry.Executor)
		wantErr bool
	}{
		{name: "valid", modify: func(*registry.Executor) {}},
		{name: "zero connections and load", modify: func(e *registry.Executor) { e.Connections, e.Load = 0, 0 }},
		{name: "draining", modify: func(e *registry.Executor) { e.Draining = true }},
		{name: "empty id", modify: func(e *registry.Executor) { e.ID = "" }, wantErr: true},
		{name: "id with slash", modify: func(e *registry.Executor) { e.ID = "a/b" }, wantErr: true},
		{name: "empty group", modify: func(e *registry.Executor) { e.GroupID = "" }, wantErr: true},
		{name: "group with slash", modify: func(e *registry.Executor) { e.GroupID = "g/1" }, wantErr: true},
		{name: "empty address", modify: func(e *registry.Executor) { e.Address = "" }, wantErr: true},
		{name: "zero capacity", modify: func(e *registry.Executor) { e.Capacity = 0 }, wantErr: true},
		{name: "negative capacity", modify: func(e *registry.Executor) { e.Capacity = -5 }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid
			tt.modify(&e)
			err := e.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("Validate(%+v) = %v, want error: %v", e, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("Validate(%+v) = %v, want errors.Is ErrInvalid", e, err)
			}
		})
	}
}

func TestAssignmentValidate(t *testing.T) {
	valid := registry.Assignment{DeviceID: "dev-1", GroupID: "g1", Label: "eu", AssignedAt: time.Unix(1700000000, 0).UTC()}
	tests := []struct {
		name    string
		modify  func(a *registry.Assignment)
		wantErr bool
	}{
		{name: "valid", modify: func(*registry.Assignment) {}},
		{name: "no label", modify: func(a *registry.Assignment) { a.Label = "" }},
		{name: "zero time", modify: func(a *registry.Assignment) { a.AssignedAt = time.Time{} }},
		{name: "empty device", modify: func(a *registry.Assignment) { a.DeviceID = "" }, wantErr: true},
		{name: "device with slash", modify: func(a *registry.Assignment) { a.DeviceID = "d/1" }, wantErr: true},
		{name: "empty group", modify: func(a *registry.Assignment) { a.GroupID = "" }, wantErr: true},
		{name: "group too long", modify: func(a *registry.Assignment) { a.GroupID = strings.Repeat("g", 129) }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := valid
			tt.modify(&a)
			err := a.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("Validate(%+v) = %v, want error: %v", a, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("Validate(%+v) = %v, want errors.Is ErrInvalid", a, err)
			}
		})
	}
}

func TestRegistrationConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(c *registry.RegistrationConfig)
		wantErr bool
	}{
		{name: "default", modify: func(*registry.RegistrationConfig) {}},
		{name: "shortest TTL", modify: func(c *registry.RegistrationConfig) { c.TTL, c.Refresh = 2*time.Second, time.Second }},
		{name: "TTL under 2s", modify: func(c *registry.RegistrationConfig) { c.TTL = 1999 * time.Millisecond }, wantErr: true},
		{name: "zero refresh", modify: func(c *registry.RegistrationConfig) { c.Refresh = 0 }, wantErr: true},
		{name: "zero min interval", modify: func(c *registry.RegistrationConfig) { c.MinInterval = 0 }, wantErr: true},
		{name: "negative retry delay", modify: func(c *registry.RegistrationConfig) { c.RetryDelay = -time.Second }, wantErr: true},
		{name: "refresh equal to TTL", modify: func(c *registry.RegistrationConfig) { c.Refresh = c.TTL }, wantErr: true},
		{name: "refresh longer than TTL", modify: func(c *registry.RegistrationConfig) { c.Refresh = 2 * c.TTL }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := registry.DefaultRegistrationConfig()
			tt.modify(&c)
			err := c.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("Validate(%+v) = %v, want error: %v", c, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("Validate(%+v) = %v, want errors.Is ErrInvalid", c, err)
			}
		})
	}
}

func TestGroupStateValid(t *testing.T) {
	tests := []struct {
		state registry.GroupState
		want  bool
	}{
		{registry.GroupActive, true},
		{registry.GroupDraining, true},
		{registry.GroupDisabled, true},
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
	g := registry.Group{ID: "g", Labels: []string{"eu", "gpu"}}
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
