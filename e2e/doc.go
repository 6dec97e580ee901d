// Package e2e holds berth's end-to-end tests: they build the berth binary
// once and start it as real processes (control planes, executors, simulated
// fleets) against a real etcd, kill and stop pieces on purpose, and wait on
// observable conditions with bounds, never on sleeps. Nothing imports it.
//
// The harness lives apart from the tests: proc_test.go runs berth processes
// and berth ctl, harness_test.go starts clusters and reads what they tell,
// fleet_harness_test.go drives the fleets (berth simulate, or devices of
// the device SDK in the test process). Waits go through internal/testutil
// or wait on a process's output or a fleet's notifications.
package e2e
