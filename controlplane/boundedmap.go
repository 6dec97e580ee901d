package controlplane

import "sync"

// boundedMap is a map by device id of at most max entries, safe for
// concurrent use; putting a new key into a full map drops an arbitrary
// entry. The per-device caches of a control plane are made of it.
type boundedMap[V any] struct {
	max int

	mu sync.Mutex
	m  map[string]V
}

func newBoundedMap[V any](max int) *boundedMap[V] {
	return &boundedMap[V]{max: max, m: make(map[string]V)}
}

func (b *boundedMap[V]) get(key string) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[key]
	return v, ok
}

func (b *boundedMap[V]) put(key string, v V) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.m[key]; !ok && len(b.m) >= b.max {
		for k := range b.m {
			delete(b.m, k)
			break
		}
	}
	b.m[key] = v
}

func (b *boundedMap[V]) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}
