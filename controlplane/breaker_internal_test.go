package controlplane

import (
	"testing"
	"time"
)

func TestWriteBreaker(t *testing.T) {
	now := time.Unix(1000, 0)
	b := writeBreaker{probeEvery: time.Second}
	if !b.allow(now) {
		t.Fatal("closed breaker refused a write")
	}
	b.done(false, now)
	if !b.isOpen() || b.allow(now.Add(500*time.Millisecond)) {
		t.Fatal("after a failure: want open, no write before probeEvery")
	}
	now = now.Add(time.Second)
	if !b.allow(now) {
		t.Fatal("open breaker refused the probe after probeEvery")
	}
	if b.allow(now.Add(5 * time.Second)) {
		t.Fatal("a second write let through while the probe is in flight")
	}
	b.done(false, now)
	if b.allow(now.Add(500 * time.Millisecond)) {
		t.Fatal("failed probe: want the next one only after probeEvery")
	}
	now = now.Add(time.Second)
	if !b.allow(now) {
		t.Fatal("no second probe")
	}
	b.abandon()
	if !b.isOpen() || !b.allow(now) {
		t.Fatal("abandoned probe: want still open, another probe allowed")
	}
	b.done(true, now)
	if b.isOpen() || !b.allow(now) || !b.allow(now) {
		t.Fatal("successful probe: want closed, every write let through")
	}
}
