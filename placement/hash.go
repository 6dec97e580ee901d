package placement

import (
	"cmp"
	"math"
	"slices"
)

// Fmix64 is MurmurHash3's 64-bit finalizer, fmix64, from Austin Appleby's
// reference MurmurHash3.cpp, with its constants:
//
//	x ^= x >> 33; x *= 0xff51afd7ed558ccd
//	x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53
//	x ^= x >> 33
//
// It is a bijection of uint64 in which every input bit affects every output
// bit. Hash runs FNV-1a through it: FNV-1a alone leaves the hashes of keys
// that differ only at their end (a key and a group id) with nearly equal
// high bits, and rendezvous hashing would give the largest group nearly
// every key.
func Fmix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// FNV-1a's 64-bit parameters (hash/fnv).
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// Hash is a stable 64-bit hash of parts, the same in every process and
// release: Fmix64 of the 64-bit FNV-1a of the parts joined by zero bytes.
// Rendezvous hashing scores a key for a group with Hash(key, group); the
// rebalancer orders devices by Hash(device).
func Hash(parts ...string) uint64 {
	h := uint64(fnvOffset64)
	for i, p := range parts {
		if i > 0 {
			h *= fnvPrime64 // a zero byte: h ^= 0 is a no-op
		}
		for j := 0; j < len(p); j++ {
			h ^= uint64(p[j])
			h *= fnvPrime64
		}
	}
	return Fmix64(h)
}

// rendezvousScore is the weighted rendezvous (highest random weight) score
// of key for a group of the given id and capacity: -capacity / ln(u), with
// u uniform in (0,1) from Hash(key, id). The group of highest score wins;
// each wins a share of keys proportional to its capacity.
func rendezvousScore(key, id string, capacity int) float64 {
	u := (float64(Hash(key, id)>>11) + 0.5) / (1 << 53) // uniform in (0,1)
	return -float64(capacity) / math.Log(u)
}

// RendezvousOrder orders groups for key by weighted rendezvous hashing
// (highest random weight, scaled by capacity) and returns their indexes,
// best first. The order depends only on the key and the groups' ids and
// capacities, so every replica computes the same one, across restarts, and
// adding a group moves only the keys it wins. Affinity places a key's
// devices on the first group of this order that has room.
func RendezvousOrder(key string, groups []PoolGroup) []int {
	return rendezvousOrder(len(groups), func(i int) float64 { return rendezvousScore(key, groups[i].ID, groups[i].Capacity) })
}

// rendezvous is RendezvousOrder over candidates.
func rendezvous(key string, cands []Candidate) []int {
	return rendezvousOrder(len(cands), func(i int) float64 { return rendezvousScore(key, cands[i].Group.ID, cands[i].Capacity) })
}

// rendezvousOrder sorts n indexes by descending score.
func rendezvousOrder(n int, score func(i int) float64) []int {
	type scored struct {
		i int
		s float64
	}
	ss := make([]scored, n)
	for i := range n {
		ss[i] = scored{i, score(i)}
	}
	slices.SortFunc(ss, func(a, b scored) int { return cmp.Compare(b.s, a.s) })
	out := make([]int, n)
	for i, s := range ss {
		out[i] = s.i
	}
	return out
}
