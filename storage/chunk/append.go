package chunk

import "math"

// SampleShape is any struct of a timestamp and a value in that order
// (series.Sample is one): AppendRange decodes into the caller's own type
// without this package importing it.
type SampleShape interface {
	~struct {
		T int64
		V float64
	}
}

// AppendRange appends it's remaining samples with timestamps in [mint,
// maxt] to dst. past reports that it stopped at a sample after maxt (the
// caller's later chunks are past it too). Scans spend most of their time
// here: the common EncDecimal case decodes in a loop whose state stays in
// registers, instead of a Next and At call per sample with the state in
// the Iterator.
func AppendRange[S SampleShape](it *Iterator, dst []S, mint, maxt int64) (out []S, past bool) {
	for it.read < it.total && it.err == nil {
		if it.enc == EncDecimal && !it.grid && it.read >= 2 {
			if dst, past = appendDecimal(it, dst, mint, maxt); past {
				return dst, true
			}
			if it.read >= it.total {
				break
			}
		}
		// Anything the loop does not take (the first samples, escapes,
		// corrections, other encodings, a buffer to refill at the end):
		// one sample the general way.
		if !it.Next() {
			break
		}
		if it.t > maxt {
			return dst, true
		}
		if it.t < mint {
			continue
		}
		dst = append(dst, S{T: it.t, V: math.Float64frombits(it.vb)})
	}
	return dst, false
}

// appendDecimal is nextDecimal's fast path as a loop: it stops, with the
// Iterator updated, at the first sample that needs the general path.
func appendDecimal[S SampleShape](it *Iterator, dst []S, mint, maxt int64) ([]S, bool) {
	tw, vw := uint(it.tpack&^noEscape), uint(it.vpack&^noEscape)
	if tw >= 64 || vw >= 64 {
		return dst, false
	}
	tesc, vesc := uint(^it.tpack>>7), uint(^it.vpack>>7) // 1 when an escape bit precedes
	corr := it.corr
	need := tw + vw + tesc + vesc + corr
	// An escape or correction bit must be 0 for the fast path: one mask
	// over the bits they occupy checks all three.
	var flags uint64
	if tesc == 1 {
		flags |= 1 << 63
	}
	if vesc == 1 {
		flags |= 1 << (63 - tesc - tw)
	}
	if corr == 1 {
		flags |= 1 << (63 - tesc - tw - vesc - vw)
	}
	br := &it.br
	t, delta, m, md := it.t, it.delta, it.m, it.md
	buf, n := br.buf, br.n
	read, total := it.read, it.total
	dod, whole, div := it.dod, it.e == 0, pow10[it.e]
	past := false
	for read < total {
		if n < need {
			br.buf, br.n = buf, n
			br.refill()
			buf, n = br.buf, br.n
			if n < need {
				break
			}
		}
		if buf&flags != 0 {
			break
		}
		b := buf << tesc
		dt := b >> (64 - tw) // 0 when tw is 0: Go shifts by 64 give 0
		b = b << tw << vesc
		dv := b >> (64 - vw)
		nd := delta + unzigzag(dt)
		nt := t + nd
		if nt <= t {
			break // not increasing: the general path reports it
		}
		buf, n = b<<vw<<corr, n-need
		t, delta = nt, nd
		if dod {
			md += unzigzag(dv)
			m += md
		} else {
			m += unzigzag(dv)
		}
		read++
		if t > maxt {
			past = true
			break
		}
		if t < mint {
			continue
		}
		v := float64(m)
		if !whole {
			v /= div
		}
		dst = append(dst, S{T: t, V: v})
	}
	it.t, it.delta, it.m, it.md = t, delta, m, md
	br.buf, br.n = buf, n
	it.read = read
	if whole {
		it.vb = math.Float64bits(float64(m))
	} else {
		it.vb = math.Float64bits(float64(m) / div)
	}
	return dst, past
}
