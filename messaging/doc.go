// Package messaging is berth's MessagingService: Send (ONLINE_ONLY or
// QUEUE), Call, GetDevice and Subscribe, served by every control plane
// replica.
//
// A device's presence record, written by the executor that holds its
// stream, names that executor's address: a replica reads it (or its route
// cache) and calls ExecutorInternalService.Deliver there, one hop, through
// the replica's shared connections to executors (package execclient).
// QUEUE messages are stored in the registry before any attempt and removed
// once the device acknowledged them; a failed attempt on a connected device
// puts it on a bounded redelivery schedule. Subscribe follows the publishes
// of every live executor while subscribers exist.
//
// [New] wires a [Server] and starts nothing; [Server.Run] runs the
// subscription hub, the sweeper of expired messages and the redeliverer;
// [Server.Close] ends what remains once the gRPC server stopped.
package messaging
