// Package execclient is how a control plane replica talks to executors: one
// client connection per executor address per replica, shared by messaging
// (Deliver, Subscribe) and the rebalancer (Move), each call carrying the
// replica's service token.
//
// [Credentials] mint the token (a [Signer], *token.Signer in production)
// and mint it again at half its life; when minting fails, the current token
// serves while it is valid, and once it expired the calls fail with
// INTERNAL naming the cause, rather than reaching an executor with an
// expired token. [Pool] lends connections ([Pool.Acquire]), closes those to
// executors that left the registry once they have been idle for a while
// ([Pool.Run]), and closes every one at the end ([Pool.Close]).
// [DialOptions] are the options of every connection to an executor.
//
// Time comes from Deps.Now, so tests move it by hand.
package execclient
