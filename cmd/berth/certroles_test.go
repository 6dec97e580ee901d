package main

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/berthproject/berth/access"
)

func TestParseCertRoles(t *testing.T) {
	tests := []struct {
		name    string
		vals    []string
		want    map[string][]access.Role
		wantErr string
	}{
		{name: "none", vals: nil, want: nil},
		{name: "one role", vals: []string{"billing=service"}, want: map[string][]access.Role{"billing": {access.Service}}},
		{name: "several", vals: []string{"ops-team=operator+viewer", "root=admin"},
			want: map[string][]access.Role{"ops-team": {access.Operator, access.Viewer}, "root": {access.Admin}}},
		{name: "no equals", vals: []string{"billing"}, wantErr: "want NAME=ROLE"},
		{name: "empty name", vals: []string{"=admin"}, wantErr: "want NAME=ROLE"},
		{name: "empty roles", vals: []string{"billing="}, wantErr: "want NAME=ROLE"},
		{name: "unknown role", vals: []string{"billing=superuser"}, wantErr: "want one of admin"},
		{name: "given twice", vals: []string{"a=admin", "a=viewer"}, wantErr: "given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCertRoles(tt.vals)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseCertRoles(%q) error = %v, want one containing %q", tt.vals, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseCertRoles(%q): %v", tt.vals, err)
			}
			if !maps.EqualFunc(got, tt.want, slices.Equal) {
				t.Errorf("parseCertRoles(%q) = %v, want %v", tt.vals, got, tt.want)
			}
		})
	}
}
