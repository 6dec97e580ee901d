package registry_test

import (
	"strings"
	"testing"

	"github.com/berthproject/berth/registry"
)

func TestCheckID(t *testing.T) {
	tests := []struct {
		name, id, want string // want "" for a valid id
	}{
		{name: "valid", id: "dev-1@site:a.b"},
		{name: "longest", id: strings.Repeat("d", 128)},
		{name: "empty", id: "", want: "device_id is required"},
		{name: "long", id: strings.Repeat("d", 129), want: "device_id is 129 bytes; at most 128"},
		{name: "slash", id: "a/b", want: `device_id "a/b": want 1-128 of [A-Za-z0-9._:@-], not "." or ".."`},
		{name: "dot", id: ".", want: `device_id ".": want 1-128 of [A-Za-z0-9._:@-], not "." or ".."`},
		{name: "dot dot", id: "..", want: `device_id "..": want 1-128 of [A-Za-z0-9._:@-], not "." or ".."`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := registry.CheckID("device_id", tt.id)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("CheckID(%q) = %q; want %q", tt.id, got, tt.want)
			}
		})
	}
}
