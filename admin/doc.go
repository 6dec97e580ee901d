// Package admin is berth's AdminService, served by every control plane
// replica for operators and `berth ctl`: the placement policy (get, apply
// after complete validation, dry run, explain a device's placement), the
// drain marks of groups and executors, and the rebalancer's status, pause
// and resume.
//
// [New] wires a [Server] on the replica's registry cache, the policy in
// force, and the registry's stores; it starts nothing. [ApplyPolicy],
// [ApplyPolicyMigrating], [ExplainResponse] and [RebalanceStatus] are the
// same steps for callers that hold the registry themselves.
package admin
