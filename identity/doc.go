// Package identity authenticates devices at Assign: an X.509 client
// certificate that chains to an enrollment's CA, or a short-lived signature
// made with a key derived from a symmetric enrollment's key, or (only where
// enrollment is open) nobody in particular. It reads enrollments and
// revocations from a watch-fed view, never from etcd, and says who the
// caller is, or why not, with sentinels the RPC edges map to
// UNAUTHENTICATED and PERMISSION_DENIED.
package identity
