package controlplane

import (
	"testing"
	"time"
)

// TestAdmissionSpreadsTheBacklog: past the burst, refusals carry hints that
// grow with the backlog and are spread over the time it needs at the
// admitted rate, so that the refused come back at about that rate.
func TestAdmissionSpreadsTheBacklog(t *testing.T) {
	now := time.Unix(1000, 0)
	a := newAdmission(100, 10, time.Second, func() time.Time { return now })
	for i := range 10 {
		if _, ok := a.admit(); !ok {
			t.Fatalf("call %d of the burst of 10 refused", i)
		}
	}
	var hints []time.Duration
	for range 1000 {
		hint, ok := a.admit()
		if ok {
			t.Fatal("admitted past the burst with no time passing")
		}
		hints = append(hints, hint)
	}
	// The i-th refusal waits for the i-th slot of 10 ms (plus a slot of
	// jitter) after the base second: the refused come back at the rate.
	for i, h := range hints {
		lo := time.Second + time.Duration(i)*10*time.Millisecond
		if h < lo || h > lo+10*time.Millisecond {
			t.Fatalf("refusal %d: hint %v, want within [%v, %v]", i, h, lo, lo+10*time.Millisecond)
		}
	}
	// Slots already passed are not handed out again.
	now = now.Add(time.Hour)
	for range 10 {
		a.admit()
	}
	if h, ok := a.admit(); ok || h > time.Second+10*time.Millisecond {
		t.Errorf("an hour later, past the burst: hint %v (admitted %v), want one slot after the base", h, ok)
	}
	// A token per 1/rate once time passes.
	now = now.Add(10 * time.Millisecond)
	if _, ok := a.admit(); !ok {
		t.Error("refused after 1/rate")
	}
	if newAdmission(0, 10, time.Second, time.Now) != nil {
		t.Error("rate 0 should mean no admission bound")
	}
}
