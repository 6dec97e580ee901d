package fleet_test

import (
	"math"
	"testing"
	"time"

	"github.com/berthproject/berth/fleet"
)

// A steady rate of n per window reads n once settled; a quiet day divides
// by e; times before the record leave it alone.
func TestHistoryDecays(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var h fleet.History
	// 240 messages per day, 10 an hour, for 20 days.
	for i := range 20 * 24 {
		h = h.Fold(fleet.Usage{Messages: 10, Bytes: 1000}, t0.Add(time.Duration(i)*time.Hour))
	}
	if math.Abs(h.Messages-240)/240 > 0.03 {
		t.Errorf("steady 240/day reads %.1f messages, want about 240", h.Messages)
	}
	if math.Abs(h.Bytes-24000)/24000 > 0.03 {
		t.Errorf("steady 24000 B/day reads %.1f bytes, want about 24000", h.Bytes)
	}
	later := h.Decayed(h.At.Add(fleet.HistoryWindow))
	if got, want := later.Messages, h.Messages/math.E; math.Abs(got-want) > 1e-9 {
		t.Errorf("after a quiet window: %v messages, want %v", got, want)
	}
	if got := h.Decayed(h.At.Add(-time.Hour)); got != h {
		t.Errorf("decayed to an earlier time: %+v, want unchanged %+v", got, h)
	}
	if (fleet.Usage{}).IsZero() != true || (fleet.Usage{Connects: 1}).IsZero() {
		t.Error("IsZero wrong")
	}
}
