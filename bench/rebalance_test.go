package bench

import (
	"testing"
	"time"

	"github.com/berthproject/berth/rebalance"
)

func TestMinimumMoves(t *testing.T) {
	th := rebalance.Thresholds{Rel: 0.1, Abs: 100}
	groups := []string{"g1", "g2", "g3", "g4", "g5"}
	tests := []struct {
		name string
		by   map[string]int
		want int
	}{
		// 20,000 over 5: fair 4,000, threshold 400; the new group needs 3,600.
		{"new empty group", map[string]int{"g1": 5000, "g2": 5000, "g3": 5000, "g4": 5000}, 3600},
		{"balanced", map[string]int{"g1": 4000, "g2": 4000, "g3": 4000, "g4": 4000, "g5": 4000}, 0},
		{"at the bounds", map[string]int{"g1": 4400, "g2": 4400, "g3": 3600, "g4": 3600, "g5": 4000}, 0},
		// One over by 600 (200 beyond), nobody under beyond the bound.
		{"one over", map[string]int{"g1": 4600, "g2": 3850, "g3": 3850, "g4": 3850, "g5": 3850}, 200},
	}
	for _, tt := range tests {
		if got := minimumMoves(tt.by, groups, th); got != tt.want {
			t.Errorf("%s: minimumMoves = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestPerSecondAndCountingMover(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var p perSecond
	for i := range 5 {
		p.add(t0.Add(time.Duration(i) * 100 * time.Millisecond))
	}
	p.add(t0.Add(2 * time.Second))
	if got := p.peak(t0, t0.Add(3*time.Second)); got != 5 {
		t.Errorf("peak = %d, want 5", got)
	}
	c := &countingMover{at: []time.Time{t0, t0.Add(900 * time.Millisecond), t0.Add(1500 * time.Millisecond), t0.Add(5 * time.Second)}}
	if n, peak := c.result(t0, t0.Add(2*time.Second)); n != 3 || peak != 2 {
		t.Errorf("result = %d, %d; want 3 moves, at most 2 in a second", n, peak)
	}
}

func TestRebalanceConfigValidate(t *testing.T) {
	c := DefaultRebalanceConfig()
	if err := c.Validate(); err == nil {
		t.Error("Validate() without commands = nil, want an error")
	}
	c.ExecutorCommand, c.SimulateCommand = []string{"berth", "bench", "serve"}, []string{"berth", "simulate"}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
	c.Fleets = 1
	if err := c.Validate(); err == nil {
		t.Error("Validate() with 20,000 devices in one fleet = nil, want an error (open files)")
	}
}
