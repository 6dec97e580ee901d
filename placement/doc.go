// Package placement decides which processing group a device joins. It is
// pure: a decision is a function of a fleet.Snapshot (groups, executors,
// tenants), a compiled policy, what is known of the device and the devices
// already sent somewhere but not yet counted (Pending). It does no I/O,
// keeps no state between calls (apart from Policies, a cache of compiled
// policies) and imports neither gRPC nor etcd, so every question about
// placement can be asked of it directly, in tests and in tools.
//
// # A decision
//
// Decide places one device in four steps, and its Decision keeps what each
// step saw, so that "why was device X placed there?" has an answer
// (Decision.Reason in a line, Decision.Candidates in full):
//
//  1. Label. The policy's rules, CEL expressions over the device's inputs
//     (PolicyInput: its spec, tenant, services and history), are tried in
//     order; the first that matches gives the device's label, else the
//     policy's default label.
//  2. Candidates. The groups that carry the label are measured: a group is
//     dropped when it is not active, has no executor that is not draining,
//     or is full (Dropped* give the reasons). If none is left, each of the
//     label's fallback labels is tried in order. A group's effective
//     capacity is its own, bounded by the sum of its usable executors';
//     what it holds is its executors' connections (or their load, when the
//     policy balances by load) plus Pending.
//  3. Pick. Sticky (when the policy enables it): back to the device's last
//     group if that stays within a margin of the fair share. Else affinity
//     (when the policy declares a key, such as the tenant): the first group
//     in the key's rendezvous order (RendezvousOrder) with room under a
//     bound, so that devices with the same key share a group. Else balance:
//     the candidate least utilized once the device is added, relative to
//     capacity.
//  4. Endpoints. The chosen group's usable executors, least utilized first.
//
// ErrNoGroup and ErrNoCapacity say why a device could not be placed.
//
// # Hashing
//
// Rendezvous order and the rebalancer's order of devices use Hash, FNV-1a
// finished by MurmurHash3's fmix64 (Fmix64): stable across processes and
// releases, so every control plane replica computes the same order.
//
// # Around a decision
//
// PoolFor says which groups devices of a label are balanced among (the
// rebalancer's unit); LoadWeight turns a device's traffic history into its
// weight; ValidatePolicy, DryRun and Explain answer operators' questions
// about a policy before and after it is applied; Policies compiles the
// stored policy once per version for the control plane and the rebalancer.
// The control plane's reservations implement Pending, and the control
// plane serves Assign around Decide; the rebalancer moves devices with the
// same Decide.
package placement
