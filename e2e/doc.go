// Package e2e holds berth's end-to-end tests: they build the berth binary
// once and start it as real processes (control planes, executors, simulated
// fleets) against a real etcd, kill and stop pieces on purpose, and wait on
// observable conditions with bounds, never on sleeps. Nothing imports it.
package e2e
