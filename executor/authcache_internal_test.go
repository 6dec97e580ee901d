package executor

import (
	"fmt"
	"testing"
	"time"
)

func TestServiceTokensRemembered(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var c serviceTokens
	if c.valid("a", now) {
		t.Fatal("an unknown token is valid")
	}
	c.add("a", now.Add(time.Minute), now)
	c.add("old", now, now) // already expired: not remembered
	tests := []struct {
		raw  string
		at   time.Time
		want bool
	}{
		{"a", now, true},
		{"a", now.Add(59 * time.Second), true},
		{"old", now, false},
		{"b", now, false},
		{"a", now.Add(time.Minute), false}, // expired: forgotten
		{"a", now, false},
	}
	for _, tt := range tests {
		if got := c.valid(tt.raw, tt.at); got != tt.want {
			t.Errorf("valid(%q, +%v) = %v; want %v", tt.raw, tt.at.Sub(now), got, tt.want)
		}
	}
	// Bounded: past maxServiceTokens the memory starts again.
	for i := range maxServiceTokens + 1 {
		c.add(fmt.Sprint("t", i), now.Add(time.Minute), now)
	}
	if n := len(c.exp); n > maxServiceTokens {
		t.Errorf("%d tokens remembered; want at most %d", n, maxServiceTokens)
	}
}
