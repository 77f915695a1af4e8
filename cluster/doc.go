// Package cluster will own Headroom's cluster mode on NATS JetStream
// (issue 19, docs/cluster.md): partitioning writes into replicated
// streams, partition ownership with leases in a key-value bucket, and
// the fan-out of reads. It must not reach into the storage engine's
// internals: it appends and selects through the same interfaces as the
// single-node server. This first step holds only the test harness that
// runs a real three-server JetStream cluster inside the test process.
package cluster
