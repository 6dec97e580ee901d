package messaging

import (
	"sync"
	"testing"
)

// devices counts the devices with deliveries in flight.
func (f *inflight) devices() int {
	n := 0
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

func TestInflightBounds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxBytes int64
		maxCount int64
		sizes    []int // acquired in order, none released
		want     []bool
	}{
		{name: "count bound", maxBytes: 1 << 20, maxCount: 2, sizes: []int{1, 1, 1}, want: []bool{true, true, false}},
		{name: "byte bound", maxBytes: 100, maxCount: 10, sizes: []int{60, 40, 1}, want: []bool{true, true, false}},
		{name: "larger than the bound, alone", maxBytes: 100, maxCount: 10, sizes: []int{500, 1}, want: []bool{true, false}},
		{name: "larger than the bound, behind another", maxBytes: 100, maxCount: 10, sizes: []int{1, 500}, want: []bool{true, false}},
		{name: "empty payloads count", maxBytes: 100, maxCount: 3, sizes: []int{0, 0, 0, 0}, want: []bool{true, true, true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newInflight(tc.maxBytes, tc.maxCount)
			var hs []held
			for i, n := range tc.sizes {
				h, busy := f.acquire("d1", n)
				if got := busy == nil; got != tc.want[i] {
					t.Fatalf("acquire #%d of %d bytes: let through %v; want %v (%v)", i, n, got, tc.want[i], busy)
				}
				if busy != nil {
					if busy.device != "d1" || busy.size != int64(n) || busy.maxBytes != tc.maxBytes || busy.maxCount != tc.maxCount {
						t.Errorf("refusal %+v: want device d1, size %d, bounds %d/%d", busy, n, tc.maxBytes, tc.maxCount)
					}
					continue
				}
				hs = append(hs, h)
			}
			// Another device is not held up.
			other, busy := f.acquire("d2", int(tc.maxBytes))
			if busy != nil {
				t.Fatalf("another device refused: %v", busy)
			}
			other.release()
			for i := range hs {
				hs[i].release()
				hs[i].release() // idempotent
			}
			if n := f.devices(); n != 0 {
				t.Errorf("%d devices still counted after every release; want 0", n)
			}
			// Everything released: the bound is whole again.
			h, busy := f.acquire("d1", tc.sizes[0])
			if busy != nil {
				t.Fatalf("after release: %v", busy)
			}
			h.release()
		})
	}
}

func TestInflightZeroHeldRelease(t *testing.T) {
	var h held
	h.release() // a refused acquire's held: nothing to do
}

// TestInflightConcurrent: many goroutines over a few devices never pass a
// bound, and leave nothing counted.
func TestInflightConcurrent(t *testing.T) {
	const maxBytes, maxCount = 1000, 4
	f := newInflight(maxBytes, maxCount)
	devs := []string{"a", "b", "c"}
	var mu sync.Mutex
	cur := map[string][2]int64{}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 500 {
				dev := devs[(g+i)%len(devs)]
				size := (g*31 + i*17) % 400
				h, busy := f.acquire(dev, size)
				if busy != nil {
					continue
				}
				mu.Lock()
				c := cur[dev]
				c[0] += int64(size)
				c[1]++
				cur[dev] = c
				if c[1] > maxCount || (c[1] > 1 && c[0] > maxBytes) {
					t.Errorf("device %s: %d bytes in %d deliveries counted in flight; bounds %d, %d", dev, c[0], c[1], maxBytes, maxCount)
				}
				mu.Unlock()
				mu.Lock()
				c = cur[dev]
				c[0] -= int64(size)
				c[1]--
				cur[dev] = c
				mu.Unlock()
				h.release()
			}
		})
	}
	wg.Wait()
	if n := f.devices(); n != 0 {
		t.Errorf("%d devices still counted; want 0", n)
	}
}
