// Package storage is the Headroom database engine: it owns the data
// directory, the write-ahead log, the in-memory head, the label index, the
// chunk store and retention. It speaks only in storage/series types and
// knows nothing of gRPC, HTTP or PromQL; it is the only package (with its
// sub-packages) that imports Pebble.
//
// # Write path
//
// An Appender buffers samples; Commit writes them as one WAL record (a
// Pebble key under 'W'), together with any new series and postings keys,
// in a single Pebble batch committed with fsync. Pebble's commit pipeline
// groups concurrent syncs into one, which gives group commit across
// committers. Only then are the samples applied to the head, strictly in
// WAL sequence order, so that a replay after a crash rebuilds the same
// state: "last write wins" means "highest sequence wins".
//
// # The head
//
// Each active series has one open Gorilla chunk. A sample after the head's
// last timestamp is appended; one inside the open chunk's range rewrites
// that chunk (a replacement or a slightly late sample); one before it goes
// to the series' out-of-order buffer. A chunk is sealed at ChunkSamples
// samples, ChunkSpan of time, or a day boundary, so that every chunk lies
// inside one day partition.
//
// A checkpoint (every CheckpointInterval or CheckpointWALBytes of log)
// writes sealed chunks and a copy of every changed open chunk under their
// final keys, merges the out-of-order buffers into the stored chunks of
// their day (this is the background compaction of late samples), records
// the WAL sequence it covers and deletes the log up to it with one
// DeleteRange. On open, the log after the last checkpoint is replayed.
//
// # Keys (part of the on-disk format: never change; see docs/format/storage.md)
//
//	'M' name                                  meta (schema version, checkpoint)
//	'S' seriesID u64                          label set
//	'H' hash u64, seriesID u64                empty: label-set hash -> series
//	'L' seriesID u64                          day u32 of the series' newest stored chunk
//	'P' day u32, name, 0x00, value, 0x00, id  empty: postings per day
//	'C' day u32, seriesID u64, minT u64       chunk value (see chunkValue)
//	'W' seq u64                               WAL record
//
// Integers are big-endian so that byte order is numeric order; timestamps
// are stored as uint64 and never negative (see MinTime).
package storage
