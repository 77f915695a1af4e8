package chunk

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// EncDecimal stores values that are all exactly m / 10^e for integers m
// and one small e (whole numbers, counters, percentages with two decimals,
// CloudWatch's three decimals) as integers, and timestamps as bit-packed
// deltas of deltas. It is written only by Optimize, for sealed chunks; the
// head appends XOR.
//
//	byte 0      2
//	bytes 1-2   sample count n, uint16 big-endian
//	byte 3      low 4 bits: e (0..15); bit 4: values as deltas of deltas
//	            (else deltas); bit 5: values carry corrections; bit 6:
//	            timestamps on a grid (below); bit 7: 0
//	byte 4      value packing: width W (0..64) in the low 7 bits; bit 7 set
//	            when no element escapes (then there is no escape bit)
//	byte 5      timestamp packing, the same way
//	bits        t0: 64 bits
//	            if n > 1: the first time delta, as a var
//	            m0, the first mantissa, as a var
//	            if n > 1 and values are deltas of deltas: the first value
//	            delta, as a var
//	            the first value's correction (see below)
//	            then per sample i >= 1, interleaved:
//	              time:  for i >= 2, the delta of delta, packed
//	              value: the delta (i >= 1) or delta of delta (i >= 2), packed
//	            and, when bit 5 is set, after each value (i >= 1): its
//	            correction: '0', or '1' and a var holding zigzag(c)
//
// With bit 6 set, timestamps are a grid with exceptions instead: byte 5
// is 0, and after t0 come the step (a var), then two lists, each a var
// count and per entry a var index gap from the previous entry (from 0) and
// a var zigzag value: sample indexes whose grid position advances by other
// than one (value: advance minus one), and sample indexes whose timestamp
// is off the grid (value: the offset). Sample i is at t0 + g(i)*step +
// offset(i), and the per-sample stream holds values only. A scrape a few
// milliseconds late costs one list entry instead of two deltas of deltas
// and an escape bit on every sample.
//
// A var is a 7-bit length L and L bits. Signed integers are zigzagged. A
// packed element is W bits when the packing has no escapes; otherwise '0'
// and W bits, or '1' and a var for an element wider than W.
//
// Decoding yields the float whose bits are bits(float64(m) / 10^e) + c,
// with c = 0 unless corrected; Optimize keeps this encoding only after
// checking that this gives back every value bit for bit. Corrections carry
// the artefacts of float arithmetic that real exporters emit among
// decimal values (CloudWatch's 1.7619999999999998 next to 1.762: one ulp
// away). Regular scrapes cost no bits for timestamps (W = 0, no escapes).
const EncDecimal byte = 2

const decimalHeader = 6

const (
	noEscape = 0x80
	// maxCorrection bounds |c| in ulps: artefacts of decimal arithmetic are
	// a few ulps off; a wider gap means the value is not decimal at all.
	maxCorrection = 64
	corrFlag      = 1 << 5
	gridFlag      = 1 << 6
)

var pow10 = [16]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

func zigzag(x int64) uint64   { return uint64(x<<1) ^ uint64(x>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// Optimize returns the smallest encoding of chunk b's samples: b itself
// when it is already smallest or does not decode, else a new slice. Use it
// when a chunk is sealed; Optimize never changes b.
func Optimize(b []byte) []byte {
	if len(b) < headerSize || b[0] != EncXOR {
		return b
	}
	var it Iterator
	it.Reset(b)
	n := it.Count()
	if n < 2 {
		return b
	}
	ts := make([]int64, 0, n)
	vs := make([]float64, 0, n)
	for it.Next() {
		t, v := it.At()
		ts = append(ts, t)
		vs = append(vs, v)
	}
	if it.Err() != nil {
		return b
	}
	ms, cs, e, ok := toDecimal(vs)
	if !ok {
		return b
	}
	// Deltas suit walks, deltas of deltas steady counters. Pricing both
	// from their histograms and encoding once was measured to choose worse
	// (devops 0.989 -> 1.001 bytes/sample): encode both, keep the smaller.
	best := b
	for _, dod := range []bool{false, true} {
		if d := encodeDecimal(ts, ms, cs, e, dod); len(d) < len(best) {
			best = d
		}
	}
	return best
}

// valueResiduals appends the packed elements of the mantissas: deltas
// from the second value on, or deltas of deltas from the third.
func valueResiduals(dst []uint64, ms []int64, dod bool) []uint64 {
	for i := 1; i < len(ms); i++ {
		d := ms[i] - ms[i-1]
		switch {
		case !dod:
			dst = append(dst, zigzag(d))
		case i >= 2:
			dst = append(dst, zigzag(d-(ms[i-1]-ms[i-2])))
		}
	}
	return dst
}

// toDecimal finds the smallest e such that every value is
// float64(m)/10^e for an integer m of at most 53 bits, give or take a
// correction of at most maxCorrection ulps, and at least half of the
// values need none. cs is nil when no value needs a correction.
func toDecimal(vs []float64) (ms, cs []int64, e uint8, ok bool) {
	ms = make([]int64, len(vs))
	cs = make([]int64, len(vs))
	for e := startExponent(vs); e < uint8(len(pow10)); e++ {
		p := pow10[e]
		fits, corrected := true, 0
		for i, v := range vs {
			f := math.Round(v * p)
			if math.IsNaN(f) || math.Abs(f) > 1<<53 {
				return nil, nil, 0, false
			}
			m := int64(f)
			c := int64(math.Float64bits(v) - math.Float64bits(float64(m)/p))
			if c < -maxCorrection || c > maxCorrection {
				fits = false
				break
			}
			if c != 0 {
				if corrected++; corrected > len(vs)/2 {
					fits = false
					break
				}
			}
			ms[i], cs[i] = m, c
		}
		if fits {
			if corrected == 0 {
				cs = nil
			}
			return ms, cs, e, true
		}
	}
	return nil, nil, 0, false
}

// startExponent returns a lower bound of the chunk's exponent: the
// fewest decimals with which one of the first values is exact. Values
// that are artefacts need more (or none fits), so the minimum over a few
// is taken; trying from 0 costs a pass per exponent below it.
func startExponent(vs []float64) uint8 {
	best := uint8(len(pow10))
	for _, v := range vs[:min(len(vs), 8)] {
		for e := uint8(0); e < best; e++ {
			f := math.Round(v * pow10[e])
			if math.Abs(f) > 1<<53 {
				break
			}
			if math.Float64bits(f/pow10[e]) == math.Float64bits(v) {
				best = e
				break
			}
		}
	}
	if best == uint8(len(pow10)) {
		return 0
	}
	return best
}

// packing picks the width (and whether escapes are needed) that
// minimises the packed size of xs, and returns it as a header byte.
func packing(xs []uint64) byte {
	var hist [65]int
	maxLen := 0
	for _, x := range xs {
		l := bits.Len64(x)
		hist[l]++
		maxLen = max(maxLen, l)
	}
	// With escapes: cost(w) = (1+w) * #(len <= w) + the sum over len > w
	// of (1+7+len). Without: every element at maxLen bits.
	var escAbove [65]int
	esc := 0
	for l := 64; l >= 0; l-- {
		escAbove[l] = esc
		esc += hist[l] * (1 + 7 + l)
	}
	best, bestCost := byte(maxLen)|noEscape, len(xs)*maxLen // no escapes at all
	fit := 0
	for w := 0; w <= 64; w++ {
		fit += hist[w]
		if cost := fit*(1+w) + escAbove[w]; cost < bestCost {
			best, bestCost = byte(w), cost
		}
	}
	return best
}

func writeVar(w *bitWriter, x uint64) {
	l := bits.Len64(x)
	w.writeBits(uint64(l), 7)
	w.writeBits(x, uint(l))
}

func writePacked(w *bitWriter, p byte, x uint64) {
	width := uint(p &^ noEscape)
	if p&noEscape != 0 {
		w.writeBits(x, width)
		return
	}
	if bits.Len64(x) <= int(width) {
		w.writeBit(false)
		w.writeBits(x, width)
		return
	}
	w.writeBit(true)
	writeVar(w, x)
}

// gridEntry is one exception of a timestamp grid.
type gridEntry struct {
	idx int
	v   int64
}

func varBits(x uint64) int { return 7 + bits.Len64(x) }

// grid lays timestamps on t0 + g*step, step being the majority delta, and
// returns the exceptions with their size in bits; ok is false without a
// majority step.
func grid(ts []int64) (step int64, gaps, offs []gridEntry, size int, ok bool) {
	cand, votes := int64(0), 0
	for i := 1; i < len(ts); i++ {
		d := ts[i] - ts[i-1]
		switch {
		case votes == 0:
			cand, votes = d, 1
		case d == cand:
			votes++
		default:
			votes--
		}
	}
	count := 0
	for i := 1; i < len(ts); i++ {
		if ts[i]-ts[i-1] == cand {
			count++
		}
	}
	if cand <= 0 || 2*count < len(ts)-1 {
		return 0, nil, nil, 0, false
	}
	step = cand
	size = varBits(uint64(step))
	var g int64
	lastGap, lastOff := 0, 0
	for i := 1; i < len(ts); i++ {
		d := ts[i] - ts[0] // wraps for absurd spans: the offset then absorbs it
		ng := d / step
		if r := d % step; r > step/2 {
			ng++
		}
		if inc := ng - g; inc != 1 {
			gaps = append(gaps, gridEntry{i, inc - 1})
			size += varBits(uint64(i-lastGap)) + varBits(zigzag(inc-1))
			lastGap = i
		}
		g = ng
		if off := ts[i] - ts[0] - g*step; off != 0 {
			offs = append(offs, gridEntry{i, off})
			size += varBits(uint64(i-lastOff)) + varBits(zigzag(off))
			lastOff = i
		}
	}
	size += varBits(uint64(len(gaps))) + varBits(uint64(len(offs)))
	return step, gaps, offs, size, true
}

// packedBits returns the size of xs packed with p.
func packedBits(p byte, xs []uint64) int {
	w := int(p &^ noEscape)
	if p&noEscape != 0 {
		return len(xs) * w
	}
	n := 0
	for _, x := range xs {
		if l := bits.Len64(x); l <= w {
			n += 1 + w
		} else {
			n += 1 + 7 + l
		}
	}
	return n
}

func writeGridList(w *bitWriter, es []gridEntry) {
	writeVar(w, uint64(len(es)))
	last := 0
	for _, e := range es {
		writeVar(w, uint64(e.idx-last))
		writeVar(w, zigzag(e.v))
		last = e.idx
	}
}

func encodeDecimal(ts, ms, cs []int64, e uint8, dod bool) []byte {
	n := len(ts)
	tx := make([]uint64, 0, n)
	for i := 2; i < n; i++ {
		tx = append(tx, zigzag((ts[i]-ts[i-1])-(ts[i-1]-ts[i-2])))
	}
	vx := valueResiduals(make([]uint64, 0, n), ms, dod)
	vp, tp := packing(vx), packing(tx)
	step, gaps, offs, gridSize, onGrid := grid(ts)
	if onGrid && n > 1 && gridSize >= varBits(zigzag(ts[1]-ts[0]))+packedBits(tp, tx) {
		onGrid = false
	}
	mode := byte(0)
	if onGrid {
		mode |= gridFlag
		tp = 0
	}
	if dod {
		mode |= 1 << 4
	}
	if cs != nil {
		mode |= corrFlag
	}
	w := bitWriter{b: make([]byte, decimalHeader, decimalHeader+16+n)}
	corr := func(i int) {
		if cs == nil {
			return
		}
		if cs[i] == 0 {
			w.writeBit(false)
			return
		}
		w.writeBit(true)
		writeVar(&w, zigzag(cs[i]))
	}
	w.b[0] = EncDecimal
	binary.BigEndian.PutUint16(w.b[1:], uint16(n))
	w.b[3], w.b[4], w.b[5] = e|mode, vp, tp
	w.writeBits(uint64(ts[0]), 64)
	switch {
	case onGrid:
		writeVar(&w, uint64(step))
		writeGridList(&w, gaps)
		writeGridList(&w, offs)
	case n > 1:
		writeVar(&w, zigzag(ts[1]-ts[0]))
	}
	writeVar(&w, zigzag(ms[0]))
	if n > 1 && dod {
		writeVar(&w, zigzag(ms[1]-ms[0]))
	}
	corr(0)
	for i := 1; i < n; i++ {
		if i >= 2 && !onGrid {
			writePacked(&w, tp, tx[i-2])
		}
		switch {
		case !dod:
			writePacked(&w, vp, vx[i-1])
		case i >= 2:
			writePacked(&w, vp, vx[i-2])
		}
		corr(i)
	}
	return w.b
}

func (it *Iterator) readVar() uint64 {
	l := it.br.readBits(7)
	if l > 64 {
		it.corrupt("var wider than 64 bits")
		return 0
	}
	return it.br.readBits(uint(l))
}

func (it *Iterator) readPacked(p byte) uint64 {
	width := uint(p &^ noEscape)
	if p&noEscape == 0 && it.br.readBit() {
		return it.readVar()
	}
	return it.br.readBits(width)
}

// readGridList reads one exception list of a grid into dst.
func (it *Iterator) readGridList(dst []gridEntry) []gridEntry {
	dst = dst[:0]
	cnt := it.readVar()
	if cnt > uint64(it.total) {
		it.corrupt("grid list longer than the chunk")
		return dst
	}
	idx := uint64(0)
	for k := uint64(0); k < cnt && it.err == nil && !it.br.bad; k++ {
		gap := it.readVar()
		idx += gap
		if gap == 0 || idx >= uint64(it.total) {
			it.corrupt("grid list index out of order or range")
			return dst
		}
		dst = append(dst, gridEntry{int(idx), unzigzag(it.readVar())})
	}
	return dst
}

// gridTime advances the grid to sample i and returns its timestamp.
func (it *Iterator) gridTime(i int) int64 {
	inc := int64(1)
	if it.gi < len(it.gaps) && it.gaps[it.gi].idx == i {
		inc += it.gaps[it.gi].v
		it.gi++
	}
	it.g += inc
	var off int64
	if it.oi < len(it.offs) && it.offs[it.oi].idx == i {
		off = it.offs[it.oi].v
		it.oi++
	}
	return it.minT + it.g*it.step + off
}

// nextDecimal is Next for EncDecimal chunks.
func (it *Iterator) nextDecimal() bool {
	br := &it.br
	i := it.read
	if it.grid && i >= 1 {
		return it.nextGrid(i)
	}
	// Fast path: both fields wholly buffered and not escaped, decoded in
	// locals; anything else takes the general path below.
	if i >= 2 {
		tw, vw := uint(it.tpack&^noEscape), uint(it.vpack&^noEscape)
		tesc, vesc := uint(^it.tpack>>7), uint(^it.vpack>>7) // 1 when an escape bit precedes
		need := tw + vw + tesc + vesc + it.corr
		if br.n < need {
			br.refill()
		}
		if n := br.n; need <= n && tw < 64 && vw < 64 {
			buf := br.buf
			ok := true
			var dt, dv uint64
			if tesc == 1 {
				ok = buf>>63 == 0
				buf <<= 1
			}
			if tw > 0 {
				dt = buf >> (64 - tw)
				buf <<= tw
			}
			if vesc == 1 {
				ok = ok && buf>>63 == 0
				buf <<= 1
			}
			if vw > 0 {
				dv = buf >> (64 - vw)
				buf <<= vw
			}
			if it.corr == 1 {
				ok = ok && buf>>63 == 0
				buf <<= 1
			}
			delta := it.delta + unzigzag(dt)
			t := it.t + delta
			if ok && t > it.t {
				br.buf, br.n = buf, n-need
				it.t, it.delta = t, delta
				// applyValue's work, inline and without a correction:
				// this is the hot loop.
				if it.dod {
					it.md += unzigzag(dv)
					it.m += it.md
				} else {
					it.m += unzigzag(dv)
				}
				if it.e == 0 {
					it.vb = math.Float64bits(float64(it.m))
				} else {
					it.vb = math.Float64bits(float64(it.m) / pow10[it.e])
				}
				it.read++
				return true
			}
		}
	}
	if i == 0 {
		it.t = int64(br.readBits(64))
		it.minT = it.t
		switch {
		case it.grid:
			it.step = int64(it.readVar())
			it.gaps = it.readGridList(it.gaps)
			it.offs = it.readGridList(it.offs)
			it.g, it.gi, it.oi = 0, 0, 0
		case it.total > 1:
			it.delta = unzigzag(it.readVar())
		}
		it.m = unzigzag(it.readVar())
		if it.total > 1 && it.dod {
			it.md = unzigzag(it.readVar())
		}
		return it.finishDecimal(0, 0)
	}
	if i >= 2 {
		it.delta += unzigzag(it.readPacked(it.tpack))
	}
	t := it.t + it.delta
	if t <= it.t && !br.bad && it.err == nil {
		return it.corrupt("timestamps do not increase")
	}
	it.t = t
	return it.finishDecimal(i, it.readResidual(i))
}

// readResidual reads the packed value element of sample i >= 1: there is
// none for the second sample of a chunk of deltas of deltas (its delta is
// in the header).
func (it *Iterator) readResidual(i int) int64 {
	if it.dod && i == 1 {
		return 0
	}
	return unzigzag(it.readPacked(it.vpack))
}

// finishDecimal reads sample i's correction, checks the reader, and
// applies the value residual x (ignored for the first sample, whose
// mantissa is already set).
func (it *Iterator) finishDecimal(i int, x int64) bool {
	var c int64
	if it.corr == 1 && it.br.readBit() {
		c = unzigzag(it.readVar())
	}
	if it.br.bad {
		return it.corrupt("truncated sample")
	}
	if it.err != nil {
		return false
	}
	if i == 0 {
		it.setValue(c)
		it.read++
		return true
	}
	it.applyValue(i, x, c)
	return true
}

// nextGrid decodes sample i >= 1 of a grid chunk: the timestamp from the
// grid, the value from the stream.
func (it *Iterator) nextGrid(i int) bool {
	br := &it.br
	t := it.gridTime(i)
	if t <= it.t {
		return it.corrupt("timestamps do not increase")
	}
	it.t = t
	// Value, fast when it is packed without an escape and buffered.
	vw, vesc := uint(it.vpack&^noEscape), uint(^it.vpack>>7)
	need := vw + vesc + it.corr
	if br.n < need {
		br.refill()
	}
	var x int64
	if n := br.n; (i >= 2 || !it.dod) && need <= n && vw < 64 && (vesc == 0 || br.buf>>63 == 0) &&
		(it.corr == 0 || (br.buf<<vesc<<vw)>>63 == 0) {
		buf := br.buf << vesc
		if vw > 0 {
			x = unzigzag(buf >> (64 - vw))
		}
		br.buf, br.n = buf<<vw<<it.corr, n-need
		it.applyValue(i, x, 0)
		return true
	}
	return it.finishDecimal(i, it.readResidual(i))
}

// applyValue adds the value residual x of sample i (a delta, or a delta of
// deltas from the third sample) and its correction c.
func (it *Iterator) applyValue(i int, x, c int64) {
	switch {
	case !it.dod:
		it.m += x
	case i >= 2:
		it.md += x
		it.m += it.md
	default:
		it.m += it.md
	}
	it.setValue(c)
	it.read++
}

// setValue sets the current value from the mantissa and correction c.
func (it *Iterator) setValue(c int64) {
	if it.e == 0 { // whole numbers: no division
		it.vb = math.Float64bits(float64(it.m)) + uint64(c)
		return
	}
	it.vb = math.Float64bits(float64(it.m)/pow10[it.e]) + uint64(c)
}
