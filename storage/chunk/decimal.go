package chunk

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// EncDecimal stores values that are all exactly m / 10^e for integers m
// and one small e (whole numbers, counters, percentages with two decimals,
// CloudWatch's three decimals) as integers: the mantissas' deltas, or
// their deltas of deltas, bit-packed at one width chosen for the chunk.
// It is written only by Optimize, for sealed chunks; the head appends XOR.
//
//	byte 0      2
//	bytes 1-2   sample count, uint16 big-endian
//	byte 3      low 4 bits: e (0..15); bit 4: 0 = deltas, 1 = deltas of deltas
//	byte 4      W, the packed width (0..64)
//	bits        t0 (64 bits); m0 as a 7-bit length L and L bits of zigzag(m0);
//	            then per sample: the timestamp exactly as in XOR, and
//	            x = zigzag(delta or delta of delta of m) as
//	              '0' + W bits            when x fits in W bits
//	              '1' + 7-bit length L + L bits   otherwise
//
// Decoding yields float64(m) / 10^e, and Optimize keeps this encoding only
// after checking that this gives back every value bit for bit.
const EncDecimal byte = 2

const decimalHeader = 5

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
	ms, e, ok := toDecimal(vs)
	if !ok {
		return b
	}
	best := b
	for _, dod := range []bool{false, true} {
		if d := encodeDecimal(ts, ms, e, dod); len(d) < len(best) {
			best = d
		}
	}
	return best
}

// toDecimal finds the smallest e such that every value is exactly
// float64(m)/10^e for an integer m of at most 53 bits.
func toDecimal(vs []float64) ([]int64, uint8, bool) {
	ms := make([]int64, len(vs))
	for e := uint8(0); e < uint8(len(pow10)); e++ {
		p := pow10[e]
		ok := true
		for i, v := range vs {
			f := math.Round(v * p)
			if math.IsNaN(f) || math.Abs(f) > 1<<53 {
				return nil, 0, false
			}
			m := int64(f)
			if math.Float64bits(float64(m)/p) != math.Float64bits(v) {
				ok = false
				break
			}
			ms[i] = m
		}
		if ok {
			return ms, e, true
		}
	}
	return nil, 0, false
}

func encodeDecimal(ts []int64, ms []int64, e uint8, dod bool) []byte {
	xs := make([]uint64, len(ms)-1)
	var prevD int64
	for i := 1; i < len(ms); i++ {
		d := ms[i] - ms[i-1]
		if dod {
			xs[i-1] = zigzag(d - prevD)
			prevD = d
		} else {
			xs[i-1] = zigzag(d)
		}
	}
	// Pick the width that minimises the packed size.
	var hist [65]int
	for _, x := range xs {
		hist[bits.Len64(x)]++
	}
	// cost(w) = (1+w) * #(len <= w) + sum over len > w of (8+len).
	var escCost int // of the values longer than w, for w from 64 down
	var escAbove [66]int
	for l := 64; l >= 0; l-- {
		escAbove[l] = escCost
		escCost += hist[l] * (1 + 7 + l)
	}
	bestW, bestCost := 0, math.MaxInt
	fit := 0
	for w := 0; w <= 64; w++ {
		fit += hist[w]
		if cost := fit*(1+w) + escAbove[w]; cost < bestCost {
			bestW, bestCost = w, cost
		}
	}
	mode := byte(0)
	if dod {
		mode = 1 << 4
	}
	w := bitWriter{b: make([]byte, decimalHeader, decimalHeader+8+(bestCost+len(ts)*2)/8)}
	w.b[0] = EncDecimal
	binary.BigEndian.PutUint16(w.b[1:], uint16(len(ts)))
	w.b[3] = e | mode
	w.b[4] = byte(bestW)
	w.writeBits(uint64(ts[0]), 64)
	z0 := zigzag(ms[0])
	w.writeBits(uint64(bits.Len64(z0)), 7)
	w.writeBits(z0, uint(bits.Len64(z0)))
	var prevDelta int64
	for i := 1; i < len(ts); i++ {
		delta := ts[i] - ts[i-1]
		writeDoD(&w, delta-prevDelta)
		prevDelta = delta
		x := xs[i-1]
		if l := bits.Len64(x); l <= bestW {
			w.writeBit(false)
			w.writeBits(x, uint(bestW))
		} else {
			w.writeBit(true)
			w.writeBits(uint64(l), 7)
			w.writeBits(x, uint(l))
		}
	}
	return w.b
}

func writeDoD(w *bitWriter, dod int64) {
	switch {
	case dod == 0:
		w.writeBit(false)
	case -8191 <= dod && dod <= 8192:
		w.writeBits(0b10, 2)
		w.writeBits(uint64(dod), 14)
	case -65535 <= dod && dod <= 65536:
		w.writeBits(0b110, 3)
		w.writeBits(uint64(dod), 17)
	case -524287 <= dod && dod <= 524288:
		w.writeBits(0b1110, 4)
		w.writeBits(uint64(dod), 20)
	default:
		w.writeBits(0b1111, 4)
		w.writeBits(uint64(dod), 64)
	}
}
