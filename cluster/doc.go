// Package cluster owns Headroom's cluster mode on NATS JetStream (issue
// 19, docs/cluster.md): a node's writes are checked whole (their new
// series with their owners' active-series limits, limits.go), split by
// partition and published to a replicated stream (Appender); each
// partition's owners, chosen by rendezvous hashing and held by leases in
// a key-value bucket (Node), apply its messages to their own store with
// the stream sequence as a storage mark in the same commit; and reads
// fan out to one serving owner of each partition over the internal
// Select call, which returns chunks (Node.Querier).
//
// It must not reach into the storage engine's internals: it appends,
// marks and selects through the Local interfaces, which the server
// fills with its storage.DB; it must not depend on Pebble.
package cluster
