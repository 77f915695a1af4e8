package rollup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// RelativeAccuracy is the sketch's guarantee: each sample value a
// quantile is computed from is within 1% of the true one.
const RelativeAccuracy = 0.01

// The bins follow DDSketch (Masson, Rim, Lee, VLDB 2019): a positive value
// x falls in bin i when gamma^(i-1) < x <= gamma^i, and the bin answers
// 2*gamma^i/(gamma+1), which is within (gamma-1)/(gamma+1) = 1% of every
// value of the bin. Bins are mergeable by adding counts, so sketches of
// 5-minute buckets add up to hours, days and months exactly as a sketch
// of all the samples would.
var (
	gamma    = (1 + RelativeAccuracy) / (1 - RelativeAccuracy)
	lnGamma  = math.Log(gamma)
	minValue = 1e-9 // smaller magnitudes count as zero
)

// maxBins bounds a sketch's memory per sign: beyond it the lowest bins
// are folded together (only quantiles that low lose accuracy). 2048 bins
// of 2% span 1e-9 to 1e9 with room to spare.
const maxBins = 2048

// Sketch is a mergeable quantile sketch of finite values. The zero value
// is an empty sketch.
type Sketch struct {
	pos, neg store // bins of x and of -x
	zero     uint64
}

// store is a run of bin counts starting at bin offset.
type store struct {
	offset int32
	counts []uint64
}

func index(x float64) int32 {
	return int32(math.Ceil(math.Log(x) / lnGamma))
}

func binValue(i int32) float64 {
	return 2 * math.Pow(gamma, float64(i)) / (gamma + 1)
}

// Add counts v; NaN and infinities are not counted (Count says how many
// values the sketch holds).
func (s *Sketch) Add(v float64) {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
	case v > minValue:
		s.pos.add(index(v), 1)
	case v < -minValue:
		s.neg.add(index(-v), 1)
	default:
		s.zero++
	}
}

func (st *store) add(i int32, n uint64) {
	if len(st.counts) == 0 {
		st.offset = i
		st.counts = append(st.counts[:0], n)
		return
	}
	if i < st.offset {
		if int(st.offset-i)+len(st.counts) > maxBins {
			// Too wide: fold into the lowest bin kept.
			lowest := st.offset + int32(len(st.counts)) - maxBins
			if i < lowest {
				i = lowest
			}
		}
		if i < st.offset {
			grow := int(st.offset - i)
			st.counts = append(make([]uint64, grow, grow+len(st.counts)), st.counts...)
			st.offset = i
		}
	}
	if j := int(i - st.offset); j >= len(st.counts) {
		st.counts = append(st.counts, make([]uint64, j+1-len(st.counts))...)
		if len(st.counts) > maxBins {
			st.collapse()
		}
	}
	st.counts[i-st.offset] += n
}

// collapse folds the lowest bins into one so that maxBins remain.
func (st *store) collapse() {
	extra := len(st.counts) - maxBins
	var folded uint64
	for _, c := range st.counts[:extra+1] {
		folded += c
	}
	st.counts = append(st.counts[:0], st.counts[extra:]...)
	st.counts[0] = folded
	st.offset += int32(extra)
}

func (st *store) total() uint64 {
	var n uint64
	for _, c := range st.counts {
		n += c
	}
	return n
}

// Count returns the number of values in the sketch.
func (s *Sketch) Count() uint64 { return s.pos.total() + s.neg.total() + s.zero }

// Merge adds o's values to s.
func (s *Sketch) Merge(o *Sketch) {
	if o == nil {
		return
	}
	s.pos.merge(&o.pos)
	s.neg.merge(&o.neg)
	s.zero += o.zero
}

// Reset empties s, keeping its arrays (a query merges many sketches into
// one accumulator per window).
func (s *Sketch) Reset() {
	s.pos.counts, s.neg.counts, s.zero = s.pos.counts[:0], s.neg.counts[:0], 0
}

// merge adds o's bins: the store grown once to cover both, then one
// tight loop (a quantile over months merges thousands of sketches).
func (st *store) merge(o *store) {
	if len(o.counts) == 0 {
		return
	}
	lo, hi := o.offset, o.offset+int32(len(o.counts))
	if len(st.counts) > 0 {
		lo, hi = min(lo, st.offset), max(hi, st.offset+int32(len(st.counts)))
	}
	if hi-lo > maxBins {
		for j, c := range o.counts { // wider than a store may be: fold bin by bin
			if c > 0 {
				st.add(o.offset+int32(j), c)
			}
		}
		return
	}
	if len(st.counts) == 0 {
		st.offset = o.offset
		st.counts = append(st.counts[:0], o.counts...)
		return
	}
	if lo < st.offset {
		grow := int(st.offset - lo)
		st.counts = append(st.counts, make([]uint64, grow)...)
		copy(st.counts[grow:], st.counts[:len(st.counts)-grow])
		clear(st.counts[:grow])
		st.offset = lo
	}
	if n := int(hi - st.offset); n > len(st.counts) {
		st.counts = append(st.counts, make([]uint64, n-len(st.counts))...)
	}
	dst := st.counts[o.offset-st.offset:]
	for j, c := range o.counts {
		dst[j] += c
	}
}

// Quantile returns the q-quantile (0 <= q <= 1) as Prometheus's
// quantile_over_time defines it, the values at ranks floor and ceil of
// q*(n-1) interpolated linearly, each within RelativeAccuracy; false
// when the sketch is empty.
func (s *Sketch) Quantile(q float64) (float64, bool) {
	n := s.Count()
	if n == 0 || math.IsNaN(q) {
		return 0, false
	}
	q = math.Max(0, math.Min(1, q))
	rank := q * float64(n-1)
	lo := math.Floor(rank)
	vlo := s.atRank(uint64(lo))
	if frac := rank - lo; frac > 0 {
		return vlo + frac*(s.atRank(uint64(lo)+1)-vlo), true
	}
	return vlo, true
}

// atRank returns the value of the sample of rank r (0-based, r < Count).
func (s *Sketch) atRank(r uint64) float64 {
	var seen uint64
	// From the most negative value up: negative bins in decreasing index,
	// zero, positive bins in increasing index.
	for j := len(s.neg.counts) - 1; j >= 0; j-- {
		if seen += s.neg.counts[j]; seen > r {
			return -binValue(s.neg.offset + int32(j))
		}
	}
	if seen += s.zero; seen > r {
		return 0
	}
	for j, c := range s.pos.counts {
		if seen += c; seen > r {
			return binValue(s.pos.offset + int32(j))
		}
	}
	return binValue(s.pos.offset + int32(len(s.pos.counts)-1))
}

// AppendBinary appends the sketch's encoding: the zero count, then each
// sign's bins as a count, the first bin's index and the counts in order
// (uvarints: a bin's count of a 5-minute bucket is one byte).
func (s *Sketch) AppendBinary(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, s.zero)
	for _, st := range []*store{&s.pos, &s.neg} {
		c := st.trimmed()
		dst = binary.AppendUvarint(dst, uint64(len(c.counts)))
		if len(c.counts) == 0 {
			continue
		}
		dst = binary.AppendVarint(dst, int64(c.offset))
		for _, n := range c.counts {
			dst = binary.AppendUvarint(dst, n)
		}
	}
	return dst
}

// trimmed drops empty bins at both ends.
func (st *store) trimmed() store {
	lo, hi := 0, len(st.counts)
	for lo < hi && st.counts[lo] == 0 {
		lo++
	}
	for hi > lo && st.counts[hi-1] == 0 {
		hi--
	}
	return store{offset: st.offset + int32(lo), counts: st.counts[lo:hi]}
}

// ErrCorrupt marks bytes that are not a valid sketch or block.
var ErrCorrupt = errors.New("corrupt rollup")

// DecodeSketch decodes a sketch from the start of b and returns the bytes
// after it.
func DecodeSketch(b []byte) (*Sketch, []byte, error) {
	s := &Sketch{}
	rest, err := s.decode(b)
	if err != nil {
		return nil, nil, err
	}
	return s, rest, nil
}

// decode reads a sketch into s, reusing its bins' memory: a quantile over
// months decodes thousands of sketches a series, and allocating each was
// most of the cost.
func (s *Sketch) decode(b []byte) ([]byte, error) {
	var ok bool
	if s.zero, b, ok = uvarint(b); !ok {
		return nil, fmt.Errorf("%w: sketch zero count", ErrCorrupt)
	}
	for _, st := range []*store{&s.pos, &s.neg} {
		var n uint64
		if n, b, ok = uvarint(b); !ok || n > maxBins || n > uint64(len(b)) {
			return nil, fmt.Errorf("%w: sketch bin count", ErrCorrupt)
		}
		st.offset, st.counts = 0, st.counts[:0]
		if n == 0 {
			continue
		}
		off, m := binary.Varint(b)
		if m <= 0 || off < math.MinInt32/2 || off > math.MaxInt32/2 {
			return nil, fmt.Errorf("%w: sketch bin index", ErrCorrupt)
		}
		b = b[m:]
		st.offset = int32(off)
		st.counts = slices.Grow(st.counts, int(n))[:n]
		for j := range st.counts {
			// The common case, a count under 128, is one byte.
			if len(b) > 0 && b[0] < 0x80 {
				st.counts[j], b = uint64(b[0]), b[1:]
				continue
			}
			if st.counts[j], b, ok = uvarint(b); !ok {
				return nil, fmt.Errorf("%w: sketch bin %d", ErrCorrupt, j)
			}
		}
	}
	return b, nil
}

// clone is a copy of s that shares no memory with it.
func (s *Sketch) clone() Sketch {
	c := *s
	c.pos.counts = slices.Clone(s.pos.counts)
	c.neg.counts = slices.Clone(s.neg.counts)
	return c
}

func uvarint(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, b, false
	}
	return v, b[n:], true
}
