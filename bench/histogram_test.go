package bench_test

import (
	"math"
	"testing"
	"time"

	"github.com/berthproject/berth/bench"
)

// precision is the relative error a Histogram promises.
const precision = 1.0 / 128

func within(got, want time.Duration) bool {
	if want == 0 {
		return got == 0
	}
	return math.Abs(float64(got-want))/float64(want) <= precision
}

func TestHistogramSmallValuesAreExact(t *testing.T) {
	h := bench.NewHistogram()
	for v := 1; v <= 200; v++ {
		h.Record(time.Duration(v))
	}
	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0, 1}, {0.01, 2}, {0.5, 100}, {0.99, 198}, {1, 200},
	}
	for _, tt := range tests {
		if got := h.Quantile(tt.q); got != tt.want {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if h.Count() != 200 || h.Min() != 1 || h.Max() != 200 {
		t.Errorf("Count, Min, Max = %d, %v, %v; want 200, 1ns, 200ns", h.Count(), h.Min(), h.Max())
	}
	if got, want := h.Mean(), time.Duration(100); got != want {
		t.Errorf("Mean() = %v, want %v", got, want)
	}
}

func TestHistogramQuantilesWithinPrecision(t *testing.T) {
	tests := []struct {
		name   string
		values func(i int) time.Duration
		n      int
	}{
		{"uniform 1µs to 100ms", func(i int) time.Duration { return time.Duration(i+1) * time.Microsecond }, 100000},
		{"uniform 1ns to 1s", func(i int) time.Duration { return time.Duration(i+1) * 10 * time.Microsecond }, 100000},
		{"exponential", func(i int) time.Duration { return time.Duration(math.Pow(1.0002, float64(i)) * 1000) }, 100000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := bench.NewHistogram()
			for i := range tt.n {
				h.Record(tt.values(i))
			}
			for _, q := range []float64{0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 1} {
				// The values are increasing in i, so the exact quantile
				// is the value of rank ceil(q·n).
				rank := int(math.Ceil(q * float64(tt.n)))
				want := tt.values(rank - 1)
				if got := h.Quantile(q); !within(got, want) {
					t.Errorf("Quantile(%v) = %v, want %v within %.2f%%", q, got, want, 100*precision)
				}
			}
		})
	}
}

func TestHistogramMergeEqualsRecordingAll(t *testing.T) {
	all := bench.NewHistogram()
	parts := []*bench.Histogram{bench.NewHistogram(), bench.NewHistogram(), bench.NewHistogram()}
	for i := range 30000 {
		v := time.Duration(i*i%7919+1) * time.Microsecond
		all.Record(v)
		parts[i%len(parts)].Record(v)
	}
	merged := bench.NewHistogram()
	merged.Merge(bench.NewHistogram()) // merging an empty one changes nothing
	for _, p := range parts {
		merged.Merge(p)
	}
	if merged.Count() != all.Count() || merged.Min() != all.Min() || merged.Max() != all.Max() || merged.Mean() != all.Mean() {
		t.Errorf("merged count/min/max/mean = %d/%v/%v/%v, want %d/%v/%v/%v",
			merged.Count(), merged.Min(), merged.Max(), merged.Mean(), all.Count(), all.Min(), all.Max(), all.Mean())
	}
	for _, q := range []float64{0, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1} {
		if got, want := merged.Quantile(q), all.Quantile(q); got != want {
			t.Errorf("merged Quantile(%v) = %v, want %v", q, got, want)
		}
	}
}

func TestHistogramEdges(t *testing.T) {
	h := bench.NewHistogram()
	if h.Count() != 0 || h.Quantile(0.5) != 0 || h.Min() != 0 || h.Max() != 0 || h.Mean() != 0 {
		t.Errorf("empty histogram: count %d, p50 %v, min %v, max %v, mean %v; want all zero", h.Count(), h.Quantile(0.5), h.Min(), h.Max(), h.Mean())
	}
	h.Record(-time.Second)
	h.Record(time.Duration(math.MaxInt64))
	if got := h.Quantile(0); got != 0 {
		t.Errorf("negative value: Quantile(0) = %v, want 0", got)
	}
	if got := h.Quantile(1); got != time.Duration(math.MaxInt64) {
		t.Errorf("largest value: Quantile(1) = %v, want %v", got, time.Duration(math.MaxInt64))
	}
}
