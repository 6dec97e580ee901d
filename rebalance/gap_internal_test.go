package rebalance

import (
	"testing"
	"time"
)

// A round comes every Interval while planning is cheap; once a plan costs
// more than a planDuty-th of it, rounds space out so that planning keeps to
// that share of the leader's time.
func TestRoundGap(t *testing.T) {
	for _, tt := range []struct {
		interval, cost, want time.Duration
	}{
		{time.Second, 0, time.Second},
		{time.Second, 36 * time.Millisecond, time.Second}, // 10,000 devices here
		{time.Second, 100 * time.Millisecond, time.Second},
		{time.Second, 360 * time.Millisecond, 3600 * time.Millisecond},
		{time.Second, 3600 * time.Millisecond, 36 * time.Second}, // a million
		{10 * time.Millisecond, 2 * time.Millisecond, 20 * time.Millisecond},
	} {
		if got := roundGap(tt.interval, tt.cost); got != tt.want {
			t.Errorf("roundGap(%v, %v) = %v, want %v", tt.interval, tt.cost, got, tt.want)
		}
		if got := roundGap(tt.interval, tt.cost); got < planDuty*tt.cost || got < tt.interval {
			t.Errorf("roundGap(%v, %v) = %v: planning would take more than 1/%d of the time, or rounds come faster than the interval", tt.interval, tt.cost, got, planDuty)
		}
	}
}
