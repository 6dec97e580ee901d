// Package rebalance moves connected devices on purpose, gently: when the
// policy in force no longer wants them where they are, when their group or
// executor is drained, and when groups drift apart from their fair shares
// by more than a threshold. It is the allocation update process of the
// patent.
//
// [Make] is the planner, a pure function from the registry snapshot, the
// policy and the devices' presence to an ordered list of moves.
// [Rebalancer] runs on every control plane replica and leads on one of
// them at a time (an etcd election); the leader makes a plan every
// interval and moves devices at a cluster-wide rate, each by asking its
// executor (ExecutorInternalService.Move) to send a Redirect that carries a
// destination decided by placement.Decide and a fresh token. Every write
// the leader makes is fenced by its leadership, and its state (plan,
// progress) is in etcd, so a new leader carries on.
package rebalance
