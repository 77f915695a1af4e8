// Package chunk is the Gorilla codec: it packs a run of (timestamp, value)
// samples of one series into a compact byte string and walks them back.
// It is pure code, no I/O, and never panics on input bytes: a decoder given
// arbitrary bytes returns an error.
//
// # Format (version 1, "XOR"; part of the on-disk format: never change)
//
//	byte 0      encoding (1 = XOR)
//	bytes 1-2   sample count, uint16 big-endian
//	bytes 3-    bit stream, most significant bit first, zero-padded
//
// The bit stream, after Pelkonen et al., "Gorilla", VLDB 2015:
//
//	sample 0    timestamp: 64 bits (two's complement); value: 64 bits (IEEE 754)
//	sample i>0  timestamp as delta-of-delta D = (t[i]-t[i-1]) - (t[i-1]-t[i-2])
//	            (with t[-1] chosen so that the first delta is D itself):
//	              '0'                     D == 0
//	              '10'   + 14 bits        D in [-8191, 8192]
//	              '110'  + 17 bits        D in [-65535, 65536]
//	              '1110' + 20 bits        D in [-524287, 524288]
//	              '1111' + 64 bits        any other D
//	            (the n-bit fields are two's complement of width n)
//	            value as X = bits(v[i]) XOR bits(v[i-1]):
//	              '0'                     X == 0
//	              '10'  + meaningful bits X fits the previous leading/trailing
//	                                      zero window: its bits between them
//	              '11'  + 5 bits leading zeros (capped at 31)
//	                    + 6 bits count of meaningful bits (0 means 64)
//	                    + the meaningful bits
//
// Timestamps strictly increase within a chunk: the appender refuses a
// timestamp that is not after the previous one, and the iterator reports a
// chunk whose timestamps do not increase as corrupt. Values are carried as
// raw bits, so NaN payloads (Prometheus's stale marker among them), ±Inf
// and -0.0 round-trip exactly.
package chunk
