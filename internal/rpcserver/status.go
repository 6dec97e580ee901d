package rpcserver

import (
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// PushbackTrailer is the trailer that tells gRPC clients (and gRPC's retry
// policies) how long to wait before retrying, in milliseconds.
const PushbackTrailer = "grpc-retry-pushback-ms"

// Pushback is the trailer asking a client to wait retry, to go with
// WithRetry's status.
func Pushback(retry time.Duration) metadata.MD {
	return metadata.Pairs(PushbackTrailer, strconv.FormatInt(retry.Milliseconds(), 10))
}

// WithRetry makes a status of code c and msg carrying a RetryInfo detail
// that asks the client to wait retry before it tries again.
func WithRetry(c codes.Code, msg string, retry time.Duration) error {
	st := status.New(c, msg)
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); err == nil {
		return d.Err()
	}
	return st.Err()
}
