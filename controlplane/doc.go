// Package controlplane is berth's control plane: the Assign server that tells
// each device which processing group to join, the placement that decides it
// from an immutable registry snapshot, and the reservations that keep a burst
// of Assigns from overfilling one group before executor heartbeats catch up.
//
// Assign never reads etcd on its path: it reads the registry cache, and it
// writes the device's assignment record only when the record changed.
package controlplane
