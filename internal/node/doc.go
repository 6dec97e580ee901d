// Package node holds the composition roots of berth's servers: one for a
// control plane replica ([Replica]) and one for an executor ([Executor]).
// `berth controlplane`, `berth executor`, `berth dev` (internal/devcluster)
// and the benchmarks build their servers here and nowhere else, so that a
// server option is added in one place: the Config structs carry every
// part's Config, and New wires the parts in the one order that is right.
//
// A replica serves ControlPlaneService (Assign), MessagingService and
// AdminService on one gRPC server, with one registry cache, one pool of
// connections to executors (shared by messaging and the rebalancer) and,
// when configured, the rebalancer. It reports SERVING once the cache is
// loaded and stops in this order: health NOT_SERVING, a graceful stop of
// the gRPC server bounded by StopTimeout and then a hard one, messaging's
// Close, then the rebalancer, the pool and the cache.
//
// An executor registers itself, holds device streams (package executor)
// and records its devices' usage with a recorder that outlives the
// streams, so that the usage of the last ones is written too.
package node
