package controlplane

import (
	"time"

	"github.com/berthproject/berth/token"
)

// tokenCache keeps the last token minted per device, so that a device that
// reconnects to the same group under the same label gets its token again
// instead of a fresh signature, while the token has more than half of its
// life left. Re-sending an unchanged token grants nothing new: it binds the
// same device, group, label, weight and identity, and expires when it would
// have.
// The cache is bounded; when full, an arbitrary entry is dropped.
type tokenCache struct{ m *boundedMap[cachedToken] }

type cachedToken struct {
	group, label string
	weight       float64
	binding      token.Binding
	token        string
	exp          time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{m: newBoundedMap[cachedToken](max)}
}

// get returns the cached token of device if it matches and is fresh enough.
func (c *tokenCache) get(device, group, label string, weight float64, b token.Binding, now time.Time, ttl time.Duration) (string, time.Time, bool) {
	if c == nil {
		return "", time.Time{}, false
	}
	t, ok := c.m.get(device)
	if !ok || t.group != group || t.label != label || t.weight != weight || t.binding != b || t.exp.Sub(now) < ttl/2 {
		return "", time.Time{}, false
	}
	return t.token, t.exp, true
}

// put remembers a token.
func (c *tokenCache) put(device string, t cachedToken) {
	if c == nil {
		return
	}
	c.m.put(device, t)
}
