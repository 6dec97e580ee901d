package device

import "testing"

func TestStateString(t *testing.T) {
	tests := []struct {
		s    State
		want string
	}{
		{Idle, "idle"},
		{Assigning, "assigning"},
		{Connecting, "connecting"},
		{Connected, "connected"},
		{Backoff, "backoff"},
		{Closed, "closed"},
		{State(42), "State(42)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("State(%d).String() = %q, want %q", int(tt.s), got, tt.want)
		}
	}
}
