package messaging

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
)

// Deliveries in flight per device. A replica reaches every device of an
// executor through one HTTP/2 connection (package execclient), and the
// executor's server lets that connection carry at most
// rpcserver.Config.MaxConcurrentStreams (100) calls at once. A Deliver
// holds its stream until the device acknowledges the message, so 100
// pushes at a device that does not read, or acknowledges slowly, held
// every stream of the connection: the executor's other devices' Sends
// through that replica waited for a free stream, until the pushes ended
// (with small messages, which the stuck stream's transport takes without
// filling its send queue, that was the pushes' deadline; see
// TestFaultStuckDeviceOthersUnaffected in e2e).
//
// So a replica bounds what is in flight to each device: at most
// InFlightPerDevice deliveries and InFlightBytesPerDevice payload bytes.
// Past either bound the delivery is refused at once, before anything is
// written or sent, with RESOURCE_EXHAUSTED and a retry hint. A single
// message larger than the byte bound still goes when nothing else is in
// flight to its device. Every delivery a replica makes is counted (Send
// ONLINE_ONLY, the immediate attempt of a QUEUE Send, Call, and the
// redelivery of queues): a QUEUE message refused by the bound stays stored
// and is redelivered later, within the bound too.
//
// The bound is per replica: N replicas may have N times as much in flight
// to a device, each through its own connections.

// errDeviceBusy is wrapped by the error of a delivery refused because its
// device has as much in flight as the bounds allow.
var errDeviceBusy = errors.New("messaging: deliveries in flight to the device at the bound")

// busyError is a refusal by the in-flight bound: what the device had in
// flight when the delivery of size bytes was refused, and the bounds.
type busyError struct {
	device             string
	size               int64
	bytes              int64
	count              int
	maxBytes, maxCount int64
}

func (e *busyError) Error() string {
	return fmt.Sprintf("%v: device %s has %d bytes in %d deliveries in flight (at most %d bytes and %d deliveries); refused %d more bytes",
		errDeviceBusy, e.device, e.bytes, e.count, e.maxBytes, e.maxCount, e.size)
}

func (e *busyError) Unwrap() error { return errDeviceBusy }

// inflightShards splits the counters so that concurrent deliveries to
// different devices rarely share a lock.
const inflightShards = 64

// inflight counts the deliveries in flight per device. A device has an
// entry only while one of its deliveries is in flight: the last release
// removes it, so the map never holds more devices than there are
// deliveries under way (each one a call being served), whatever number of
// device ids was ever seen.
type inflight struct {
	maxBytes, maxCount int64
	seed               maphash.Seed
	shards             [inflightShards]inflightShard
}

type inflightShard struct {
	mu sync.Mutex
	m  map[string]inflightUse
}

// inflightUse is what one device has in flight.
type inflightUse struct {
	bytes int64
	count int
}

func newInflight(maxBytes, maxCount int64) *inflight {
	f := &inflight{maxBytes: maxBytes, maxCount: maxCount, seed: maphash.MakeSeed()}
	for i := range f.shards {
		f.shards[i].m = map[string]inflightUse{}
	}
	return f
}

// held is one delivery counted in flight; release it once it is over.
type held struct {
	sh     *inflightShard
	device string
	size   int64
}

// acquire counts a delivery of size bytes to device, or refuses it (a
// non-nil *busyError) when the device's deliveries in flight are at a bound. A
// delivery larger than the byte bound is let through when nothing else is
// in flight to its device.
func (f *inflight) acquire(device string, size int) (held, *busyError) {
	sh := &f.shards[maphash.String(f.seed, device)%inflightShards]
	n := int64(size)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.m[device]
	if u.count > 0 && (int64(u.count) >= f.maxCount || u.bytes+n > f.maxBytes) {
		return held{}, &busyError{device: device, size: n, bytes: u.bytes, count: u.count, maxBytes: f.maxBytes, maxCount: f.maxCount}
	}
	u.bytes += n
	u.count++
	sh.m[device] = u
	return held{sh: sh, device: device, size: n}, nil
}

// release uncounts the delivery; the device's entry goes with its last
// delivery. Calling it again, or on the zero held, does nothing.
func (h *held) release() {
	sh := h.sh
	if sh == nil {
		return
	}
	h.sh = nil
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.m[h.device]
	u.bytes -= h.size
	u.count--
	if u.count <= 0 {
		delete(sh.m, h.device)
		return
	}
	sh.m[h.device] = u
}
