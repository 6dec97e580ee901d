package device

import (
	"errors"
	"fmt"
	"testing"
	"time"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func fixed(f float64) func() float64 { return func() float64 { return f } }

func TestBackoffDelay(t *testing.T) {
	cfg := backoff.Config{BaseDelay: time.Second, Multiplier: 2, Jitter: 0.2, MaxDelay: 10 * time.Second}
	tests := []struct {
		name    string
		retries int
		rnd     float64
		want    time.Duration
	}{
		{name: "first retry is the base delay", retries: 0, rnd: 0.5, want: time.Second},
		{name: "grows by the multiplier", retries: 1, rnd: 0.5, want: 2 * time.Second},
		{name: "grows again", retries: 3, rnd: 0.5, want: 8 * time.Second},
		{name: "capped at MaxDelay", retries: 4, rnd: 0.5, want: 10 * time.Second},
		{name: "stays capped", retries: 1000, rnd: 0.5, want: 10 * time.Second},
		{name: "lowest jitter", retries: 0, rnd: 0, want: 800 * time.Millisecond},
		{name: "highest jitter", retries: 0, rnd: 0.75, want: 1100 * time.Millisecond},
		{name: "jitter applies to the cap", retries: 1000, rnd: 0, want: 8 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := backoffDelay(cfg, tt.retries, fixed(tt.rnd)); got != tt.want {
				t.Errorf("backoffDelay(retries=%d, rnd=%v) = %v, want %v", tt.retries, tt.rnd, got, tt.want)
			}
		})
	}
}

func TestBackoffDelayGrowsAndIsCapped(t *testing.T) {
	cfg := backoff.DefaultConfig
	var prev time.Duration
	for r := range 30 {
		got := backoffDelay(cfg, r, fixed(0.5))
		if got < prev {
			t.Errorf("retries=%d: delay %v shrank from %v", r, got, prev)
		}
		if got > cfg.MaxDelay {
			t.Errorf("retries=%d: delay %v above MaxDelay %v", r, got, cfg.MaxDelay)
		}
		prev = got
	}
	if prev != cfg.MaxDelay {
		t.Errorf("delay after 30 retries = %v, want MaxDelay %v", prev, cfg.MaxDelay)
	}
	for _, rnd := range []float64{0, 0.25, 0.5, 0.999} {
		got := backoffDelay(cfg, 100, fixed(rnd))
		lo := time.Duration(float64(cfg.MaxDelay) * (1 - cfg.Jitter))
		hi := time.Duration(float64(cfg.MaxDelay) * (1 + cfg.Jitter))
		if got < lo || got > hi {
			t.Errorf("rnd=%v: delay %v outside [%v, %v]", rnd, got, lo, hi)
		}
	}
}

func TestApplyHints(t *testing.T) {
	base := backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Minute}
	tests := []struct {
		name  string
		hints *controlplanev1.ReconnectHints
		want  backoff.Config
	}{
		{name: "no hints", hints: nil, want: base},
		{name: "empty hints", hints: &controlplanev1.ReconnectHints{}, want: base},
		{
			name: "every field",
			hints: &controlplanev1.ReconnectHints{
				BaseDelay: durationpb.New(5 * time.Second), Multiplier: 2, Jitter: 0.5,
				MaxDelay: durationpb.New(5 * time.Minute),
			},
			want: backoff.Config{BaseDelay: 5 * time.Second, Multiplier: 2, Jitter: 0.5, MaxDelay: 5 * time.Minute},
		},
		{
			name:  "one field",
			hints: &controlplanev1.ReconnectHints{MaxDelay: durationpb.New(2 * time.Minute)},
			want:  backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Minute},
		},
		{
			name:  "insane hints ignored",
			hints: &controlplanev1.ReconnectHints{Multiplier: 0.5, Jitter: 3},
			want:  base,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := applyHints(base, tt.hints); got != tt.want {
				t.Errorf("applyHints() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	withHint, _ := status.New(codes.ResourceExhausted, "shed").
		WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)})
	tests := []struct {
		name string
		err  error
		want time.Duration
	}{
		{name: "nil", err: nil, want: 0},
		{name: "plain error", err: errors.New("x"), want: 0},
		{name: "status without details", err: status.Error(codes.Unavailable, "x"), want: 0},
		{name: "status with RetryInfo", err: withHint.Err(), want: 3 * time.Second},
		{name: "wrapped status with RetryInfo", err: fmt.Errorf("device: assign: %w", withHint.Err()), want: 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryDelay(tt.err); got != tt.want {
				t.Errorf("retryDelay(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestRefused(t *testing.T) {
	tests := []struct {
		code codes.Code
		want bool
	}{
		{codes.Unauthenticated, true},
		{codes.PermissionDenied, true},
		{codes.FailedPrecondition, true},
		{codes.ResourceExhausted, false},
		{codes.Unavailable, false},
		{codes.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			err := fmt.Errorf("device: executor x: %w", status.Error(tt.code, "m"))
			if got := refused(err); got != tt.want {
				t.Errorf("refused(%v) = %v, want %v", tt.code, got, tt.want)
			}
		})
	}
}
