// Package ratelimit limits calls per caller identity and method with token
// buckets (golang.org/x/time/rate) kept in a bounded map, as gRPC server
// interceptors. A refused call gets RESOURCE_EXHAUSTED with a RetryInfo
// detail and the grpc-retry-pushback-ms trailer, both telling when the
// caller's bucket has a token again.
package ratelimit
