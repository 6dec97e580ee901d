package controlplane

import (
	"testing"
	"time"

	"github.com/berthproject/berth/token"
)

// TestTokenCacheBinding: a cached token is re-sent only to the identity it
// was bound to.
func TestTokenCacheBinding(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ttl := 15 * time.Minute
	cert := token.Binding{Thumbprint: "abc", Enrollment: "factory"}
	c := newTokenCache(10)
	c.put("dev-1", cachedToken{group: "g1", label: "default", weight: 1, binding: cert, token: "tok", exp: now.Add(ttl)})
	tests := []struct {
		name    string
		binding token.Binding
		want    bool
	}{
		{"same certificate", cert, true},
		{"another certificate", token.Binding{Thumbprint: "xyz", Enrollment: "factory"}, false},
		{"no credentials (open)", token.Binding{}, false},
		{"a symmetric key", token.Binding{Enrollment: "factory"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, got := c.get("dev-1", "g1", "default", 1, tc.binding, now, ttl); got != tc.want {
				t.Errorf("get() hit = %v, want %v", got, tc.want)
			}
		})
	}
}
