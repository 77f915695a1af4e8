package series

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Schemas a native histogram may have: exponential schemas -4..8, and
// CustomBucketsSchema, whose bucket bounds are listed in CustomValues.
const (
	MinSchema           = -4
	MaxSchema           = 8
	CustomBucketsSchema = -53
)

// HistSample is one native histogram sample of a series.
type HistSample struct {
	T int64
	H *Histogram
}

// HistSet is a Set whose series may also hold native histograms: Hists
// returns the current series' samples, in time order.
type HistSet interface {
	Set
	Hists() []HistSample
}

// Validate refuses a histogram that no query could read as Prometheus
// does: an unknown schema, spans that do not add up to the buckets given,
// negative counts, or a count below what its buckets hold. The error
// names the field; callers add the series.
func (h *Histogram) Validate() error {
	switch {
	case h.Schema == CustomBucketsSchema:
		if len(h.NegativeSpans) > 0 || len(h.NegativeBuckets) > 0 {
			return fmt.Errorf("%w: histogram with custom buckets has negative buckets", ErrInvalid)
		}
		if h.ZeroCount != 0 || h.ZeroThreshold != 0 {
			return fmt.Errorf("%w: histogram with custom buckets has a zero bucket", ErrInvalid)
		}
		for i := 1; i < len(h.CustomValues); i++ {
			if !(h.CustomValues[i] > h.CustomValues[i-1]) {
				return fmt.Errorf("%w: histogram custom bucket bounds are not increasing at %d (%v after %v)", ErrInvalid, i, h.CustomValues[i], h.CustomValues[i-1])
			}
		}
	case h.Schema < MinSchema || h.Schema > MaxSchema:
		return fmt.Errorf("%w: histogram schema %d: want %d..%d, or %d for custom buckets", ErrInvalid, h.Schema, MinSchema, MaxSchema, CustomBucketsSchema)
	case len(h.CustomValues) > 0:
		return fmt.Errorf("%w: histogram of exponential schema %d has custom bucket bounds", ErrInvalid, h.Schema)
	}
	if h.CounterReset > 3 {
		return fmt.Errorf("%w: histogram counter reset hint %d: want 0..3", ErrInvalid, h.CounterReset)
	}
	if !(h.ZeroThreshold >= 0) || math.IsInf(h.ZeroThreshold, 1) {
		return fmt.Errorf("%w: histogram zero threshold %v: want a finite number >= 0", ErrInvalid, h.ZeroThreshold)
	}
	total := h.ZeroCount
	for _, side := range []struct {
		name    string
		spans   []Span
		buckets []float64
	}{{"positive", h.PositiveSpans, h.PositiveBuckets}, {"negative", h.NegativeSpans, h.NegativeBuckets}} {
		n := 0
		for i, s := range side.spans {
			if i > 0 && s.Offset < 0 {
				return fmt.Errorf("%w: histogram %s span %d has offset %d: only the first span may go back", ErrInvalid, side.name, i, s.Offset)
			}
			n += int(s.Length)
		}
		if n != len(side.buckets) {
			return fmt.Errorf("%w: histogram %s spans count %d buckets, %d given", ErrInvalid, side.name, n, len(side.buckets))
		}
		if h.Schema == CustomBucketsSchema && side.name == "positive" && n > 0 {
			last := int64(0)
			for _, s := range side.spans {
				last += int64(s.Offset) + int64(s.Length)
			}
			if last > int64(len(h.CustomValues))+1 || side.spans[0].Offset < 0 {
				return fmt.Errorf("%w: histogram custom buckets reach bucket %d, %d bounds given", ErrInvalid, last-1, len(h.CustomValues))
			}
		}
		for i, c := range side.buckets {
			if c < 0 || math.IsNaN(c) {
				return fmt.Errorf("%w: histogram %s bucket %d has count %v", ErrInvalid, side.name, i, c)
			}
			total += c
		}
	}
	if h.ZeroCount < 0 || math.IsNaN(h.ZeroCount) {
		return fmt.Errorf("%w: histogram zero count %v", ErrInvalid, h.ZeroCount)
	}
	if !h.Float {
		for _, v := range append([]float64{h.Count, h.ZeroCount}, append(slices.Clone(h.PositiveBuckets), h.NegativeBuckets...)...) {
			if v != math.Trunc(v) || v > 1<<62 {
				return fmt.Errorf("%w: integer histogram has a count of %v", ErrInvalid, v)
			}
		}
	}
	// The count may exceed the buckets' total (a NaN observation lands in
	// no bucket), never fall below it; float histograms (results of
	// arithmetic, as Prometheus's FloatHistogram.Validate) are not held
	// to it.
	if math.IsNaN(h.Count) || h.Count < 0 {
		return fmt.Errorf("%w: histogram count %v", ErrInvalid, h.Count)
	}
	if !h.Float && h.Count < total*(1-1e-12) {
		return fmt.Errorf("%w: histogram count %v is below the %v its buckets hold", ErrInvalid, h.Count, total)
	}
	return nil
}

// Clone returns a deep copy, so that a caller's buffers may be reused.
func (h *Histogram) Clone() *Histogram {
	c := *h
	c.PositiveSpans = slices.Clone(h.PositiveSpans)
	c.NegativeSpans = slices.Clone(h.NegativeSpans)
	c.PositiveBuckets = slices.Clone(h.PositiveBuckets)
	c.NegativeBuckets = slices.Clone(h.NegativeBuckets)
	c.CustomValues = slices.Clone(h.CustomValues)
	return &c
}

// AppendHistogramBinary appends h in a plain, self-delimiting form (the
// write-ahead log's; part of the on-disk format: never change):
//
//	byte       flags: bit 0 float counts; bits 1-2 counter reset hint
//	uvarint    zigzag schema
//	8 bytes    zero threshold, zero count, count, sum (IEEE 754, LE, each)
//	uvarint    custom bounds n, n times 8 bytes
//	twice      positive then negative: uvarint spans n, n times (uvarint
//	           zigzag offset, uvarint length), then 8 bytes per bucket
func AppendHistogramBinary(dst []byte, h *Histogram) []byte {
	flags := h.CounterReset << 1
	if h.Float {
		flags |= 1
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, zig(int64(h.Schema)))
	for _, f := range []float64{h.ZeroThreshold, h.ZeroCount, h.Count, h.Sum} {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
	}
	dst = binary.AppendUvarint(dst, uint64(len(h.CustomValues)))
	for _, c := range h.CustomValues {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(c))
	}
	for _, side := range [2]struct {
		spans   []Span
		buckets []float64
	}{{h.PositiveSpans, h.PositiveBuckets}, {h.NegativeSpans, h.NegativeBuckets}} {
		dst = binary.AppendUvarint(dst, uint64(len(side.spans)))
		for _, s := range side.spans {
			dst = binary.AppendUvarint(dst, zig(int64(s.Offset)))
			dst = binary.AppendUvarint(dst, uint64(s.Length))
		}
		for _, c := range side.buckets {
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(c))
		}
	}
	return dst
}

var errShortHistogram = errors.New("histogram: truncated")

// ReadHistogramBinary decodes what AppendHistogramBinary wrote at the
// start of b, returning the bytes it took. The spans' lengths must match
// the bytes left, so that a corrupt length cannot allocate beyond b.
func ReadHistogramBinary(b []byte) (*Histogram, int, error) {
	r := b
	if len(r) < 1 {
		return nil, 0, errShortHistogram
	}
	h := &Histogram{Float: r[0]&1 != 0, CounterReset: (r[0] >> 1) & 3}
	if r[0]>>3 != 0 {
		return nil, 0, fmt.Errorf("histogram: unknown flags %#x", r[0])
	}
	r = r[1:]
	uv := func() (uint64, bool) {
		x, n := binary.Uvarint(r)
		if n <= 0 {
			return 0, false
		}
		r = r[n:]
		return x, true
	}
	f64 := func() (float64, bool) {
		if len(r) < 8 {
			return 0, false
		}
		x := math.Float64frombits(binary.LittleEndian.Uint64(r))
		r = r[8:]
		return x, true
	}
	s, ok := uv()
	if !ok || int64(unzig(s)) != int64(int32(unzig(s))) {
		return nil, 0, errShortHistogram
	}
	h.Schema = int32(unzig(s))
	for _, p := range []*float64{&h.ZeroThreshold, &h.ZeroCount, &h.Count, &h.Sum} {
		if *p, ok = f64(); !ok {
			return nil, 0, errShortHistogram
		}
	}
	n, ok := uv()
	if !ok || n > uint64(len(r)/8) {
		return nil, 0, errShortHistogram
	}
	if n > 0 {
		h.CustomValues = make([]float64, n)
		for i := range h.CustomValues {
			h.CustomValues[i], _ = f64()
		}
	}
	for side := 0; side < 2; side++ {
		ns, ok := uv()
		if !ok || ns > uint64(len(r)/2) {
			return nil, 0, errShortHistogram
		}
		var spans []Span
		total := uint64(0)
		for i := uint64(0); i < ns; i++ {
			off, ok1 := uv()
			l, ok2 := uv()
			if !ok1 || !ok2 || l > math.MaxUint32 || int64(unzig(off)) != int64(int32(unzig(off))) {
				return nil, 0, errShortHistogram
			}
			spans = append(spans, Span{Offset: int32(unzig(off)), Length: uint32(l)})
			total += l
		}
		if total > uint64(len(r)/8) {
			return nil, 0, errShortHistogram
		}
		var buckets []float64
		if total > 0 {
			buckets = make([]float64, total)
			for i := range buckets {
				buckets[i], _ = f64()
			}
		}
		if side == 0 {
			h.PositiveSpans, h.PositiveBuckets = spans, buckets
		} else {
			h.NegativeSpans, h.NegativeBuckets = spans, buckets
		}
	}
	return h, len(b) - len(r), nil
}

func zig(x int64) uint64   { return uint64(x<<1) ^ uint64(x>>63) }
func unzig(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }
