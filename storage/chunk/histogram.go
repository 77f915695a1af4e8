package chunk

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/headroomdb/headroom/storage/series"
)

// Native histogram chunks (format version 1; part of the on-disk format:
// never change). A chunk holds samples of one series that share a layout
// (integer or float counts, schema, zero threshold, spans, custom bounds)
// and no counter reset after the first sample; a sample that changes
// either goes to a new chunk (ErrLayout). Counters' buckets grow by
// similar amounts scrape after scrape, so every count is stored as its
// delta of delta, which is mostly 0 (one bit); float counts and the sum
// are XORed with the previous sample's, as Gorilla does values.
//
//	byte 0      encoding (EncHistogram: integer counts, EncFloatHistogram)
//	bytes 1-2   sample count, uint16 big-endian
//	byte 3      the first sample's counter reset hint (0..3)
//	then        uvarint zigzag schema, 8 bytes zero threshold (IEEE 754),
//	            uvarint custom bounds n and n times 8 bytes,
//	            uvarint positive spans n, n times (uvarint zigzag offset,
//	            uvarint length), the same for negative spans
//	then        bit stream, most significant bit first, zero-padded
//
// Sample i in the bit stream:
//
//	timestamp   i = 0: 64 bits; i >= 1: delta of delta as for float chunks
//	            (the first delta against 0)
//	counts      count, zero count, then each positive bucket and each
//	            negative bucket, in the spans' order. Integer histograms:
//	            the value (i = 0), the delta (i = 1), the delta of delta
//	            (i >= 2), each as a signed varbit:
//	              '0'                    0
//	              '10'      + 3 bits     [-4, 3]
//	              '110'     + 5 bits     [-16, 15]
//	              '1110'    + 8 bits     [-128, 127]
//	              '11110'   + 12 bits    [-2048, 2047]
//	              '111110'  + 20 bits    [-2^19, 2^19-1]
//	              '1111110' + 32 bits    [-2^31, 2^31-1]
//	              '1111111' + 64 bits    any other
//	            (buckets of a service's latency grow by a few a scrape, so
//	            most deltas of deltas are small: this ladder took a day of
//	            83-bucket latency histograms from 42 to 31 bytes a sample,
//	            and one of ten times the traffic from 62 to 49)
//	            Float histograms: each count XOR the previous sample's, as
//	            a float chunk's value (the first against 0).
//	sum         XOR the previous sample's sum (the first against 0), as a
//	            float chunk's value, with its own window.
//
// Every count and sum has its own XOR window or delta history.
const (
	EncHistogram      byte = 3
	EncFloatHistogram byte = 4
)

// ErrLayout is returned by HistogramAppender.Append for a sample that
// does not fit the chunk: another layout, or a counter reset.
var ErrLayout = fmt.Errorf("chunk: histogram layout or counter reset: start a new chunk")

// HistogramAppender encodes native histogram samples into a chunk.
type HistogramAppender struct {
	w       bitWriter
	count   int
	minT, t int64
	tDelta  int64
	layout  series.Histogram // the chunk's layout (counts unused)
	// Per value (count, zero count, buckets...): previous value and
	// delta (integers), or bits and XOR window (floats); the sum's last.
	prev   []int64
	delta  []int64
	vbits  []uint64
	lead   []uint8
	trail  []uint8
	values []float64 // scratch: the sample's values in stream order
}

// NewHistogramAppender returns an appender whose chunk takes h's layout
// at the first Append.
func NewHistogramAppender() *HistogramAppender { return &HistogramAppender{} }

// Count is the number of samples appended.
func (a *HistogramAppender) Count() int { return a.count }

// Bytes returns the chunk: valid until the next Append.
func (a *HistogramAppender) Bytes() []byte {
	if a.count == 0 {
		return nil
	}
	binary.BigEndian.PutUint16(a.w.b[1:3], uint16(a.count))
	return a.w.b
}

// Size is the chunk's size in bytes.
func (a *HistogramAppender) Size() int { return len(a.w.b) }

// sameLayout says whether h can join a chunk of layout l.
func sameLayout(l, h *series.Histogram) bool {
	return l.Float == h.Float && l.Schema == h.Schema && sameFloat(l.ZeroThreshold, h.ZeroThreshold) &&
		slices.Equal(l.PositiveSpans, h.PositiveSpans) && slices.Equal(l.NegativeSpans, h.NegativeSpans) &&
		slices.EqualFunc(l.CustomValues, h.CustomValues, sameFloat)
}

func sameFloat(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

// checkShape refuses a histogram whose buckets do not match its spans.
func checkShape(h *series.Histogram) error {
	for _, side := range []struct {
		spans   []series.Span
		buckets []float64
		name    string
	}{{h.PositiveSpans, h.PositiveBuckets, "positive"}, {h.NegativeSpans, h.NegativeBuckets, "negative"}} {
		n := 0
		for _, s := range side.spans {
			n += int(s.Length)
		}
		if n != len(side.buckets) {
			return fmt.Errorf("chunk: histogram has %d %s buckets, its spans say %d", len(side.buckets), side.name, n)
		}
	}
	if h.CounterReset > 3 {
		return fmt.Errorf("chunk: counter reset hint %d", h.CounterReset)
	}
	return nil
}

// Append adds a sample. It returns ErrLayout when h belongs in a new
// chunk, ErrOutOfOrder when t is not after the last sample, ErrFull.
func (a *HistogramAppender) Append(t int64, h *series.Histogram) error {
	if err := checkShape(h); err != nil {
		return err
	}
	if a.count >= MaxSamples {
		return ErrFull
	}
	a.values = appendValues(a.values[:0], h)
	if !h.Float {
		for _, v := range a.values[:len(a.values)-1] {
			if v != math.Trunc(v) || math.Abs(v) > 1<<62 {
				return fmt.Errorf("chunk: integer histogram with a count of %v", v)
			}
		}
	}
	if a.count == 0 {
		a.start(t, h)
	} else {
		if t <= a.t {
			return ErrOutOfOrder
		}
		if !sameLayout(&a.layout, h) || h.CounterReset == 1 || (h.CounterReset != 3 && a.fell(h.Float)) {
			return ErrLayout
		}
		d := t - a.t
		writeDoD(&a.w, d-a.tDelta)
		a.t, a.tDelta = t, d
	}
	n := len(a.values)
	for i, v := range a.values {
		if i == n-1 || h.Float {
			a.writeXOR(i, math.Float64bits(v))
			continue
		}
		x := int64(v)
		switch a.count {
		case 0:
			writeVarbit(&a.w, x)
		case 1:
			writeVarbit(&a.w, x-a.prev[i])
			a.delta[i] = x - a.prev[i]
		default:
			d := x - a.prev[i]
			writeVarbit(&a.w, d-a.delta[i])
			a.delta[i] = d
		}
		a.prev[i] = x
	}
	a.count++
	return nil
}

// fell reports whether a.values (the new sample's) has a count below the
// previous sample's: a counter histogram that reset.
func (a *HistogramAppender) fell(float bool) bool {
	for i, v := range a.values[:len(a.values)-1] {
		if float && v < math.Float64frombits(a.vbits[i]) || !float && int64(v) < a.prev[i] {
			return true
		}
	}
	return false
}

func (a *HistogramAppender) start(t int64, h *series.Histogram) {
	a.layout = series.Histogram{Float: h.Float, Schema: h.Schema, ZeroThreshold: h.ZeroThreshold,
		PositiveSpans: slices.Clone(h.PositiveSpans), NegativeSpans: slices.Clone(h.NegativeSpans), CustomValues: slices.Clone(h.CustomValues)}
	enc := EncHistogram
	if h.Float {
		enc = EncFloatHistogram
	}
	b := []byte{enc, 0, 0, h.CounterReset}
	b = binary.AppendUvarint(b, zigzag(int64(h.Schema)))
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(h.ZeroThreshold))
	b = binary.AppendUvarint(b, uint64(len(h.CustomValues)))
	for _, c := range h.CustomValues {
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(c))
	}
	for _, spans := range [][]series.Span{h.PositiveSpans, h.NegativeSpans} {
		b = binary.AppendUvarint(b, uint64(len(spans)))
		for _, s := range spans {
			b = binary.AppendUvarint(b, zigzag(int64(s.Offset)))
			b = binary.AppendUvarint(b, uint64(s.Length))
		}
	}
	a.w = bitWriter{b: b}
	a.w.writeBits(uint64(t), 64)
	a.minT, a.t, a.tDelta = t, t, 0
	n := len(a.values)
	a.prev, a.delta = make([]int64, n), make([]int64, n)
	a.vbits, a.lead, a.trail = make([]uint64, n), make([]uint8, n), make([]uint8, n)
	for i := range a.lead {
		a.lead[i] = noWindow
	}
}

// appendValues lists h's values in stream order: count, zero count,
// positive buckets, negative buckets, sum.
func appendValues(dst []float64, h *series.Histogram) []float64 {
	dst = append(dst, h.Count, h.ZeroCount)
	dst = append(dst, h.PositiveBuckets...)
	dst = append(dst, h.NegativeBuckets...)
	return append(dst, h.Sum)
}

// writeXOR is Appender.writeValue with per-value windows. The float
// appender keeps its own copy: sharing one function through pointers to
// the windows cost its encoding 3.7% (BenchmarkEncode/counter, n=8).
func (a *HistogramAppender) writeXOR(i int, vb uint64) {
	x := vb ^ a.vbits[i]
	a.vbits[i] = vb
	if x == 0 {
		a.w.writeBit(false)
		return
	}
	leading := uint8(bits.LeadingZeros64(x))
	trailing := uint8(bits.TrailingZeros64(x))
	if leading > 31 {
		leading = 31
	}
	if a.lead[i] != noWindow && leading >= a.lead[i] && trailing >= a.trail[i] {
		a.w.writeBits(0b10, 2)
		a.w.writeBits(x>>a.trail[i], uint(64-a.lead[i]-a.trail[i]))
		return
	}
	a.lead[i], a.trail[i] = leading, trailing
	sig := 64 - leading - trailing
	a.w.writeBits(0b11, 2)
	a.w.writeBits(uint64(leading), 5)
	a.w.writeBits(uint64(sig&63), 6)
	a.w.writeBits(x>>trailing, uint(sig))
}

// readDoD reads what writeDoD (xor.go) wrote.
func readDoD(r *bitReader) int64 {
	n := 0
	for n < 4 && r.readBit() {
		n++
	}
	width := []uint{0, 14, 17, 20, 64}[n]
	if width == 0 {
		return 0
	}
	// writeDoD's ranges are Prometheus's, one more above zero than below
	// (-8191..8192 in 14 bits): a field above half its range is negative,
	// half exactly is positive. Two's complement would read 8192 as
	// -8192, and the rest of the chunk as garbage.
	u := r.readBits(width)
	if width < 64 && u > 1<<(width-1) {
		u -= 1 << width
	}
	return int64(u)
}

func signExtend(u uint64, width uint) int64 {
	if width == 64 {
		return int64(u)
	}
	return int64(u<<(64-width)) >> (64 - width)
}

var varbitWidths = []uint{0, 3, 5, 8, 12, 20, 32, 64}

// writeVarbit writes a signed integer with the smallest of the widths.
func writeVarbit(w *bitWriter, x int64) {
	for n, width := range varbitWidths {
		if width == 64 || (x >= -(1<<(width-1)) && x < 1<<(width-1)) || (width == 0 && x == 0) {
			if width == 0 && x != 0 {
				continue
			}
			// n ones then a zero (none after the last prefix).
			for range n {
				w.writeBit(true)
			}
			if n < len(varbitWidths)-1 {
				w.writeBit(false)
			}
			w.writeBits(uint64(x), width)
			return
		}
	}
}

func readVarbit(r *bitReader) int64 {
	last := len(varbitWidths) - 1
	if r.n < 8 {
		r.refill()
	}
	var n int
	if r.n >= 8 {
		// The prefix from one byte: its leading ones, at most last, and
		// the zero after them.
		n = min(bits.LeadingZeros8(^uint8(r.buf>>56)), last)
		k := uint(n + 1)
		if n == last {
			k = uint(n)
		}
		r.buf <<= k
		r.n -= k
	} else {
		for n < last && r.readBit() {
			n++
		}
	}
	width := varbitWidths[n]
	if width == 0 {
		return 0
	}
	return signExtend(r.readBits(width), width)
}

// HistogramIterator decodes a histogram chunk. It never panics on
// arbitrary input: malformed bytes end the iteration with an error
// wrapping ErrCorrupt.
type HistogramIterator struct {
	br     bitReader
	layout series.Histogram
	hint   uint8
	total  int
	read   int
	t      int64
	tDelta int64
	prev   []int64
	delta  []int64
	vbits  []uint64
	lead   []uint8
	trail  []uint8
	npos   int
	nneg   int
	h      series.Histogram
	err    error
}

// NewHistogramIterator returns an iterator over chunk b.
func NewHistogramIterator(b []byte) *HistogramIterator {
	it := &HistogramIterator{}
	it.Reset(b)
	return it
}

func (it *HistogramIterator) corrupt(what string) bool {
	it.err = fmt.Errorf("%w: histogram sample %d of %d: %s", ErrCorrupt, it.read, it.total, what)
	return false
}

// Reset points the iterator at chunk b.
func (it *HistogramIterator) Reset(b []byte) {
	*it = HistogramIterator{prev: it.prev[:0], delta: it.delta[:0], vbits: it.vbits[:0], lead: it.lead[:0], trail: it.trail[:0]}
	if len(b) < 4 || (b[0] != EncHistogram && b[0] != EncFloatHistogram) || b[3] > 3 {
		it.err = fmt.Errorf("%w: not a histogram chunk header", ErrCorrupt)
		return
	}
	it.layout.Float = b[0] == EncFloatHistogram
	it.total = int(binary.BigEndian.Uint16(b[1:3]))
	it.hint = b[3]
	p := b[4:]
	uv := func() (uint64, bool) {
		x, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return x, true
	}
	f64 := func() (float64, bool) {
		if len(p) < 8 {
			return 0, false
		}
		x := math.Float64frombits(binary.BigEndian.Uint64(p))
		p = p[8:]
		return x, true
	}
	bad := func() { it.err = fmt.Errorf("%w: histogram chunk layout truncated", ErrCorrupt) }
	s, ok := uv()
	if !ok || unzigzag(s) < math.MinInt32 || unzigzag(s) > math.MaxInt32 {
		bad()
		return
	}
	it.layout.Schema = int32(unzigzag(s))
	if it.layout.ZeroThreshold, ok = f64(); !ok {
		bad()
		return
	}
	nc, ok := uv()
	if !ok || nc > uint64(len(p)/8) {
		bad()
		return
	}
	for range nc {
		c, _ := f64()
		it.layout.CustomValues = append(it.layout.CustomValues, c)
	}
	buckets := [2]int{}
	for side := range 2 {
		ns, ok := uv()
		if !ok || ns > uint64(len(p)) {
			bad()
			return
		}
		var spans []series.Span
		for range ns {
			o, ok1 := uv()
			l, ok2 := uv()
			if !ok1 || !ok2 || unzigzag(o) < math.MinInt32 || unzigzag(o) > math.MaxInt32 || l > 1<<16 {
				bad()
				return
			}
			spans = append(spans, series.Span{Offset: int32(unzigzag(o)), Length: uint32(l)})
			buckets[side] += int(l)
			if buckets[side] > 1<<16 {
				bad()
				return
			}
		}
		if side == 0 {
			it.layout.PositiveSpans = spans
		} else {
			it.layout.NegativeSpans = spans
		}
	}
	it.npos, it.nneg = buckets[0], buckets[1]
	n := 3 + it.npos + it.nneg
	it.prev, it.delta = append(it.prev, make([]int64, n)...), append(it.delta, make([]int64, n)...)
	it.vbits, it.trail = append(it.vbits, make([]uint64, n)...), append(it.trail, make([]uint8, n)...)
	for range n {
		it.lead = append(it.lead, noWindow)
	}
	it.br.reset(p)
}

// Next decodes the next sample.
func (it *HistogramIterator) Next() bool {
	if it.err != nil || it.read >= it.total {
		return false
	}
	r := &it.br
	if it.read == 0 {
		it.t = int64(r.readBits(64))
	} else {
		it.tDelta += readDoD(r)
		if it.tDelta <= 0 {
			return it.corrupt("timestamp not after the previous one")
		}
		it.t += it.tDelta
	}
	n := len(it.prev)
	h := &it.h
	*h = series.Histogram{Float: it.layout.Float, Schema: it.layout.Schema, ZeroThreshold: it.layout.ZeroThreshold,
		PositiveSpans: it.layout.PositiveSpans, NegativeSpans: it.layout.NegativeSpans, CustomValues: it.layout.CustomValues,
		PositiveBuckets: h.PositiveBuckets[:0], NegativeBuckets: h.NegativeBuckets[:0]}
	if it.read == 0 {
		h.CounterReset = it.hint
	} else if it.hint == 3 {
		h.CounterReset = 3 // a gauge stays one
	} else {
		h.CounterReset = 2 // a chunk holds no reset after its first sample
	}
	for i := range n {
		var v float64
		if i == n-1 || it.layout.Float {
			v = it.readXOR(i)
		} else {
			x := readVarbit(r)
			switch it.read {
			case 0:
				it.prev[i] = x
			case 1:
				it.delta[i] = x
				it.prev[i] += x
			default:
				it.delta[i] += x
				it.prev[i] += it.delta[i]
			}
			v = float64(it.prev[i])
		}
		switch {
		case i == 0:
			h.Count = v
		case i == 1:
			h.ZeroCount = v
		case i == n-1:
			h.Sum = v
		case i-2 < it.npos:
			h.PositiveBuckets = append(h.PositiveBuckets, v)
		default:
			h.NegativeBuckets = append(h.NegativeBuckets, v)
		}
	}
	if r.bad {
		return it.corrupt("bit stream ended early")
	}
	it.read++
	return true
}

func (it *HistogramIterator) readXOR(i int) float64 {
	r := &it.br
	if r.readBit() {
		if !r.readBit() {
			if it.lead[i] == noWindow {
				r.bad = true
				return 0
			}
			sig := 64 - uint(it.lead[i]) - uint(it.trail[i])
			it.vbits[i] ^= r.readBits(sig) << it.trail[i]
		} else {
			lead := uint8(r.readBits(5))
			sig := uint8(r.readBits(6))
			if sig == 0 {
				sig = 64
			}
			if int(lead)+int(sig) > 64 {
				r.bad = true
				return 0
			}
			it.lead[i], it.trail[i] = lead, 64-lead-sig
			it.vbits[i] ^= r.readBits(uint(sig)) << it.trail[i]
		}
	}
	return math.Float64frombits(it.vbits[i])
}

// At returns the current sample: the histogram is the iterator's, valid
// until the next call of Next.
func (it *HistogramIterator) At() (int64, *series.Histogram) { return it.t, &it.h }

// Err returns the decoding error, if any.
func (it *HistogramIterator) Err() error { return it.err }

// AppendHistograms appends the samples of histogram chunk chk to dst, as
// new histograms the caller owns. The samples share the chunk's layout
// (its spans and bounds) and take their structs and counts from one
// allocation each: cloning each sample cost a fifth of a query's time.
func AppendHistograms(dst []series.HistSample, chk []byte) ([]series.HistSample, error) {
	it := NewHistogramIterator(chk)
	var layout *series.Histogram
	var hs []series.Histogram
	var arena []float64
	for it.Next() {
		t, h := it.At()
		if layout == nil {
			layout = &series.Histogram{PositiveSpans: slices.Clone(h.PositiveSpans), NegativeSpans: slices.Clone(h.NegativeSpans), CustomValues: slices.Clone(h.CustomValues)}
			n := it.total
			hs = make([]series.Histogram, 0, n)
			arena = make([]float64, 0, n*(len(h.PositiveBuckets)+len(h.NegativeBuckets)))
		}
		c := *h
		c.PositiveSpans, c.NegativeSpans, c.CustomValues = layout.PositiveSpans, layout.NegativeSpans, layout.CustomValues
		k := len(arena)
		arena = append(arena, h.PositiveBuckets...)
		c.PositiveBuckets = arena[k:len(arena):len(arena)]
		k = len(arena)
		arena = append(arena, h.NegativeBuckets...)
		c.NegativeBuckets = arena[k:len(arena):len(arena)]
		hs = append(hs, c) // a reallocation leaves the earlier pointers valid
		dst = append(dst, series.HistSample{T: t, H: &hs[len(hs)-1]})
	}
	return dst, it.Err()
}
