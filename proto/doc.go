// Package proto holds the wire contracts: the .proto files and the Go code
// generated from them (committed; `make proto` regenerates it with the
// pinned plugins, and TestGeneratedCodeIsFresh fails when it is stale).
// Sub-packages: headroomv1 (Headroom's gRPC API) and prompb (Prometheus
// remote-write 1.0). Nothing here may import the rest of Headroom.
package proto
