package admin_test

import (
	"strings"
	"testing"

	"github.com/berthproject/berth/admin"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// defaultPolicies is the built-in policy, whatever the snapshot.
type defaultPolicies struct{}

func (defaultPolicies) PolicyFor(*registry.Snapshot) *policy.Compiled { return policy.Default() }

func TestNewRefuses(t *testing.T) {
	reg := registry.New(nil, "/none") // never called: New does no I/O
	cache := reg.NewCache(nil)
	tests := []struct {
		name string
		deps admin.Deps
		want string // in the error; "" wants none
	}{
		{name: "all", deps: admin.Deps{Cache: cache, Policies: defaultPolicies{}, Store: reg, Rebalance: reg}},
		{name: "no rebalancer store", deps: admin.Deps{Cache: cache, Policies: defaultPolicies{}, Store: reg}},
		{name: "no cache", deps: admin.Deps{Policies: defaultPolicies{}, Store: reg}, want: "cache"},
		{name: "no policies", deps: admin.Deps{Cache: cache, Store: reg}, want: "policies"},
		{name: "no store", deps: admin.Deps{Cache: cache, Policies: defaultPolicies{}}, want: "policy store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := admin.New(tt.deps)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("New = %v; want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("New = %v; want an error naming %q", err, tt.want)
			}
		})
	}
}
