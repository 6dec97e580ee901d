// Package bench holds berth's benchmarks, the ones `berth bench` runs and
// the README quotes.
//
// RunAssign measures the control plane's Assign against a no-op unary RPC
// served by the same gRPC server stack, in one process on an embedded etcd.
// RunStreams measures what an executor pays per idle device stream against a
// bare grpc-go server holding the same streams; each server runs in its own
// child process (see Serve) so that its memory is its own.
//
// Latencies go into a Histogram: log-linear buckets of fixed memory, one per
// worker, merged at the end.
package bench
