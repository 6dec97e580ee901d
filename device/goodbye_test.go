package device

import (
	"testing"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

func TestGoodbyeError(t *testing.T) {
	tests := []struct {
		name       string
		frame      *executorv1.Goodbye
		wantReason GoodbyeReason
		wantErr    string
	}{
		{
			name:       "replaced",
			frame:      &executorv1.Goodbye{Reason: executorv1.GoodbyeReason_GOODBYE_REASON_REPLACED, Message: "newer stream"},
			wantReason: GoodbyeReplaced,
			wantErr:    "device: goodbye from executor: replaced: newer stream",
		},
		{
			name:       "shutdown",
			frame:      &executorv1.Goodbye{Reason: executorv1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN},
			wantReason: GoodbyeShutdown,
			wantErr:    "device: goodbye from executor: shutdown",
		},
		{
			name:       "timeout",
			frame:      &executorv1.Goodbye{Reason: executorv1.GoodbyeReason_GOODBYE_REASON_TIMEOUT},
			wantReason: GoodbyeTimeout,
			wantErr:    "device: goodbye from executor: timeout",
		},
		{
			name:       "unspecified",
			frame:      &executorv1.Goodbye{},
			wantReason: GoodbyeUnknown,
			wantErr:    "device: goodbye from executor: unknown",
		},
		{
			name:       "a reason this SDK does not know",
			frame:      &executorv1.Goodbye{Reason: 99, Message: "new"},
			wantReason: GoodbyeUnknown,
			wantErr:    "device: goodbye from executor: unknown: new",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := goodbyeError(tt.frame)
			if got.Reason != tt.wantReason {
				t.Errorf("Reason = %v, want %v", got.Reason, tt.wantReason)
			}
			if got.Error() != tt.wantErr {
				t.Errorf("Error() = %q, want %q", got.Error(), tt.wantErr)
			}
		})
	}
}

func TestGoodbyeReasonString(t *testing.T) {
	tests := []struct {
		r    GoodbyeReason
		want string
	}{
		{GoodbyeUnknown, "unknown"},
		{GoodbyeReplaced, "replaced"},
		{GoodbyeShutdown, "shutdown"},
		{GoodbyeTimeout, "timeout"},
		{GoodbyeReason(42), "GoodbyeReason(42)"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("GoodbyeReason(%d).String() = %q, want %q", int(tt.r), got, tt.want)
		}
	}
}
