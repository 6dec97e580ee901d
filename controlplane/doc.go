// Package controlplane is berth's control plane replica: the Assign server
// that tells each device which processing group to join.
//
// An Assign is answered in steps: the request is validated (bad input is
// INVALID_ARGUMENT, naming the field); the device's inputs, assignment
// record and traffic history are read from the registry cache; package
// placement decides the group (placement.Decide, with the policy in force
// compiled once per version by placement.Policies); a reservation on the
// chosen executor counts the device until the executor's record counts it
// (the reservation's ticket goes to the device, back to the executor in its
// Hello, and into the executor's record with its count), so that a burst of
// Assigns does not overfill one group (the reservations are the
// placement.Pending Decide reads, and devices other replicas assigned count
// too, learnt from their assignment records); the device's assignment
// record is written when it changed; and a signed assignment token is
// minted for the device and its group. The device's identity is proved
// first when an Authenticator is configured (see package identity).
//
// Assign never reads etcd on its path: it reads the registry cache, and it
// writes the device's assignment record only when the record changed.
package controlplane
