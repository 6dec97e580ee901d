package bench

import (
	"math"
	"math/bits"
	"time"
)

// subBits is the precision of a Histogram: each power of two is split into
// 2^subBits buckets, so a recorded value is known within 1/2^subBits
// (0.8%) of itself.
const subBits = 7

// Bucket layout. Values below 2^(subBits+1) each have their own bucket;
// above, the bucket of v is found from its top subBits+1 bits and its
// magnitude. 64-bit values need (64-subBits)·2^subBits buckets.
const (
	subCount   = 1 << subBits
	exactLimit = 2 * subCount
	numBuckets = (64 - subBits) << subBits
)

// Histogram records durations (nanoseconds) in log-linear buckets, after
// HdrHistogram: fixed memory (about 58 KiB), constant-time Record, and
// quantiles accurate to 1/128 of the value. It is not safe for concurrent
// use: give each worker its own and Merge them afterwards.
type Histogram struct {
	counts   [numBuckets]uint64
	n        uint64
	sum      float64
	min, max int64
}

// NewHistogram returns an empty Histogram.
func NewHistogram() *Histogram { return &Histogram{min: math.MaxInt64} }

// bucketOf returns the bucket index of v >= 0.
func bucketOf(v uint64) int {
	if v < exactLimit {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return shift<<subBits + int(v>>shift)
}

// bucketRange returns the smallest value of bucket i and how many values it
// holds.
func bucketRange(i int) (lo, width uint64) {
	if i < exactLimit {
		return uint64(i), 1
	}
	shift := i>>subBits - 1
	top := uint64(i - shift<<subBits)
	return top << shift, 1 << shift
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(uint64(v))]++
	h.n++
	h.sum += float64(v)
	h.min = min(h.min, v)
	h.max = max(h.max, v)
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Min returns the smallest recorded value, exactly (0 when empty).
func (h *Histogram) Min() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.min)
}

// Max returns the largest recorded value, exactly (0 when empty).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the mean of the recorded values (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the value below or at which a fraction q (0 to 1) of the
// recorded values lie: the highest value of the bucket holding that rank,
// bounded by the exact minimum and maximum. It is 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		seen += c
		if seen >= rank {
			lo, width := bucketRange(i)
			v := int64(min(lo+width-1, uint64(math.MaxInt64)))
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
