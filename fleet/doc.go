// Package fleet is the plain data berth keeps about its fleet — groups,
// executors, assignments, tenants, policies, history — and the immutable
// Snapshot placement reads; no I/O.
//
// Package registry stores these values in etcd as JSON (the struct tags
// below are that form) and keeps a watch-fed Snapshot of them; package
// placement decides from a Snapshot. Neither the types nor the Snapshot know
// where the values came from, so placement and its tests need no etcd.
package fleet
