// Package executor is berth's stream server: it holds the long-lived
// ExecutorService.Connect streams of the devices assigned to one processing
// group.
//
// A stream is accepted with a deadline, verified, registered, and served by
// its handler goroutine alone while it is idle (the goroutines of bare
// grpc-go: see docs/performance.md):
//
//   - Accept: the first frame must be a Hello and must arrive within
//     Config.HelloTimeout. Its assignment token must verify (on a short-lived
//     goroutine, so that the handler's stack stays small), be minted for
//     the device named in the Hello and for this executor's group. A
//     draining executor refuses with UNAVAILABLE, a full one with
//     RESOURCE_EXHAUSTED. Nothing is registered for a refused stream.
//   - Register: the device's session is put in a map keyed by device id. A
//     second stream of the same device replaces the first on purpose: the
//     old stream gets Goodbye{REPLACED} and is closed, and the device counts
//     once against Config.Capacity. The old stream's deferred unregister
//     leaves the map alone, because the map no longer points at it. A
//     stream of the device on another executor replaces it too: the
//     Registrar reports it (Registrar.OnReplaced; the registry's order of
//     presence writes decides which session is newer) and the older stream
//     gets the same Goodbye{REPLACED}.
//   - Send: frames go through a bounded queue (Config.SendQueue frames:
//     Welcome, Messages from Server.Deliver, Redirects, Pings) drained by
//     the stream's sender: the handler for the Welcome, later a goroutine
//     that enqueue starts when it queues a frame and no sender runs, and
//     that ends when the queue is empty. One sender at a time sends; an
//     idle stream has none.
//   - Receive: the handler goroutine reads Acks, Replies, Pongs and
//     Publishes; it resolves the deliveries waiting for an Ack or Reply,
//     hands Publishes to the subscribers, and Acks and Publishes to
//     Config.Hooks.
//   - Heartbeat: one goroutine per executor visits the sessions on a wheel
//     (a session once per Config.PingInterval, the first visit one interval
//     after its admission): it queues a Ping with an increasing nonce,
//     closes a stream from which nothing arrived for
//     PingMisses*PingInterval with Goodbye{TIMEOUT}, and cuts one whose
//     Send has been blocked as long (a device that sends but does not
//     read).
//   - Presence: an admitted session's presence (device, executor, group,
//     address, session, since) is handed to the Registrar, which writes it
//     under the executor's lease; it is cleared when the session leaves,
//     unless a newer session of the device has replaced it (here or on
//     another executor: the delete is conditional in etcd too).
//   - Queue: with WithQueue, a goroutine per admitted session delivers the
//     device's queued messages after the Welcome, in order and one at a
//     time: each is sent as a Message (message_id the queued id, sent_at
//     its enqueue time), the next waits for its Ack, and an acked message
//     is removed from the queue. Expired messages are removed unsent. The
//     goroutine stops when the queue is empty (messages queued later for
//     the online device come through Deliver) or the session ends; a
//     message not acked by then stays queued and comes again on the next
//     stream (at least once; the device drops duplicates by id). Failed
//     reads and removals are retried with backoff while the session lasts.
//     Before it reads the queue, the goroutine waits until the session's
//     presence is written (the Registrar tells, or the registry shows it
//     when the Queue can read presence), so that a message stored while
//     the presence was not yet visible to control planes is in its read.
//
// # Control plane calls
//
// ExecutorInternalService is served on the same listener (Run), or, when
// Config.InternalAddress is set, on an internal listener of its own
// (RunSplit), which control planes reach over their own network: each
// listener then refuses the other's service with UNIMPLEMENTED, and a
// fault between control planes and the executor leaves devices alone.
// Its calls must
// carry "authorization: Bearer <token>" with a service token of a control
// plane (token.RoleControlPlane), checked by the same Verifier as the
// devices' tokens: UNAUTHENTICATED without a token or with one that does
// not verify, PERMISSION_DENIED with any other token. A service token that
// verified is remembered until it expires, so that a Deliver does not pay
// for a signature check. ExecutorService itself needs no metadata; its
// Hello carries the device's token.
//
//   - Deliver queues a Message on the device's stream and waits, within the
//     call's deadline, for the device's Ack of it, or its Reply when the
//     message expects one (a Reply also acknowledges; an Ack does not
//     answer a call). NOT_FOUND when the device has no stream here,
//     RESOURCE_EXHAUSTED when its send queue is full (the stream is then
//     closed), DEADLINE_EXCEEDED when it did not acknowledge in time,
//     UNAVAILABLE when its stream ended before it did.
//   - Subscribe streams every Publish this executor receives from then on.
//     Each subscriber has a buffer of Config.SubscribeBuffer publishes;
//     when it is full, publishes are dropped for that subscriber and
//     counted (Stats.PublishesDropped), never holding up a device.
//     Subscribe streams end with UNAVAILABLE at shutdown.
//
// Streams the executor closes on purpose end with a status after their
// Goodbye: ABORTED when replaced, DEADLINE_EXCEEDED after the ping timeout,
// UNAVAILABLE at shutdown; INVALID_ARGUMENT for a second Hello. A device
// that closes its side (CloseSend) ends its stream with OK.
//
// Overflow policy: enqueueing never blocks. When a stream's send queue is
// full the device is not reading fast enough; the stream is considered stuck
// and is ended at once with RESOURCE_EXHAUSTED (without a Goodbye, which
// could not get through either; a device that reads nothing may see the
// connection's end instead), so that one slow device never holds up the
// executor. Frames still queued on a closed stream are dropped: delivery is
// confirmed by Acks, not by Deliver returning nil.
//
// How a stream ends with the executor's status although its handler sits in
// Recv: a gRPC handler can only end its stream by returning, or by a Recv
// that fails, which writes CANCELLED first. So the sender that finishes a
// closed session (after the Goodbye) ends the stream itself through gRPC's
// server transport stream (grpc.ServerTransportStreamFromContext, whose
// WriteStatus any goroutine may call): the status is the one the handler
// returns, its Recv and any blocked Send return at once, and the handler's
// return changes nothing. The same cuts a stuck stream, or one whose
// Goodbye cannot be written within a second. A gRPC whose transport stream
// lacked WriteStatus would fail every stream with INTERNAL (and the tests).

// # Lifecycle
//
// New validates the Config and wires the dependencies; it does no I/O. Run
// serves on a listener, marks the gRPC health service SERVING (overall and
// for berth.executor.v1.ExecutorService; RunSplit's internal listener
// marks berth.executor.v1.ExecutorInternalService, which a drain leaves
// SERVING) and keeps the executor's record in
// the registry through a Registrar, whose Connections, Load and Draining
// fields it updates as streams come and go. Cancelling Run's context shuts
// down in this order: health NOT_SERVING; the record marked Draining; a
// Redirect{DRAINING} with max_delay Config.RedirectSpread to every stream;
// a wait until every device has left or Config.DrainTimeout has passed;
// Goodbye{SHUTDOWN} to the streams that remain; the Subscribe streams
// ended; the gRPC server stopped
// with a short deadline; and last the Registrar stopped, which revokes its
// lease so the record disappears after the streams are gone. Drain does the
// redirect part on demand without stopping.
package executor
