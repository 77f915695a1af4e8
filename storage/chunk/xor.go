package chunk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// Encoding is the first byte of every chunk.
const (
	// EncXOR is the Gorilla delta-of-delta / XOR encoding (format version 1).
	EncXOR byte = 1
)

const (
	headerSize = 3
	// MaxSamples is the most a chunk can count in its 16-bit header.
	MaxSamples = math.MaxUint16
	noWindow   = 0xff
)

var (
	// ErrOutOfOrder is returned by Append for a timestamp that is not after
	// the previous one.
	ErrOutOfOrder = errors.New("chunk: timestamp not after the previous sample")
	// ErrFull is returned by Append when the chunk holds MaxSamples.
	ErrFull = errors.New("chunk: full")
	// ErrCorrupt is wrapped by every decoding error.
	ErrCorrupt = errors.New("chunk: corrupt")
)

// Appender encodes samples into a chunk. The zero value is not usable: call
// NewAppender or ResumeAppender. Not safe for concurrent use.
type Appender struct {
	w        bitWriter
	count    int
	minT     int64
	t        int64
	delta    int64
	vb       uint64
	leading  uint8 // noWindow until the first '11' value
	trailing uint8
}

// NewAppender returns an appender on a new, empty chunk.
func NewAppender() *Appender {
	return &Appender{w: bitWriter{b: []byte{EncXOR, 0, 0}}, leading: noWindow}
}

// ResumeAppender returns an appender that continues the chunk b. It copies
// b, so the caller keeps ownership of it. It fails if b does not decode.
func ResumeAppender(b []byte) (*Appender, error) {
	var it Iterator
	it.Reset(b)
	if it.err == nil && it.enc != EncXOR {
		// Optimized chunks are not appendable in place: re-encode as XOR.
		a := NewAppender()
		for it.Next() {
			a.Append(it.At())
		}
		if it.Err() != nil {
			return nil, it.Err()
		}
		return a, nil
	}
	a := &Appender{leading: noWindow}
	for it.Next() {
	}
	if it.Err() != nil {
		return nil, it.Err()
	}
	if it.total == 0 {
		return NewAppender(), nil
	}
	used := it.br.consumed()
	nbytes := headerSize + (used+7)/8
	buf := make([]byte, nbytes, nbytes+32)
	copy(buf, b[:nbytes])
	if rem := used % 8; rem != 0 {
		buf[nbytes-1] &= ^byte(0xff >> rem) // drop padding bits after the last sample
		a.w.free = uint(8 - rem)
	}
	a.w.b = buf
	a.count = it.total
	a.minT = it.minT
	a.t, a.delta, a.vb = it.t, it.delta, it.vb
	a.leading, a.trailing = it.leading, it.trailing
	return a, nil
}

// Count returns the number of samples appended.
func (a *Appender) Count() int { return a.count }

// MinT returns the first timestamp; meaningless when Count is 0.
func (a *Appender) MinT() int64 { return a.minT }

// MaxT returns the last timestamp; meaningless when Count is 0.
func (a *Appender) MaxT() int64 { return a.t }

// Size returns the encoded size in bytes.
func (a *Appender) Size() int { return len(a.w.b) }

// Bytes returns the chunk. The slice aliases the appender's buffer: it is
// valid until the next Append; copy it to keep it.
func (a *Appender) Bytes() []byte {
	binary.BigEndian.PutUint16(a.w.b[1:], uint16(a.count))
	return a.w.b
}

// Append adds a sample. It refuses a timestamp that is not after the last.
func (a *Appender) Append(t int64, v float64) error {
	vb := math.Float64bits(v)
	switch {
	case a.count == 0:
		a.w.writeBits(uint64(t), 64)
		a.w.writeBits(vb, 64)
		a.minT = t
		a.t, a.vb = t, vb
		a.count = 1
		return nil
	case t <= a.t:
		return ErrOutOfOrder
	case a.count >= MaxSamples:
		return ErrFull
	}
	delta := t - a.t
	writeDoD(&a.w, delta-a.delta)
	a.writeValue(vb)
	a.t, a.delta, a.vb = t, delta, vb
	a.count++
	return nil
}

func (a *Appender) writeValue(vb uint64) {
	x := vb ^ a.vb
	if x == 0 {
		a.w.writeBit(false)
		return
	}
	leading := uint8(bits.LeadingZeros64(x))
	trailing := uint8(bits.TrailingZeros64(x))
	if leading > 31 {
		leading = 31
	}
	if a.leading != noWindow && leading >= a.leading && trailing >= a.trailing {
		a.w.writeBits(0b10, 2)
		a.w.writeBits(x>>a.trailing, uint(64-a.leading-a.trailing))
		return
	}
	a.leading, a.trailing = leading, trailing
	sig := 64 - leading - trailing
	a.w.writeBits(0b11, 2)
	a.w.writeBits(uint64(leading), 5)
	a.w.writeBits(uint64(sig&63), 6) // 64 is written as 0
	a.w.writeBits(x>>trailing, uint(sig))
}

// Iterator decodes a chunk. The zero value is an exhausted iterator; Reset
// points it at a chunk, so one Iterator can be reused without allocating.
// It never panics on arbitrary input: malformed bytes end the iteration
// with an error wrapping ErrCorrupt.
type Iterator struct {
	br  bitReader
	enc byte
	// EncDecimal state: exponent, mode, packings, mantissa, last delta.
	e            uint8
	dod          bool
	vpack, tpack byte
	corr         uint // 1 when values carry corrections
	// Grid timestamps: step, position, exception lists and cursors.
	grid       bool
	step, g    int64
	gaps, offs []gridEntry
	gi, oi     int
	m          int64
	md         int64

	total    int
	read     int
	minT     int64
	t        int64
	delta    int64
	vb       uint64
	leading  uint8
	trailing uint8
	err      error
}

// NewIterator returns an iterator over chunk b; b must not change while
// the iterator is in use.
func NewIterator(b []byte) *Iterator {
	it := &Iterator{}
	it.Reset(b)
	return it
}

// Reset points the iterator at chunk b, discarding all state.
func (it *Iterator) Reset(b []byte) {
	gaps, offs := it.gaps[:0], it.offs[:0] // keep their arrays: no allocation per chunk
	*it = Iterator{leading: noWindow, gaps: gaps, offs: offs}
	if len(b) < headerSize {
		it.err = fmt.Errorf("%w: %d bytes is shorter than the %d-byte header", ErrCorrupt, len(b), headerSize)
		return
	}
	it.enc = b[0]
	it.total = int(binary.BigEndian.Uint16(b[1:]))
	switch b[0] {
	case EncXOR:
		it.br.reset(b[headerSize:])
	case EncDecimal:
		if len(b) < decimalHeader || b[3]>>7 != 0 || b[4]&^noEscape > 64 || b[5]&^noEscape > 64 {
			it.err = fmt.Errorf("%w: bad decimal chunk header", ErrCorrupt)
			return
		}
		it.e, it.dod, it.vpack, it.tpack = b[3]&0x0f, b[3]&0x10 != 0, b[4], b[5]
		if b[3]&corrFlag != 0 {
			it.corr = 1
		}
		it.grid = b[3]&gridFlag != 0
		it.br.reset(b[decimalHeader:])
	default:
		it.err = fmt.Errorf("%w: unknown encoding %d", ErrCorrupt, b[0])
	}
}

// Count returns the number of samples the chunk header announces.
func (it *Iterator) Count() int { return it.total }

// At returns the current sample.
func (it *Iterator) At() (int64, float64) { return it.t, math.Float64frombits(it.vb) }

// Err returns the error that ended the iteration, if any.
func (it *Iterator) Err() error { return it.err }

func (it *Iterator) corrupt(what string) bool {
	it.err = fmt.Errorf("%w: sample %d of %d: %s", ErrCorrupt, it.read, it.total, what)
	return false
}

// Seek moves to the first sample at or after t; see series.Iterator.
func (it *Iterator) Seek(t int64) bool {
	if it.err != nil {
		return false
	}
	if it.read > 0 && it.t >= t {
		return true
	}
	for it.Next() {
		if it.t >= t {
			return true
		}
	}
	return false
}

// Next moves to the next sample.
func (it *Iterator) Next() bool {
	if it.err != nil || it.read >= it.total {
		return false
	}
	if it.enc == EncDecimal {
		return it.nextDecimal()
	}
	br := &it.br
	if it.read == 0 {
		it.t = int64(br.readBits(64))
		it.minT = it.t
		it.vb = br.readBits(64)
		if br.bad {
			return it.corrupt("truncated first sample")
		}
		if it.err != nil {
			return false
		}
		it.read = 1
		return true
	}

	if it.nextXORFast() {
		return true
	}
	return it.nextXORSlow()
}

var tsPayload = [5]uint{0, 14, 17, 20, 64}

// nextXORFast decodes one sample from the bits already buffered, in
// locals, without a call per field; it returns false, having changed
// nothing, when the sample is not wholly in the buffer or is malformed,
// and nextXORSlow takes over. Most samples take this path: a regular
// scrape needs 1-25 bits of timestamp and 1-77 bits of value.
func (it *Iterator) nextXORFast() bool {
	br := &it.br
	buf, n := br.buf, br.n
	if n < 57 {
		// refill, inlined: the call was a tenth of decode time.
		if br.pos+8 > len(br.b) {
			br.refill()
			buf, n = br.buf, br.n
		} else {
			v := binary.BigEndian.Uint64(br.b[br.pos:])
			nb := (64 - n) >> 3
			got := n + nb<<3
			buf |= (v >> n) & ^(^uint64(0) >> got)
			br.pos += int(nb)
			n = got
			br.buf, br.n = buf, n
		}
	}
	prefix := uint(bits.LeadingZeros64(^buf))
	used := prefix + 1
	if prefix >= 4 {
		prefix, used = 4, 4
	}
	sz := tsPayload[prefix]
	if used+sz+1 > n {
		return false
	}
	var dod int64
	if sz != 0 {
		u := (buf << (used & 63)) >> ((64 - sz) & 63)
		if sz < 64 && u > 1<<(sz-1) {
			u -= 1 << sz
		}
		dod = int64(u)
		used += sz
	}
	vb, leading, trailing := it.vb, it.leading, it.trailing
	if (buf<<(used&63))>>63 == 1 {
		used++
		if used+1 > n {
			return false
		}
		ctl := (buf << (used & 63)) >> 63
		used++
		if ctl == 1 {
			if used+11 > n {
				return false
			}
			hdr := (buf << (used & 63)) >> (64 - 11)
			used += 11
			leading = uint8(hdr >> 6)
			sig := uint8(hdr & 63)
			if sig == 0 {
				sig = 64
			}
			if int(leading)+int(sig) > 64 {
				return false
			}
			trailing = 64 - leading - sig
		} else if leading == noWindow {
			return false
		}
		sig := uint(64 - leading - trailing)
		if used+sig > n {
			return false
		}
		x := (buf << (used & 63)) >> ((64 - sig) & 63)
		used += sig
		vb ^= x << trailing
	} else {
		used++
	}
	delta := it.delta + dod
	t := it.t + delta
	if t <= it.t {
		return false
	}
	br.buf = buf << used // used == 64 leaves 0, as Go defines the shift
	br.n = n - used
	it.t, it.delta, it.vb, it.leading, it.trailing = t, delta, vb, leading, trailing
	it.read++
	return true
}

// nextXORSlow decodes one sample field by field, refilling as it goes and
// naming what is wrong with a malformed one.
func (it *Iterator) nextXORSlow() bool {
	br := &it.br
	// Timestamp: count up to four leading 1 bits of the bucket prefix.
	if br.n < 4 {
		br.refill()
	}
	var prefix uint
	if br.n >= 4 {
		prefix = uint(bits.LeadingZeros64(^br.buf))
		if prefix > 4 {
			prefix = 4
		}
		if prefix < 4 {
			br.buf <<= prefix + 1
			br.n -= prefix + 1
		} else {
			br.buf <<= 4
			br.n -= 4
		}
	} else {
		for prefix < 4 && br.readBit() {
			prefix++
		}
	}
	var dod int64
	if prefix != 0 {
		sz := [5]uint{0, 14, 17, 20, 64}[prefix]
		u := br.readBits(sz)
		if sz < 64 && u > 1<<(sz-1) {
			u -= 1 << sz // sign-extend the two's complement field
		}
		dod = int64(u)
	}
	// Deltas wrap like the appender's arithmetic (a gap wider than
	// MaxInt64 is a negative int64); what must hold is that time increases.
	delta := it.delta + dod
	t := it.t + delta
	if t <= it.t && !br.bad {
		return it.corrupt("timestamps do not increase")
	}
	it.delta = delta
	it.t = t

	if br.readBit() {
		if br.readBit() {
			hdr := br.readBits(11)
			leading := uint8(hdr >> 6)
			sig := uint8(hdr & 63)
			if sig == 0 {
				sig = 64
			}
			if int(leading)+int(sig) > 64 {
				return it.corrupt("value window past 64 bits")
			}
			it.leading, it.trailing = leading, 64-leading-sig
		} else if it.leading == noWindow {
			return it.corrupt("value reuses a window that was never set")
		}
		x := br.readBits(uint(64 - it.leading - it.trailing))
		it.vb ^= x << it.trailing
	}
	if br.bad {
		return it.corrupt("truncated sample")
	}
	if it.err != nil {
		return false
	}
	it.read++
	return true
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
