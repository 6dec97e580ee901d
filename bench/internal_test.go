package bench

import (
	"strings"
	"testing"
)

func TestBucketsHoldTheirValues(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 20, 1<<20 + 12345, 1<<40 - 1, 1 << 62, 1<<63 - 1} {
		i := bucketOf(v)
		lo, width := bucketRange(i)
		if v < lo || v-lo >= width {
			t.Errorf("bucketOf(%d) = %d holding [%d, %d), which misses it", v, i, lo, lo+width)
		}
		if i < prev {
			t.Errorf("bucketOf(%d) = %d, below the bucket of a smaller value (%d)", v, i, prev)
		}
		if i >= numBuckets {
			t.Errorf("bucketOf(%d) = %d, beyond the %d buckets", v, i, numBuckets)
		}
		if width > 1 && float64(width)/float64(lo) > 1.0/subCount+1e-12 {
			t.Errorf("bucket %d is [%d, +%d): wider than 1/%d of its values", i, lo, width, subCount)
		}
		prev = i
	}
	// Consecutive buckets tile the line.
	for i := 0; i < numBuckets-1; i++ {
		lo, w := bucketRange(i)
		next, _ := bucketRange(i + 1)
		if lo+w != next {
			t.Fatalf("bucket %d ends at %d, bucket %d starts at %d", i, lo+w, i+1, next)
		}
	}
}

func TestPlanConns(t *testing.T) {
	tests := []struct {
		name             string
		devices, addrs   int
		limit            uint64
		wantConns, wantP int
		wantErr          string
	}{
		{name: "one connection per stream", devices: 10000, addrs: 1, limit: 20000, wantConns: 10000, wantP: 1},
		{name: "unknown limit", devices: 50000, addrs: 1, limit: 0, wantConns: 50000, wantP: 1},
		{name: "shared connections when the parent runs out", devices: 30000, addrs: 2, limit: 20000, wantConns: 300, wantP: 100},
		{name: "parent just out of files", devices: 19900, addrs: 2, limit: 20000, wantConns: 199, wantP: 100},
		{name: "too many even shared", devices: 2000000, addrs: 200, limit: 20000, wantErr: "need 20000 connections"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := planConns(tt.devices, tt.addrs, tt.limit)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("planConns(%d, %d, %d) error = %v, want one containing %q", tt.devices, tt.addrs, tt.limit, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("planConns(%d, %d, %d): %v", tt.devices, tt.addrs, tt.limit, err)
			}
			if p.Conns != tt.wantConns || p.StreamsPerConn != tt.wantP {
				t.Errorf("planConns(%d, %d, %d) = %d conns × %d streams, want %d × %d", tt.devices, tt.addrs, tt.limit, p.Conns, p.StreamsPerConn, tt.wantConns, tt.wantP)
			}
		})
	}
}
