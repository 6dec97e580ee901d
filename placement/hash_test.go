package placement_test

import (
	"fmt"
	"hash/fnv"
	"math/big"
	"strings"
	"testing"

	"github.com/berthproject/berth/placement"
)

// murmur3x64_128Empty is MurmurHash3_x64_128 of the empty input, written
// from the reference algorithm (MurmurHash3.cpp): with no block and no
// tail, only the finalization runs, so the result rests on fmix64 alone.
func murmur3x64_128Empty(seed uint32) (uint64, uint64) {
	h1, h2 := uint64(seed), uint64(seed)
	// h1 ^= len; h2 ^= len, with len 0.
	h1 += h2
	h2 += h1
	h1, h2 = placement.Fmix64(h1), placement.Fmix64(h2)
	h1 += h2
	h2 += h1
	return h1, h2
}

// TestFmix64PublishedVectors checks Fmix64 against published
// MurmurHash3_x64_128 values of the empty input: the test table of
// github.com/spaolacci/murmur3 (murmur_test.go, the h64_1/h64_2 columns),
// which agree with Appleby's reference implementation.
func TestFmix64PublishedVectors(t *testing.T) {
	tests := []struct {
		seed   uint32
		h1, h2 uint64
	}{
		{0x00, 0x0000000000000000, 0x0000000000000000},
		{0x01, 0x4610abe56eff5cb5, 0x51622daa78f83583},
		{0x2a, 0xf02aa77dfa1b8523, 0xd1016610da11cbb9},
	}
	for _, tt := range tests {
		h1, h2 := murmur3x64_128Empty(tt.seed)
		if h1 != tt.h1 || h2 != tt.h2 {
			t.Errorf("MurmurHash3_x64_128(\"\", seed %#x) with Fmix64 = %#016x %#016x, want %#016x %#016x", tt.seed, h1, h2, tt.h1, tt.h2)
		}
	}
}

// fmix64Big computes fmix64 again, independently of Fmix64: in math/big
// arithmetic, the products reduced modulo 2^64 explicitly, with the
// constants spelled in decimal.
func fmix64Big(x uint64) uint64 {
	mod := new(big.Int).Lsh(big.NewInt(1), 64)
	c1, _ := new(big.Int).SetString("18397679294719823053", 10) // 0xff51afd7ed558ccd
	c2, _ := new(big.Int).SetString("14181476777654086739", 10) // 0xc4ceb9fe1a85ec53
	v := new(big.Int).SetUint64(x)
	xorShift := func() { v.Xor(v, new(big.Int).Rsh(v, 33)) }
	xorShift()
	v.Mul(v, c1).Mod(v, mod)
	xorShift()
	v.Mul(v, c2).Mod(v, mod)
	xorShift()
	return v.Uint64()
}

func TestFmix64MatchesBigArithmetic(t *testing.T) {
	tests := []uint64{0, 1, 2, 3, 0x2a, 1 << 63, 0x0123456789abcdef, 0xfedcba9876543210, 0xffffffffffffffff, 0xcbf29ce484222325}
	for _, x := range tests {
		if got, want := placement.Fmix64(x), fmix64Big(x); got != want {
			t.Errorf("Fmix64(%#016x) = %#016x, want %#016x", x, got, want)
		}
	}
}

// TestHash: Hash is the 64-bit FNV-1a of the parts joined by zero bytes
// (as hash/fnv computes it), through Fmix64.
func TestHash(t *testing.T) {
	tests := []struct {
		name  string
		parts []string
	}{
		{"nothing", nil},
		{"empty", []string{""}},
		{"device id", []string{"dev-000042"}},
		{"key and group", []string{"tenant-7", "g01"}},
		{"empty key", []string{"", "g01"}},
		{"three parts", []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fnv.New64a()
			h.Write([]byte(strings.Join(tt.parts, "\x00")))
			if got, want := placement.Hash(tt.parts...), placement.Fmix64(h.Sum64()); got != want {
				t.Errorf("Hash(%q) = %#016x, want %#016x", tt.parts, got, want)
			}
		})
	}
	if placement.Hash("ab", "c") == placement.Hash("a", "bc") {
		t.Error(`Hash("ab", "c") == Hash("a", "bc"): parts are not separated`)
	}
}

// TestRendezvousOrder: the order is a permutation that depends on the key
// and the groups only, and keys spread over groups in proportion to
// capacity.
func TestRendezvousOrder(t *testing.T) {
	groups := []placement.PoolGroup{{ID: "g1", Capacity: 100}, {ID: "g2", Capacity: 200}, {ID: "g3", Capacity: 100}}
	wins := make([]int, len(groups))
	const keys = 8000
	for i := range keys {
		key := fmt.Sprintf("tenant-%d", i)
		order := placement.RendezvousOrder(key, groups)
		seen := map[int]bool{}
		for _, j := range order {
			seen[j] = true
		}
		if len(order) != len(groups) || len(seen) != len(groups) {
			t.Fatalf("RendezvousOrder(%q) = %v, want a permutation of %d groups", key, order, len(groups))
		}
		if again := placement.RendezvousOrder(key, groups); again[0] != order[0] {
			t.Fatalf("RendezvousOrder(%q) first %d, then %d", key, order[0], again[0])
		}
		wins[order[0]]++
	}
	for i, g := range groups {
		want := keys * g.Capacity / 400
		if d := wins[i] - want; d < -want/10 || d > want/10 {
			t.Errorf("group %s won %d of %d keys, want %d±10%% (all: %v)", g.ID, wins[i], keys, want, wins)
		}
	}
}
