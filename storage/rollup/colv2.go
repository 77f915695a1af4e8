package rollup

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"
	"sync"

	"github.com/headroomdb/headroom/storage/chunk"
)

// Column block, version 2 (docs/format/rollup.md). Version 1 stored each
// column as a sample chunk: every column repeated the bucket starts, and
// the bit-by-bit decoder cost about as much per bucket value as a raw
// sample, which capped what a tier could save a query. Version 2 stores
// the starts once and each column as values alone, in the cheapest of:
//
//	const    one value for every bucket (a count of 60 at a 60 s scrape,
//	         the offsets of a steady scrape)
//	decimal  integers m at a decimal scale e, bit-packed at a fixed width
//	         from a base (or their differences, for counters), and the
//	         float64 value as m/10^e (decimalValue, without a division)
//	         plus a bit-packed correction in units in the last place:
//	         sums of decimals are not exact decimals, but lie within a
//	         few ulps of one
//	chunk    the version 1 sample chunk, for values that are not decimal
//
// Each column has its own checksum, so that a query reading two of the
// nine columns checks only those bytes.
const colVersion2 = 2

// Column encodings.
const (
	encConst   = 0
	encDecimal = 1
	encChunk   = 2
	// Derived columns, only for min, max (the same as first or last) and
	// increase (last - first), bit for bit in every bucket: a counter's
	// buckets, which never reset inside, have min = first, max = last
	// and increase = last - first, and those three columns were a third
	// of its bytes (issue 13).
	encSame = 3 // one byte: the column it equals (first or last)
	encDiff = 4 // two bytes a, b: the column is column a - column b (last - first)
)

// Start layouts.
const (
	startsRegular = 0 // start_i = first + i*gap
	startsGaps    = 1 // n-1 uvarints: start_i - start_{i-1} in gaps
)

// maxDecimalExp bounds the decimal scale: 10^18 is exact in a float64.
const maxDecimalExp = 18

var pow10 = func() (p [maxDecimalExp + 1]float64) {
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

var invPow10 = func() (p [maxDecimalExp + 1]float64) {
	for i := range p {
		p[i] = 1 / pow10[i]
	}
	return p
}()

// decimalValue approximates m / p (p = 10^e, inv = 1/p) without a
// division, four times the cost of a multiplication: the product, then
// one step of correction from its exact remainder (fused multiply-adds,
// exact in Go on every platform), which makes it the correctly rounded
// quotient in nearly every case; the column's corrections cover the
// rest.
func decimalValue(m int64, p, inv float64) float64 {
	x := float64(m)
	if p == 1 {
		return x
	}
	q := x * inv
	return math.FMA(math.FMA(-q, p, x), inv, q)
}

// bucketColumns lays out bs's columns as float slices, in column order.
func bucketColumns(bs []Bucket) [nColumns][]float64 {
	var cols [nColumns][]float64
	for c := range cols {
		cols[c] = make([]float64, len(bs))
		for i := range bs {
			cols[c][i] = column(&bs[i], c)
		}
	}
	return cols
}

// appendColumnsV2 appends the version 2 column block of bs (checked by
// AppendBlock: 1 to MaxBlockBuckets buckets, none empty) to dst.
func appendColumnsV2(dst []byte, bs []Bucket) ([]byte, error) {
	n := len(bs)
	starts := make([]int64, n)
	var gap int64
	for i := range bs {
		starts[i] = bs[i].Start
		if i > 0 {
			d := starts[i] - starts[i-1]
			if d <= 0 || starts[i] < starts[i-1] {
				return nil, fmt.Errorf("rollup bucket at %d does not follow %d", starts[i], starts[i-1])
			}
			gap = gcd(gap, d)
		}
	}
	cols := bucketColumns(bs)
	// Sums and increases of decimals are decimals at the inputs' scale,
	// give or take a few ulps: the scale of the sample columns is the
	// hint for the columns that are not exact decimals.
	exp := [nColumns]int{}
	hint := -1
	for c := range cols {
		exp[c] = exactExp(cols[c])
		if c >= 2 && c <= 5 && exp[c] > hint {
			hint = exp[c]
		}
	}
	var enc [nColumns][]byte
	for c := range cols {
		if d := derivedColumn(&cols, c); d != nil {
			enc[c] = d
			continue
		}
		enc[c] = appendColumn(nil, cols[c], starts, exp[c], hint)
	}

	start := len(dst)
	dst = append(dst, colVersion2)
	dst = binary.AppendUvarint(dst, uint64(n))
	dst = binary.AppendVarint(dst, starts[0])
	dst = binary.AppendUvarint(dst, uint64(gap))
	regular := true
	for i := 1; i < n; i++ {
		regular = regular && starts[i]-starts[i-1] == gap
	}
	if regular {
		dst = append(dst, startsRegular)
	} else {
		dst = append(dst, startsGaps)
		for i := 1; i < n; i++ {
			dst = binary.AppendUvarint(dst, uint64((starts[i]-starts[i-1])/gap))
		}
	}
	for c := range enc {
		dst = binary.AppendUvarint(dst, uint64(len(enc[c])))
	}
	dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
	for c := range enc {
		dst = append(dst, enc[c]...)
		dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(enc[c], castagnoli))
	}
	return dst, nil
}

// Column numbers of the derived encodings.
const (
	colMin, colMax, colFirst, colLast, colIncrease = 2, 3, 4, 5, 6
)

// derivedColumn returns column c's derived encoding when it has one:
// min or max equal to first or last, increase equal to last - first,
// bit for bit in every bucket.
func derivedColumn(cols *[nColumns][]float64, c int) []byte {
	same := func(a, b []float64) bool {
		for i := range a {
			if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
				return false
			}
		}
		return true
	}
	switch c {
	case colMin, colMax:
		for _, src := range []int{colFirst, colLast} {
			if same(cols[c], cols[src]) {
				return []byte{encSame, byte(src)}
			}
		}
	case colIncrease:
		for i, x := range cols[c] {
			if math.Float64bits(x) != math.Float64bits(cols[colLast][i]-cols[colFirst][i]) {
				return nil
			}
		}
		return []byte{encDiff, colLast, colFirst}
	}
	return nil
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// exactExp returns the smallest decimal scale e at which every value is
// float64(m)/10^e for an integer m of at most 53 bits, or -1.
func exactExp(vals []float64) int {
	e := 0
	for _, v := range vals {
		for {
			if x := v * pow10[e]; math.Abs(x) < 1<<53 {
				if float64(int64(math.Round(x)))/pow10[e] == v && !(v == 0 && math.Signbit(v)) {
					break
				}
			} else {
				return -1 // too large at this scale, or not finite
			}
			if e++; e > maxDecimalExp {
				return -1
			}
		}
	}
	return e
}

// appendColumn appends the cheapest encoding of vals to dst: exp is the
// scale at which they are exact decimals (-1: none), hint the scale to
// try corrections at.
func appendColumn(dst []byte, vals []float64, starts []int64, exp, hint int) []byte {
	allSame := true
	for _, v := range vals[1:] {
		allSame = allSame && math.Float64bits(v) == math.Float64bits(vals[0])
	}
	if allSame {
		dst = append(dst, encConst)
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(vals[0]))
	}
	var best decimalPlan
	switch {
	case exp >= 0:
		best = planDecimal(vals, exp)
	case hint >= 0:
		for e := hint; e <= min(hint+2, maxDecimalExp); e++ {
			if p := planDecimal(vals, e); p.ok && (!best.ok || p.bits < best.bits) {
				best = p
			}
		}
	}
	// A column far from any decimal (a ratio, a rate) is better in the
	// XOR codec; it decodes at version 1's speed.
	if best.ok && best.bits <= 40*len(vals) {
		return best.append(dst, vals)
	}
	a := chunk.NewAppender()
	for i, v := range vals {
		if err := a.Append(starts[i], v); err != nil {
			panic(err) // starts are increasing: checked by the caller
		}
	}
	ch := chunk.Optimize(a.Bytes())
	if best.ok && len(ch)*8 >= best.bits {
		return best.append(dst, vals)
	}
	dst = append(dst, encChunk)
	return append(dst, ch...)
}

// decimalPlan is a column's decimal encoding at scale e.
type decimalPlan struct {
	ok    bool
	e     int
	delta bool  // pack differences from the previous integer
	base  int64 // the smallest packed integer (or difference)
	w, cw int   // bits per integer, per correction
	bits  int   // the packed size
	m0    int64 // the first integer (delta)
}

// decimalInt returns m = round(v * 10^e), and false when |v * 10^e|
// is out of float64's exact integers (or v is not finite).
func decimalInt(v float64, e int) (int64, bool) {
	x := v * pow10[e]
	if !(math.Abs(x) < 1<<53) {
		return 0, false
	}
	return int64(math.Round(x)), true
}

// correction is the difference, in ulps (as bit patterns, modulo 2^64),
// from the decoded approximation of m to v, zigzagged.
func correction(v float64, m int64, e int) uint64 {
	approx := decimalValue(m, pow10[e], invPow10[e])
	c := int64(math.Float64bits(v) - math.Float64bits(approx))
	return uint64(c<<1) ^ uint64(c>>63)
}

func planDecimal(vals []float64, e int) decimalPlan {
	p := decimalPlan{e: e}
	var lo, hi, dlo, dhi int64
	var maxC uint64
	var prev int64
	for i, v := range vals {
		m, ok := decimalInt(v, e)
		if !ok {
			return decimalPlan{}
		}
		if c := correction(v, m, e); c > maxC {
			maxC = c
		}
		if i == 0 {
			lo, hi = m, m
			p.m0 = m
		} else {
			lo, hi = min(lo, m), max(hi, m)
			d := m - prev
			if i == 1 {
				dlo, dhi = d, d
			} else {
				dlo, dhi = min(dlo, d), max(dhi, d)
			}
		}
		prev = m
	}
	n := len(vals)
	p.cw = bits.Len64(maxC)
	p.base, p.w = lo, bits.Len64(uint64(hi-lo))
	p.bits = n*p.w + n*p.cw
	if n > 1 {
		if dw := bits.Len64(uint64(dhi - dlo)); (n-1)*dw+64 < n*p.w {
			p.delta, p.base, p.w = true, dlo, dw
			p.bits = (n-1)*dw + 64 + n*p.cw
		}
	}
	p.ok = true
	return p
}

// append writes the planned encoding of vals.
func (p decimalPlan) append(dst []byte, vals []float64) []byte {
	dst = append(dst, encDecimal, byte(p.e))
	ints := make([]uint64, 0, len(vals))
	corr := make([]uint64, 0, len(vals))
	var prev int64
	for i, v := range vals {
		m, _ := decimalInt(v, p.e)
		corr = append(corr, correction(v, m, p.e))
		switch {
		case !p.delta:
			ints = append(ints, uint64(m-p.base))
		case i > 0:
			ints = append(ints, uint64(m-prev-p.base))
		}
		prev = m
	}
	if p.delta {
		dst = append(dst, 1)
		dst = binary.AppendVarint(dst, p.m0)
	} else {
		dst = append(dst, 0)
	}
	dst = binary.AppendVarint(dst, p.base)
	dst = append(dst, byte(p.w))
	dst = pack(dst, ints, p.w)
	dst = append(dst, byte(p.cw))
	return pack(dst, corr, p.cw)
}

// pack appends vals, w bits each, least significant bit first.
func pack(dst []byte, vals []uint64, w int) []byte {
	if w == 0 {
		return dst
	}
	var acc uint64 // pending bits, the oldest lowest
	var nacc int
	for _, v := range vals {
		if w < 64 {
			v &= 1<<w - 1
		}
		acc |= v << nacc
		if nacc+w >= 64 {
			dst = binary.LittleEndian.AppendUint64(dst, acc)
			used := 64 - nacc // bits of v already written
			if used < 64 {
				acc = v >> used
			} else {
				acc = 0
			}
			nacc = w - used
		} else {
			nacc += w
		}
	}
	for ; nacc > 0; nacc -= 8 {
		dst = append(dst, byte(acc))
		acc >>= 8
	}
	return dst
}

// packedLen is the length of n values packed at w bits.
func packedLen(n, w int) int { return (n*w + 7) / 8 }

// v2Header is a version 2 column block's header, parsed.
type v2Header struct {
	n       int
	first   int64
	gap     int64
	regular bool
	gaps    []byte // startsGaps: the n-1 uvarints
	cols    [nColumns][]byte
	// unchecked: checksums are not verified (fuzzing, to reach the
	// decoders behind them)
	unchecked bool
}

func parseV2(b []byte) (v2Header, error) { return parseV2Checked(b, true) }

func parseV2Checked(b []byte, verify bool) (v2Header, error) {
	h := v2Header{unchecked: !verify}
	body := b
	n, rest, ok := uvarint(body[1:])
	if !ok || n == 0 || n > MaxBlockBuckets {
		return h, fmt.Errorf("%w: column block bucket count", ErrCorrupt)
	}
	h.n = int(n)
	first, k := binary.Varint(rest)
	if k <= 0 {
		return h, fmt.Errorf("%w: column block first start", ErrCorrupt)
	}
	h.first, rest = first, rest[k:]
	gap, rest, ok := uvarint(rest)
	if !ok || gap > math.MaxInt64 || (gap == 0) != (n == 1) || len(rest) == 0 {
		return h, fmt.Errorf("%w: column block start gap", ErrCorrupt)
	}
	h.gap = int64(gap)
	layout := rest[0]
	rest = rest[1:]
	switch layout {
	case startsRegular:
		h.regular = true
		if n > 1 && h.gap > (math.MaxInt64-max(h.first, 0))/int64(n-1) {
			return h, fmt.Errorf("%w: column block starts overflow", ErrCorrupt)
		}
	case startsGaps:
		from := rest
		for i := 1; i < h.n; i++ {
			if _, rest, ok = uvarint(rest); !ok {
				return h, fmt.Errorf("%w: column block start %d", ErrCorrupt, i)
			}
		}
		h.gaps = from[:len(from)-len(rest)]
	default:
		return h, fmt.Errorf("%w: column block start layout %d", ErrCorrupt, layout)
	}
	var lens [nColumns]uint64
	for c := range lens {
		if lens[c], rest, ok = uvarint(rest); !ok {
			return h, fmt.Errorf("%w: column %d length", ErrCorrupt, c)
		}
	}
	if len(rest) < 4 {
		return h, fmt.Errorf("%w: column block header", ErrCorrupt)
	}
	hdrLen := len(b) - len(rest)
	if verify && crc32.Checksum(b[:hdrLen], castagnoli) != binary.BigEndian.Uint32(rest) {
		return h, fmt.Errorf("%w: column block header checksum mismatch", ErrCorrupt)
	}
	rest = rest[4:]
	for c := range lens {
		if lens[c] > uint64(len(rest)) || uint64(len(rest))-lens[c] < 4 {
			return h, fmt.Errorf("%w: column %d length", ErrCorrupt, c)
		}
		h.cols[c] = rest[:lens[c]+4] // with its checksum
		rest = rest[lens[c]+4:]
	}
	if len(rest) != 0 {
		return h, fmt.Errorf("%w: %d bytes after the columns", ErrCorrupt, len(rest))
	}
	return h, nil
}

// appendStarts appends the n bucket starts to dst.
func (h *v2Header) appendStarts(dst []int64) ([]int64, error) {
	s := h.first
	if h.regular {
		for i := 0; i < h.n; i++ {
			dst = append(dst, s)
			s += h.gap
		}
		return dst, nil
	}
	dst = append(dst, s)
	rest := h.gaps
	for i := 1; i < h.n; i++ {
		k, r, _ := uvarint(rest) // checked by parseV2
		rest = r
		if k == 0 || k > math.MaxInt64/uint64(h.gap) || s > math.MaxInt64-int64(k)*h.gap {
			return dst, fmt.Errorf("%w: bucket start %d", ErrCorrupt, i)
		}
		s += int64(k) * h.gap
		dst = append(dst, s)
	}
	return dst, nil
}

// decodeColumn appends column c's n values to dst; starts are the
// block's (for the chunk encoding).
func (h *v2Header) decodeColumn(dst []float64, c int, starts []int64) ([]float64, error) {
	b := h.cols[c]
	body := b[:len(b)-4]
	if !h.unchecked && crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[len(body):]) {
		return dst, fmt.Errorf("%w: column %d checksum mismatch", ErrCorrupt, c)
	}
	if len(body) == 0 {
		return dst, fmt.Errorf("%w: column %d is empty", ErrCorrupt, c)
	}
	n := h.n
	switch body[0] {
	case encConst:
		if len(body) != 9 {
			return dst, fmt.Errorf("%w: constant column %d of %d bytes", ErrCorrupt, c, len(body))
		}
		v := math.Float64frombits(binary.LittleEndian.Uint64(body[1:]))
		for i := 0; i < n; i++ {
			dst = append(dst, v)
		}
		return dst, nil
	case encChunk:
		var it chunk.Iterator
		it.Reset(body[1:])
		sp := scratch.Get().(*[]colSample)
		defer scratch.Put(sp)
		vals, _ := chunk.AppendRange(&it, (*sp)[:0], math.MinInt64, math.MaxInt64)
		*sp = vals
		if err := it.Err(); err != nil {
			return dst, fmt.Errorf("%w: column %d: %v", ErrCorrupt, c, err)
		}
		if len(vals) != n {
			return dst, fmt.Errorf("%w: column %d has %d buckets, not %d", ErrCorrupt, c, len(vals), n)
		}
		for i, x := range vals {
			if x.T != starts[i] {
				return dst, fmt.Errorf("%w: column %d bucket %d starts at %d, not %d", ErrCorrupt, c, i, x.T, starts[i])
			}
			dst = append(dst, x.V)
		}
		return dst, nil
	case encDecimal:
		return h.decodeDecimal(dst, c, body[1:])
	case encSame, encDiff:
		return h.decodeDerived(dst, c, body, starts)
	}
	return dst, fmt.Errorf("%w: column %d encoding %d", ErrCorrupt, c, body[0])
}

// decodeDerived decodes a derived column from the columns it names, which
// must be first or last, themselves stored.
func (h *v2Header) decodeDerived(dst []float64, c int, body []byte, starts []int64) ([]float64, error) {
	stored := func(src byte) bool {
		if src != colFirst && src != colLast {
			return false
		}
		b := h.cols[src]
		return len(b) > 4 && b[0] != encSame && b[0] != encDiff
	}
	switch {
	case body[0] == encSame && (c == colMin || c == colMax) && len(body) == 2 && stored(body[1]):
		return h.decodeColumn(dst, int(body[1]), starts)
	case body[0] == encDiff && c == colIncrease && len(body) == 3 && body[1] == colLast && body[2] == colFirst && stored(colLast) && stored(colFirst):
		fp := floatScratch.Get().(*[]float64)
		defer floatScratch.Put(fp)
		first, err := h.decodeColumn((*fp)[:0], colFirst, starts)
		*fp = first
		if err != nil {
			return dst, err
		}
		at := len(dst)
		if dst, err = h.decodeColumn(dst, colLast, starts); err != nil {
			return dst, err
		}
		for i := range first {
			dst[at+i] -= first[i]
		}
		return dst, nil
	}
	return dst, fmt.Errorf("%w: column %d: bad derived encoding", ErrCorrupt, c)
}

func (h *v2Header) decodeDecimal(dst []float64, c int, b []byte) ([]float64, error) {
	bad := func(what string) ([]float64, error) {
		return dst, fmt.Errorf("%w: column %d: decimal %s", ErrCorrupt, c, what)
	}
	n := h.n
	if len(b) < 2 || b[0] > maxDecimalExp || b[1] > 1 {
		return bad("header")
	}
	e, delta := int(b[0]), b[1] == 1
	b = b[2:]
	var m0 int64
	if delta {
		var k int
		if m0, k = binary.Varint(b); k <= 0 {
			return bad("first integer")
		}
		b = b[k:]
	}
	base, k := binary.Varint(b)
	if k <= 0 || len(b) < k+1 {
		return bad("base")
	}
	w := int(b[k])
	b = b[k+1:]
	packed := n
	if delta {
		packed = n - 1
	}
	if w > 64 || len(b) < packedLen(packed, w)+1 {
		return bad("integers")
	}
	intBytes := b[:packedLen(packed, w)]
	b = b[len(intBytes):]
	cw := int(b[0])
	b = b[1:]
	if cw > 64 || len(b) != packedLen(n, cw) {
		return bad("corrections")
	}
	at := len(dst)
	dst = append(dst, make([]float64, n)...)
	out := dst[at:]
	// One pass for the integers and their values, one for the
	// corrections: each field one unaligned load, no scratch.
	p, inv := pow10[e], invPow10[e]
	var mask uint64 = 1<<w - 1
	if w == 64 {
		mask = ^uint64(0)
	}
	if delta {
		m := m0
		out[0] = decimalValue(m, p, inv)
		d := out[1:]
		fast := fastFields(len(intBytes), w, len(d))
		bit := 0
		for i := range d[:fast] {
			m += base + int64(binary.LittleEndian.Uint64(intBytes[bit>>3:])>>(bit&7)&mask)
			d[i] = decimalValue(m, p, inv)
			bit += w
		}
		for i := fast; i < len(d); i++ {
			m += base + int64(fieldSlow(intBytes, bit, w))
			d[i] = decimalValue(m, p, inv)
			bit += w
		}
	} else {
		fast := fastFields(len(intBytes), w, n)
		bit := 0
		for i := range out[:fast] {
			out[i] = decimalValue(base+int64(binary.LittleEndian.Uint64(intBytes[bit>>3:])>>(bit&7)&mask), p, inv)
			bit += w
		}
		for i := fast; i < n; i++ {
			out[i] = decimalValue(base+int64(fieldSlow(intBytes, bit, w)), p, inv)
			bit += w
		}
	}
	if cw > 0 {
		var cmask uint64 = 1<<cw - 1
		if cw == 64 {
			cmask = ^uint64(0)
		}
		fast := fastFields(len(b), cw, n)
		bit := 0
		for i := range out {
			var z uint64
			if i < fast {
				z = binary.LittleEndian.Uint64(b[bit>>3:]) >> (bit & 7) & cmask
			} else {
				z = fieldSlow(b, bit, cw)
			}
			corr := z>>1 ^ -(z & 1) // unzigzag, as bits modulo 2^64
			out[i] = math.Float64frombits(math.Float64bits(out[i]) + corr)
			bit += cw
		}
	}
	return dst, nil
}

// fastFields returns how many of n fields of w bits at the start of
// src can each be read with one 8-byte load.
func fastFields(srcLen, w, n int) int {
	if w == 0 || w > 56 || srcLen < 8 {
		return 0 // fieldSlow reads nothing for w = 0
	}
	// Field i starts at byte i*w/8, which must be at most srcLen-8.
	return min(n, ((srcLen-7)*8-1)/w+1)
}

// fieldSlow reads the w-bit field at bit of src: one near the end of
// src, or of more than 56 bits. Not inlined, so that it stays out of
// the hot loops.
//
//go:noinline
func fieldSlow(src []byte, bit, w int) uint64 {
	var v uint64
	for got := 0; got < w; {
		b := uint64(src[(bit+got)>>3]) >> ((bit + got) & 7)
		take := min(8-(bit+got)&7, w-got)
		v |= (b & (1<<take - 1)) << got
		got += take
	}
	return v
}

// decodeColumnsV2 is DecodeColumns for a version 2 block.
func decodeColumnsV2(c *Columns, b []byte, cols uint) error {
	return decodeV2(c, b, cols, true)
}

func decodeV2(c *Columns, b []byte, cols uint, verify bool) error {
	h, err := parseV2Checked(b, verify)
	if err != nil {
		return err
	}
	first := len(c.Start)
	if c.Start, err = h.appendStarts(c.Start); err != nil {
		c.Start = c.Start[:first]
		return err
	}
	starts := c.Start[first:]
	tp := floatScratch.Get().(*[]float64)
	defer floatScratch.Put(tp)
	for col := 0; col < nColumns; col++ {
		if cols&(1<<col) == 0 {
			continue
		}
		switch col {
		case 0:
			at := len(c.Count)
			if c.Count, err = h.decodeColumn(c.Count, col, starts); err != nil {
				return err
			}
			counts := c.Count[at:]
			if h.cols[col][0] == encConst {
				counts = counts[:1]
			}
			for _, x := range counts {
				if !(x >= 1 && x <= 1<<53 && float64(int64(x)) == x) {
					return fmt.Errorf("%w: bucket count %v", ErrCorrupt, x)
				}
			}
		case 7, 8:
			tmp, err := h.decodeColumn((*tp)[:0], col, starts)
			if *tp = tmp; err != nil {
				return err
			}
			dst := &c.FirstT
			if col == 8 {
				dst = &c.LastT
			}
			for i, x := range tmp {
				if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
					return fmt.Errorf("%w: sample time offset %v", ErrCorrupt, x)
				}
				*dst = append(*dst, starts[i]+int64(x))
			}
		default:
			dst := [...]*[]float64{nil, &c.Sum, &c.Min, &c.Max, &c.First, &c.Last, &c.Increase}[col]
			if *dst, err = h.decodeColumn(*dst, col, starts); err != nil {
				return err
			}
		}
	}
	return nil
}

// floatScratch holds a time offset column between its decoding and its
// conversion to times.
var floatScratch = sync.Pool{New: func() any { return new([]float64) }}
