package storage

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/headroomdb/headroom/storage/series"
)

// Key kinds. Part of the on-disk format: never change.
const (
	kindMeta     = 'M'
	kindSeries   = 'S'
	kindHash     = 'H'
	kindLast     = 'L'
	kindPostings = 'P'
	kindChunk    = 'C'
	kindWAL      = 'W'
	kindRollup   = 'R' // tier partition seriesID blockStart -> rollup column block
	kindSketch   = 'K' // the same -> the block's sketch block
	kindRollMark = 'Q' // seriesID day -> generation: the series' day changed in Pebble since it was rolled up
	kindFloor    = 'F' // seriesID -> day: the series' raw partitions before it were dropped by a retention rule
	// Kinds of schema 1's first downsampler, read only to convert them
	// (migrate.go).
	kindDirty      = 'D' // tier bucketStart seriesID [commit seq] -> empty: roll up again
	kindBackfill   = 'B' // seriesID t -> value: a sample for the rollups only
	kindMetricMeta = 'T' // metric name -> type, unit, help (metadata.go)
	kindHistChunk  = 'N' // day seriesID minT -> native histogram chunk, valued as 'C' (hist.go)
	kindHistRollup = 'G' // tier partition seriesID blockStart -> histogram rollup block (histtier.go)

	schemaVersion = 1
	chunkValueV1  = 1
)

const msPerDay = 24 * 60 * 60 * 1000

// dayOf returns the day partition of timestamp t: day d holds the
// samples in (d x 1 day, (d+1) x 1 day], left-open like rollup buckets and
// PromQL windows, so that a day partition is exactly the samples of the
// first tier's block of that day (a sample at midnight closes the day
// before it). t = 0 is in day 0.
func dayOf(t int64) uint32 {
	if t <= 0 {
		return 0
	}
	return uint32((t - 1) / msPerDay)
}

// closedDayOf is the day partition of t before dayOf was left-open
// (chunks written until 2026-12): [d x 1 day, (d+1) x 1 day). A range
// scan reads the partitions of both rules: dayOf(mint) .. closedDayOf(maxt).
func closedDayOf(t int64) uint32 { return uint32(max(t, 0) / msPerDay) }

func seriesKey(id uint64) []byte {
	k := make([]byte, 9)
	k[0] = kindSeries
	binary.BigEndian.PutUint64(k[1:], id)
	return k
}

func hashKey(h, id uint64) []byte {
	k := make([]byte, 17)
	k[0] = kindHash
	binary.BigEndian.PutUint64(k[1:], h)
	binary.BigEndian.PutUint64(k[9:], id)
	return k
}

// histLastKey is 'L' id 'N': the day of the series' newest histogram
// chunk, kept apart from 'L' id, which resumes float chunks.
func histLastKey(id uint64) []byte { return append(lastKey(id), kindHistChunk) }

func lastKey(id uint64) []byte {
	k := make([]byte, 9)
	k[0] = kindLast
	binary.BigEndian.PutUint64(k[1:], id)
	return k
}

func walKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = kindWAL
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

func metaKey(name string) []byte { return append([]byte{kindMeta}, name...) }

// chunkKey appends 'C' day id minT to dst.
func chunkKey(dst []byte, day uint32, id uint64, minT int64) []byte {
	dst = append(dst, kindChunk)
	dst = binary.BigEndian.AppendUint32(dst, day)
	dst = binary.BigEndian.AppendUint64(dst, id)
	return binary.BigEndian.AppendUint64(dst, uint64(minT))
}

// histChunkKey appends 'N' day id minT to dst.
func histChunkKey(dst []byte, day uint32, id uint64, minT int64) []byte {
	n := len(dst)
	dst = chunkKey(dst, day, id, minT)
	dst[n] = kindHistChunk
	return dst
}

// parseChunkKey parses a float ('C') or histogram ('N') chunk key.
func parseChunkKey(k []byte) (day uint32, id uint64, minT int64, ok bool) {
	if len(k) != 21 || (k[0] != kindChunk && k[0] != kindHistChunk) {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(k[1:]), binary.BigEndian.Uint64(k[5:]), int64(binary.BigEndian.Uint64(k[13:])), true
}

// postingPrefix appends 'P' day name 0x00 value 0x00 to dst.
func postingPrefix(dst []byte, day uint32, name, value string) []byte {
	dst = append(dst, kindPostings)
	dst = binary.BigEndian.AppendUint32(dst, day)
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, value...)
	return append(dst, 0)
}

// parsePosting splits a postings key. Names never hold 0x00 (they are
// validated), so the name ends at the first 0x00; values may hold 0x00,
// so the value is everything up to the id's separator.
func parsePosting(k []byte) (day uint32, name, value []byte, id uint64, ok bool) {
	if len(k) < 1+4+1+1+8 || k[0] != kindPostings || k[len(k)-9] != 0 {
		return 0, nil, nil, 0, false
	}
	day = binary.BigEndian.Uint32(k[1:])
	rest := k[5 : len(k)-9]
	for i, c := range rest {
		if c == 0 {
			return day, rest[:i], rest[i+1:], binary.BigEndian.Uint64(k[len(k)-8:]), true
		}
	}
	return 0, nil, nil, 0, false
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte { return incPrefix(append([]byte(nil), p...)) }

// incPrefix turns p, in place, into the smallest key greater than every
// key with prefix p (nil when there is none: p is all 0xff).
func incPrefix(p []byte) []byte {
	for i := len(p) - 1; i >= 0; i-- {
		p[i]++
		if p[i] != 0 {
			return p[:i+1]
		}
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// A stored chunk value (version 1; part of the on-disk format):
//
//	byte 0      1 (value version)
//	uvarint     maxT - minT (minT is in the key)
//	4 bytes     CRC-32C of the chunk bytes, big-endian
//	rest        the chunk (storage/chunk format)
//
// maxT lets a range scan skip a chunk without decoding it; the checksum
// turns a flipped bit on disk into an error instead of wrong numbers.
func appendChunkValue(dst []byte, minT, maxT int64, chk []byte) []byte {
	dst = append(dst, chunkValueV1)
	dst = binary.AppendUvarint(dst, uint64(maxT-minT))
	dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(chk, castagnoli))
	return append(dst, chk...)
}

// CorruptionError reports stored bytes that fail their checks, and where.
type CorruptionError struct {
	Key []byte
	Err error
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("corrupt data at key %x: %v", e.Key, e.Err)
}

func (e *CorruptionError) Unwrap() error { return e.Err }

func parseChunkValue(key, v []byte) (maxT int64, chk []byte, err error) {
	_, _, minT, ok := parseChunkKey(key)
	if !ok || len(v) < 1 || v[0] != chunkValueV1 {
		return 0, nil, &CorruptionError{Key: key, Err: fmt.Errorf("chunk value of %d bytes has a bad header", len(v))}
	}
	span, n := binary.Uvarint(v[1:])
	if n <= 0 || len(v) < 1+n+4 {
		return 0, nil, &CorruptionError{Key: key, Err: fmt.Errorf("chunk value of %d bytes is truncated", len(v))}
	}
	chk = v[1+n+4:]
	if crc32.Checksum(chk, castagnoli) != binary.BigEndian.Uint32(v[1+n:]) {
		return 0, nil, &CorruptionError{Key: key, Err: fmt.Errorf("chunk checksum mismatch")}
	}
	return minT + int64(span), chk, nil
}

// Label sets are stored as uvarint count, then uvarint-length-prefixed
// name and value strings.
func appendLabels(dst []byte, ls series.Labels) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ls)))
	for _, l := range ls {
		dst = binary.AppendUvarint(dst, uint64(len(l.Name)))
		dst = append(dst, l.Name...)
		dst = binary.AppendUvarint(dst, uint64(len(l.Value)))
		dst = append(dst, l.Value...)
	}
	return dst
}

func decodeLabels(key, b []byte) (series.Labels, error) {
	bad := func(what string) (series.Labels, error) {
		return nil, &CorruptionError{Key: key, Err: fmt.Errorf("label set: %s", what)}
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return bad("bad count")
	}
	b = b[k:]
	ls := make(series.Labels, 0, n)
	str := func() (string, bool) {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return "", false
		}
		s := string(b[k : k+int(l)])
		b = b[k+int(l):]
		return s, true
	}
	for i := uint64(0); i < n; i++ {
		name, ok1 := str()
		value, ok2 := str()
		if !ok1 || !ok2 {
			return bad("truncated")
		}
		ls = append(ls, series.Label{Name: name, Value: value})
	}
	return ls, nil
}

// rollMarkKey appends 'Q' id day to dst.
func rollMarkKey(dst []byte, id uint64, day uint32) []byte {
	dst = append(dst, kindRollMark)
	dst = binary.BigEndian.AppendUint64(dst, id)
	return binary.BigEndian.AppendUint32(dst, day)
}

func floorKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{kindFloor}, id)
}
