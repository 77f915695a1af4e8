package rollup

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"sync"

	"github.com/headroomdb/headroom/storage/chunk"
)

// Block format, version 1 (docs/format/rollup.md):
//
//	version byte (1) | bucket count uvarint |
//	9 columns, each a uvarint length and a storage/chunk chunk of
//	  (bucket start, value): count, sum, min, max, first, last, increase,
//	  first time and last time (as offsets from the bucket start) |
//	one sketch per bucket, each a uvarint length and its encoding |
//	CRC-32C (Castagnoli) of everything before, big-endian.
//
// Columns reuse the sample codec: a column is a regular series of bucket
// starts whose values are mostly small integers or repeat, which the
// decimal and grid encodings store in a few bits per bucket.
const blockVersion = 1

const nColumns = 9

// MaxBlockBuckets bounds a block (a chunk holds at most 65,535 samples).
const MaxBlockBuckets = 4096

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// colSample is a column value as the chunk codec decodes it.
type colSample struct {
	T int64
	V float64
}

// scratch holds decoded columns between calls.
var scratch = sync.Pool{New: func() any { return new([]colSample) }}

// AppendBlock appends the encoding of bs (in increasing Start order, at
// most MaxBlockBuckets, none empty) to dst.
func AppendBlock(dst []byte, bs []Bucket) ([]byte, error) {
	if len(bs) == 0 || len(bs) > MaxBlockBuckets {
		return nil, fmt.Errorf("rollup block of %d buckets (1 to %d)", len(bs), MaxBlockBuckets)
	}
	start := len(dst)
	dst = append(dst, blockVersion)
	dst = binary.AppendUvarint(dst, uint64(len(bs)))
	for c := 0; c < nColumns; c++ {
		a := chunk.NewAppender()
		for i := range bs {
			b := &bs[i]
			if b.Count <= 0 {
				return nil, fmt.Errorf("rollup bucket at %d is empty", b.Start)
			}
			if err := a.Append(b.Start, column(b, c)); err != nil {
				return nil, fmt.Errorf("rollup bucket at %d: %w", b.Start, err)
			}
		}
		col := chunk.Optimize(a.Bytes())
		dst = binary.AppendUvarint(dst, uint64(len(col)))
		dst = append(dst, col...)
	}
	var sk []byte
	for i := range bs {
		sk = bs[i].Sketch.AppendBinary(sk[:0])
		dst = binary.AppendUvarint(dst, uint64(len(sk)))
		dst = append(dst, sk...)
	}
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli)), nil
}

func column(b *Bucket, c int) float64 {
	switch c {
	case 0:
		return float64(b.Count)
	case 1:
		return b.Sum
	case 2:
		return b.Min
	case 3:
		return b.Max
	case 4:
		return b.First
	case 5:
		return b.Last
	case 6:
		return b.Increase
	case 7:
		return float64(b.FirstT - b.Start)
	default:
		return float64(b.LastT - b.Start)
	}
}

func setColumn(b *Bucket, c int, v float64) error {
	switch c {
	case 0:
		if v < 1 || v != math.Trunc(v) || v > 1<<53 {
			return fmt.Errorf("%w: bucket count %v", ErrCorrupt, v)
		}
		b.Count = int64(v)
	case 1:
		b.Sum = v
	case 2:
		b.Min = v
	case 3:
		b.Max = v
	case 4:
		b.First = v
	case 5:
		b.Last = v
	case 6:
		b.Increase = v
	default:
		if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
			return fmt.Errorf("%w: sample time offset %v", ErrCorrupt, v)
		}
		if c == 7 {
			b.FirstT = b.Start + int64(v)
		} else {
			b.LastT = b.Start + int64(v)
		}
	}
	return nil
}

// DecodeBlock decodes a block into buckets (appended to dst). It checks
// the checksum first: a damaged block is an error, never wrong numbers.
func DecodeBlock(dst []Bucket, b []byte) ([]Bucket, error) { return decodeBlock(dst, b, ColAll) }

// Columns of a block, for DecodeBlockColumns.
const (
	ColCount = 1 << iota // always decoded: it gives the buckets' starts
	ColSum
	ColMin
	ColMax
	ColFirst
	ColLast
	ColIncrease
	ColFirstT
	ColLastT
	ColSketch
	ColAll = 1<<10 - 1
)

// DecodeBlockColumns is DecodeBlock decoding only the columns in cols
// (the others are left zero): a query needs two or three of the nine,
// and sketches are most of a block's decoding work.
func DecodeBlockColumns(dst []Bucket, b []byte, cols uint) ([]Bucket, error) {
	return decodeBlock(dst, b, cols|ColCount)
}

func decodeBlock(dst []Bucket, b []byte, cols uint) ([]Bucket, error) {
	if len(b) < 6 {
		return dst, fmt.Errorf("%w: %d-byte block", ErrCorrupt, len(b))
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return dst, fmt.Errorf("%w: block checksum mismatch", ErrCorrupt)
	}
	if body[0] != blockVersion {
		return dst, fmt.Errorf("%w: block version %d", ErrCorrupt, body[0])
	}
	n, rest, ok := uvarint(body[1:])
	if !ok || n == 0 || n > MaxBlockBuckets {
		return dst, fmt.Errorf("%w: block bucket count", ErrCorrupt)
	}
	first := len(dst)
	dst = slices.Grow(dst, int(n))[:first+int(n)]
	bs := dst[first:]
	clear(bs)
	var it chunk.Iterator
	sp := scratch.Get().(*[]colSample)
	defer scratch.Put(sp)
	for c := 0; c < nColumns; c++ {
		l, r, ok := uvarint(rest)
		if !ok || l > uint64(len(r)) {
			return dst[:first], fmt.Errorf("%w: column %d length", ErrCorrupt, c)
		}
		col := r[:l]
		rest = r[l:]
		if cols&(1<<c) == 0 {
			continue
		}
		it.Reset(col)
		if it.Count() != len(bs) {
			return dst[:first], fmt.Errorf("%w: column %d has %d buckets, not %d", ErrCorrupt, c, it.Count(), n)
		}
		vals, _ := chunk.AppendRange(&it, (*sp)[:0], math.MinInt64, math.MaxInt64)
		*sp = vals
		if err := it.Err(); err != nil {
			return dst[:first], fmt.Errorf("%w: column %d: %v", ErrCorrupt, c, err)
		}
		if len(vals) != len(bs) {
			return dst[:first], fmt.Errorf("%w: column %d has %d buckets, not %d", ErrCorrupt, c, len(vals), n)
		}
		for i, x := range vals {
			if c == 0 {
				bs[i].Start = x.T
			} else if bs[i].Start != x.T {
				return dst[:first], fmt.Errorf("%w: column %d bucket %d starts at %d, not %d", ErrCorrupt, c, i, x.T, bs[i].Start)
			}
			if err := setColumn(&bs[i], c, x.V); err != nil {
				return dst[:first], err
			}
		}
	}
	if cols&ColSketch == 0 {
		return dst, nil // the checksum covered the sketches; they are not read
	}
	for i := range bs {
		l, r, ok := uvarint(rest)
		if !ok || l > uint64(len(r)) {
			return dst[:first], fmt.Errorf("%w: sketch %d length", ErrCorrupt, i)
		}
		s, tail, err := DecodeSketch(r[:l])
		if err != nil {
			return dst[:first], err
		}
		if len(tail) != 0 {
			return dst[:first], fmt.Errorf("%w: %d bytes after sketch %d", ErrCorrupt, len(tail), i)
		}
		bs[i].Sketch = *s
		rest = r[l:]
	}
	if len(rest) != 0 {
		return dst[:first], fmt.Errorf("%w: %d bytes after the sketches", ErrCorrupt, len(rest))
	}
	return dst, nil
}
