package rpcserver_test

import (
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/internal/rpcserver"
)

func TestWithRetry(t *testing.T) {
	tests := []struct {
		name  string
		code  codes.Code
		retry time.Duration
	}{
		{name: "shed", code: codes.ResourceExhausted, retry: time.Second},
		{name: "unavailable", code: codes.Unavailable, retry: 250 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := status.Convert(rpcserver.WithRetry(tt.code, "try later", tt.retry))
			var got time.Duration
			for _, d := range st.Details() {
				if ri, ok := d.(*errdetails.RetryInfo); ok {
					got = ri.GetRetryDelay().AsDuration()
				}
			}
			if st.Code() != tt.code || st.Message() != "try later" || got != tt.retry {
				t.Errorf("WithRetry = %v %q retry %v; want %v %q retry %v", st.Code(), st.Message(), got, tt.code, "try later", tt.retry)
			}
		})
	}
}
