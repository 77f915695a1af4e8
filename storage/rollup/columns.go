package rollup

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/headroomdb/headroom/storage/chunk"
)

// Columns of a block, for DecodeColumns.
const (
	ColCount = 1 << iota
	ColSum
	ColMin
	ColMax
	ColFirst
	ColLast
	ColIncrease
	ColFirstT
	ColLastT
	ColSketch // DecodeSketches, from its own block
	ColAll    = 1<<10 - 1
)

// Columns holds a run of buckets column by column: a query reads two or
// three columns of thousands of buckets, as float slices, without
// touching the others. A column not decoded is empty.
type Columns struct {
	Start                                       []int64
	Count, Sum, Min, Max, First, Last, Increase []float64
	FirstT, LastT                               []int64
	Sketches                                    []Sketch
}

// Len returns the number of buckets.
func (c *Columns) Len() int { return len(c.Start) }

// Reset empties c, keeping its arrays.
func (c *Columns) Reset() {
	c.Start, c.Count, c.Sum, c.Min, c.Max = c.Start[:0], c.Count[:0], c.Sum[:0], c.Min[:0], c.Max[:0]
	c.First, c.Last, c.Increase = c.First[:0], c.Last[:0], c.Increase[:0]
	c.FirstT, c.LastT, c.Sketches = c.FirstT[:0], c.LastT[:0], c.Sketches[:0]
}

// Bucket returns bucket i as a Bucket (the columns not decoded are zero).
func (c *Columns) Bucket(i int) Bucket {
	b := Bucket{Start: c.Start[i]}
	get := func(col []float64) float64 {
		if i < len(col) {
			return col[i]
		}
		return 0
	}
	b.Count = int64(get(c.Count))
	b.Sum, b.Min, b.Max, b.First, b.Last, b.Increase = get(c.Sum), get(c.Min), get(c.Max), get(c.First), get(c.Last), get(c.Increase)
	if i < len(c.FirstT) {
		b.FirstT = c.FirstT[i]
	}
	if i < len(c.LastT) {
		b.LastT = c.LastT[i]
	}
	if i < len(c.Sketches) {
		b.Sketch = c.Sketches[i].clone() // the columns' memory is reused
	}
	return b
}

// SetBuckets makes c hold bs (in time order), the columns in cols only,
// as DecodeColumns would have decoded them from a block of bs.
func (c *Columns) SetBuckets(bs []Bucket, cols uint) {
	c.Reset()
	for i := range bs {
		b := &bs[i]
		c.Start = append(c.Start, b.Start)
		if cols&ColCount != 0 {
			c.Count = append(c.Count, float64(b.Count))
		}
		if cols&ColSum != 0 {
			c.Sum = append(c.Sum, b.Sum)
		}
		if cols&ColMin != 0 {
			c.Min = append(c.Min, b.Min)
		}
		if cols&ColMax != 0 {
			c.Max = append(c.Max, b.Max)
		}
		if cols&ColFirst != 0 {
			c.First = append(c.First, b.First)
		}
		if cols&ColLast != 0 {
			c.Last = append(c.Last, b.Last)
		}
		if cols&ColIncrease != 0 {
			c.Increase = append(c.Increase, b.Increase)
		}
		if cols&ColFirstT != 0 {
			c.FirstT = append(c.FirstT, b.FirstT)
		}
		if cols&ColLastT != 0 {
			c.LastT = append(c.LastT, b.LastT)
		}
		if cols&ColSketch != 0 {
			c.Sketches = append(c.Sketches, b.Sketch.clone())
		}
	}
}

// openBlock checks a block's checksum and version and returns its bucket
// count and the bytes after it.
func openBlock(b []byte, what string) (int, []byte, error) {
	if len(b) < 6 {
		return 0, nil, fmt.Errorf("%w: %d-byte %s block", ErrCorrupt, len(b), what)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return 0, nil, fmt.Errorf("%w: %s block checksum mismatch", ErrCorrupt, what)
	}
	if body[0] != blockVersion {
		return 0, nil, fmt.Errorf("%w: %s block version %d", ErrCorrupt, what, body[0])
	}
	n, rest, ok := uvarint(body[1:])
	if !ok || n == 0 || n > MaxBlockBuckets {
		return 0, nil, fmt.Errorf("%w: %s block bucket count", ErrCorrupt, what)
	}
	return int(n), rest, nil
}

// DecodeColumns appends a column block's buckets to c, decoding only the
// columns in cols (Col*; the start times always, from the first column
// decoded, or from the last when none is asked for). The checksum is
// checked first: a damaged block is an error, never wrong numbers.
func DecodeColumns(c *Columns, b []byte, cols uint) error {
	if len(b) > 0 && b[0] == colVersion2 {
		return decodeColumnsV2(c, b, cols)
	}
	n, rest, err := openBlock(b, "column")
	if err != nil {
		return err
	}
	first := len(c.Start)
	var it chunk.Iterator
	sp := scratch.Get().(*[]colSample)
	defer scratch.Put(sp)
	for col := 0; col < nColumns; col++ {
		l, r, ok := uvarint(rest)
		if !ok || l > uint64(len(r)) {
			return fmt.Errorf("%w: column %d length", ErrCorrupt, col)
		}
		data := r[:l]
		rest = r[l:]
		// The starts come from the first column decoded (every column
		// holds them): a query of max decodes one column, not two.
		if cols&(1<<col) == 0 && !(col == nColumns-1 && len(c.Start) == first) {
			continue
		}
		it.Reset(data)
		vals, _ := chunk.AppendRange(&it, (*sp)[:0], math.MinInt64, math.MaxInt64)
		*sp = vals
		if err := it.Err(); err != nil {
			return fmt.Errorf("%w: column %d: %v", ErrCorrupt, col, err)
		}
		if len(vals) != n {
			return fmt.Errorf("%w: column %d has %d buckets, not %d", ErrCorrupt, col, len(vals), n)
		}
		if len(c.Start) == first {
			for _, x := range vals {
				c.Start = append(c.Start, x.T)
			}
			if cols&(1<<col) == 0 {
				continue // the last column, decoded for its starts only
			}
		}
		if col == 0 {
			for _, x := range vals {
				if x.V < 1 || x.V != math.Trunc(x.V) {
					return fmt.Errorf("%w: bucket count %v", ErrCorrupt, x.V)
				}
				c.Count = append(c.Count, x.V)
			}
			continue
		}
		starts := c.Start[first:]
		for i, x := range vals {
			if x.T != starts[i] {
				return fmt.Errorf("%w: column %d bucket %d starts at %d, not %d", ErrCorrupt, col, i, x.T, starts[i])
			}
		}
		switch col {
		case 7, 8:
			dst := &c.FirstT
			if col == 8 {
				dst = &c.LastT
			}
			for i, x := range vals {
				if x.V != math.Trunc(x.V) || math.Abs(x.V) > 1<<53 {
					return fmt.Errorf("%w: sample time offset %v", ErrCorrupt, x.V)
				}
				*dst = append(*dst, starts[i]+int64(x.V))
			}
		default:
			dst := [...]*[]float64{nil, &c.Sum, &c.Min, &c.Max, &c.First, &c.Last, &c.Increase}[col]
			for _, x := range vals {
				*dst = append(*dst, x.V)
			}
		}
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d bytes after the columns", ErrCorrupt, len(rest))
	}
	return nil
}

// DecodeSketches appends a sketch block's sketches to c.Sketches: the
// block of the columns last decoded into c, which it must match in
// length.
func DecodeSketches(c *Columns, b []byte) error {
	n, rest, err := openBlock(b, "sketch")
	if err != nil {
		return err
	}
	if len(c.Sketches)+n != len(c.Start) {
		return fmt.Errorf("%w: %d sketches for %d buckets", ErrCorrupt, n, len(c.Start)-len(c.Sketches))
	}
	for i := 0; i < n; i++ {
		l, r, ok := uvarint(rest)
		if !ok || l > uint64(len(r)) {
			return fmt.Errorf("%w: sketch %d length", ErrCorrupt, i)
		}
		// Columns are reused from series to series: so are the sketches'
		// bins beyond the length.
		if len(c.Sketches) < cap(c.Sketches) {
			c.Sketches = c.Sketches[:len(c.Sketches)+1]
		} else {
			c.Sketches = append(c.Sketches, Sketch{})
		}
		tail, err := c.Sketches[len(c.Sketches)-1].decode(r[:l])
		if err != nil {
			c.Sketches = c.Sketches[:len(c.Sketches)-1]
			return err
		}
		if len(tail) != 0 {
			return fmt.Errorf("%w: %d bytes after sketch %d", ErrCorrupt, len(tail), i)
		}
		rest = r[l:]
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d bytes after the sketches", ErrCorrupt, len(rest))
	}
	return nil
}

// BlockLen returns how many buckets a column block holds, from its
// header, without decoding its columns: what a store taking another
// store's blocks as they are checks against their sketch block (a
// damaged column is found when it is decoded, as an error).
func BlockLen(b []byte) (int, error) {
	if len(b) > 0 && b[0] == colVersion2 {
		h, err := parseV2Checked(b, true)
		return h.n, err
	}
	n, _, err := openBlock(b, "column")
	return n, err
}

// SketchBlockLen returns how many sketches a sketch block holds, its
// checksum checked.
func SketchBlockLen(b []byte) (int, error) {
	n, _, err := openBlock(b, "sketch")
	return n, err
}
