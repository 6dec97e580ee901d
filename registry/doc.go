// Package registry is berth's etcd keyspace: processing groups, executors and
// assignment records, with typed reads and writes, executor registrations
// bound to leases, and a watch-fed in-memory cache so that nothing on a hot
// path goes to etcd and back per request.
//
// Keys live under a configurable prefix (default "/berth") and values are
// JSON, so `etcdctl get --prefix /berth/` shows them as they are:
//
//	<prefix>/groups/<group id>          Group
//	<prefix>/executors/<executor id>    Executor, under the executor's lease
//	<prefix>/assignments/<device id>    Assignment
//
// The values themselves (Group, Executor, Assignment, History, Tenant,
// StoredPolicy) and the immutable Snapshot the cache publishes are package
// fleet's, which needs no etcd; the names here are aliases of them.
//
// This is the only package that imports the etcd client.
package registry
