package identity

import (
	"crypto/x509"
	"strings"
	"sync"
	"time"
)

// maxCachedChains bounds the verified chains an Authenticator remembers
// (about 200 bytes each); past it the cache starts over.
const maxCachedChains = 100_000

// cachedChain is a certificate chain that verified against an enrollment.
type cachedChain struct {
	enrollment string
	// generation is the trust's enrollment generation read before the
	// verification: any change to the enrollments since makes it stale.
	generation uint64
	// notBefore and notAfter bound the time the whole chain is valid.
	notBefore, notAfter time.Time
}

// chainCache remembers verified chains by the thumbprints of the leaf and
// the intermediates the device sent. Safe for concurrent use.
type chainCache struct {
	max int

	mu sync.Mutex
	m  map[string]cachedChain
}

func newChainCache(max int) *chainCache {
	return &chainCache{max: max, m: map[string]cachedChain{}}
}

// get returns the enrollment a chain verified against, while the
// enrollments are unchanged (generation) and now is inside the chain's
// validity.
func (c *chainCache) get(key string, generation uint64, now time.Time) (string, bool) {
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if !ok || e.generation != generation || now.Before(e.notBefore) || now.After(e.notAfter) {
		return "", false
	}
	return e.enrollment, true
}

// put remembers a verified chain.
func (c *chainCache) put(key string, e cachedChain) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[key] = e
}

// chainKey names a presented chain: the leaf's thumbprint and those of the
// intermediates sent with it, in order.
func chainKey(leaf string, intermediates []*x509.Certificate) string {
	if len(intermediates) == 0 {
		return leaf
	}
	var b strings.Builder
	b.WriteString(leaf)
	for _, c := range intermediates {
		b.WriteByte('|')
		b.WriteString(Thumbprint(c))
	}
	return b.String()
}

// latestNotBefore is when every certificate of chain is valid from.
func latestNotBefore(chain []*x509.Certificate) time.Time {
	var t time.Time
	for _, c := range chain {
		if c.NotBefore.After(t) {
			t = c.NotBefore
		}
	}
	return t
}

// earliestNotAfter is when the first certificate of chain expires.
func earliestNotAfter(chain []*x509.Certificate) time.Time {
	var t time.Time
	for i, c := range chain {
		if i == 0 || c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}
