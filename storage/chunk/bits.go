package chunk

import "encoding/binary"

// bitWriter appends bits to a byte slice, most significant bit first.
type bitWriter struct {
	b    []byte
	free uint // unused low bits in the last byte of b (0..7; 0 when b is empty or full)
}

func (w *bitWriter) writeBit(bit bool) {
	if w.free == 0 {
		w.b = append(w.b, 0)
		w.free = 8
	}
	w.free--
	if bit {
		w.b[len(w.b)-1] |= 1 << w.free
	}
}

// writeBits writes the low k bits of u (k <= 64).
func (w *bitWriter) writeBits(u uint64, k uint) {
	if k == 0 {
		return
	}
	u <<= 64 - k // left-align
	for k > 0 {
		if w.free == 0 {
			w.b = append(w.b, 0)
			w.free = 8
		}
		take := w.free
		if k < take {
			take = k
		}
		// Top `take` bits of u go into the free bits of the last byte.
		w.b[len(w.b)-1] |= byte(u>>(64-take)) << (w.free - take)
		w.free -= take
		k -= take
		u <<= take
	}
}

// bitReader reads bits from a byte slice, keeping up to 64 of them
// left-aligned in buf so that the hot path is shifts, not byte loads. Like
// a sticky-error decoder, running out of input sets bad and reads zeros
// from then on; callers check bad once per sample.
type bitReader struct {
	b   []byte
	pos int    // next byte of b to load into buf
	buf uint64 // valid bits left-aligned, zeros below
	n   uint   // valid bits in buf
	bad bool   // input ran out
}

func (r *bitReader) reset(b []byte) { *r = bitReader{b: b} }

// consumed returns the number of bits read so far.
func (r *bitReader) consumed() int { return r.pos*8 - int(r.n) }

func (r *bitReader) refill() {
	if r.pos+8 <= len(r.b) {
		v := binary.BigEndian.Uint64(r.b[r.pos:])
		nb := (64 - r.n) / 8 // whole bytes that fit
		got := r.n + nb*8
		r.buf |= (v >> r.n) & ^(^uint64(0) >> got)
		r.pos += int(nb)
		r.n = got
		return
	}
	for r.n <= 56 && r.pos < len(r.b) {
		r.buf |= uint64(r.b[r.pos]) << (56 - r.n)
		r.pos++
		r.n += 8
	}
}

// readBits reads k bits (k <= 64). Small enough to inline; the slow path
// is a separate function.
func (r *bitReader) readBits(k uint) uint64 {
	if r.n >= k {
		v := r.buf >> (64 - k) // k == 0 gives 0: Go defines shifts >= 64
		r.buf <<= k
		r.n -= k
		return v
	}
	return r.readBitsSlow(k)
}

func (r *bitReader) readBitsSlow(k uint) uint64 {
	r.refill()
	if r.n >= k {
		return r.readBits(k)
	}
	if k <= 32 || r.pos >= len(r.b) {
		r.bad = true
		r.n = 0
		return 0
	}
	hi := r.readBitsSlow(k - 32)
	return hi<<32 | r.readBitsSlow(32)
}

func (r *bitReader) readBit() bool {
	if r.n > 0 {
		bit := r.buf>>63 == 1
		r.buf <<= 1
		r.n--
		return bit
	}
	return r.readBitsSlow(1) == 1
}
