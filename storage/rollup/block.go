package rollup

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/headroomdb/headroom/storage/chunk"
)

// Block format (docs/format/rollup.md): two Pebble values per block, so
// that the common functions read the columns without the sketches (most
// of the bytes). The column block is written in version 2 (colv2.go);
// version 1, still read, stored each column as a storage/chunk chunk of
// (bucket start, value):
//
//	columns:  version byte (1) | bucket count uvarint |
//	          9 columns, each a uvarint length and a chunk: count, sum,
//	          min, max, first, last, increase, first time and last time
//	          (as offsets from the bucket start) | CRC-32C of everything
//	          before, big-endian
//	sketches: version byte (1) | bucket count uvarint | one sketch per
//	          bucket, each a uvarint length and its encoding | CRC-32C
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

// AppendBlock appends the column block of bs (in increasing Start order,
// at most MaxBlockBuckets, none empty) to dst, in the current format
// (version 2).
func AppendBlock(dst []byte, bs []Bucket) ([]byte, error) {
	if err := checkBuckets(bs); err != nil {
		return nil, err
	}
	return appendColumnsV2(dst, bs)
}

func checkBuckets(bs []Bucket) error {
	if len(bs) == 0 || len(bs) > MaxBlockBuckets {
		return fmt.Errorf("rollup block of %d buckets (1 to %d)", len(bs), MaxBlockBuckets)
	}
	for i := range bs {
		if bs[i].Count <= 0 {
			return fmt.Errorf("rollup bucket at %d is empty", bs[i].Start)
		}
	}
	return nil
}

// appendBlockV1 appends bs as a version 1 column block, which stores can
// still hold: tests write it to check that it still reads.
func appendBlockV1(dst []byte, bs []Bucket) ([]byte, error) {
	if err := checkBuckets(bs); err != nil {
		return nil, err
	}
	start := len(dst)
	dst = append(dst, blockVersion)
	dst = binary.AppendUvarint(dst, uint64(len(bs)))
	for c := 0; c < nColumns; c++ {
		a := chunk.NewAppender()
		for i := range bs {
			b := &bs[i]
			if err := a.Append(b.Start, column(b, c)); err != nil {
				return nil, fmt.Errorf("rollup bucket at %d: %w", b.Start, err)
			}
		}
		col := chunk.Optimize(a.Bytes())
		dst = binary.AppendUvarint(dst, uint64(len(col)))
		dst = append(dst, col...)
	}
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli)), nil
}

// AppendSketches appends the sketch block of bs (the buckets given to
// AppendBlock) to dst.
func AppendSketches(dst []byte, bs []Bucket) []byte {
	start := len(dst)
	dst = append(dst, blockVersion)
	dst = binary.AppendUvarint(dst, uint64(len(bs)))
	var sk []byte
	for i := range bs {
		sk = bs[i].Sketch.AppendBinary(sk[:0])
		dst = binary.AppendUvarint(dst, uint64(len(sk)))
		dst = append(dst, sk...)
	}
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
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

// DecodeBlock decodes a block, its columns and sketches, into buckets
// (appended to dst). Checksums are checked first: a damaged block is an
// error, never wrong numbers.
func DecodeBlock(dst []Bucket, cols, sketches []byte) ([]Bucket, error) {
	var c Columns
	if err := DecodeColumns(&c, cols, ColAll); err != nil {
		return dst, err
	}
	if err := DecodeSketches(&c, sketches); err != nil {
		return dst, err
	}
	for i := range c.Start {
		dst = append(dst, c.Bucket(i))
	}
	return dst, nil
}
