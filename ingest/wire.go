package ingest

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/headroomdb/headroom/storage/series"
)

// The write hot path decodes Headroom's WriteRequest and remote-write's
// WriteRequest straight from the wire into flat, reused arrays: label
// strings are slices of the request body, so decoding allocates nothing
// per series or sample. The generic protobuf decoder allocated a struct
// per series, label and sample and two strings per label: more than half
// of the server's CPU on the scrape shape (bench/RESULTS.md).
//
// The two messages have the same shape (repeated series of repeated
// labels and samples) and differ only in the sample's field numbers.

// wireSchema names the field numbers of one protocol's messages.
type wireSchema struct {
	name                        string
	requestSeries               protowire.Number // series in the request
	requestMetadata             protowire.Number // metric metadata in the request (0: none)
	seriesExemplars             protowire.Number // exemplars of a series (0: none)
	sampleTime, sampleValue     protowire.Number
	seriesLabels, seriesSamples protowire.Number
}

var (
	ownSchema  = wireSchema{name: "headroom.v1.WriteRequest", requestSeries: 1, seriesLabels: 1, seriesSamples: 2, sampleTime: 1, sampleValue: 2}
	promSchema = wireSchema{name: "prometheus.WriteRequest", requestSeries: 1, requestMetadata: 3, seriesExemplars: 3, seriesLabels: 1, seriesSamples: 2, sampleTime: 2, sampleValue: 1}
)

// flatSeries is one series of a decoded request: its labels (b.labels
// [l0, l1), not parsed when the cache knew the series: ref is then its
// reference), its samples (b.samples [s0, s1)), and the bytes of its
// label fields, body[raw0:raw1] (raw0 < 0: they were not contiguous).
type flatSeries struct {
	l0, l1, s0, s1 int
	raw0, raw1     int
	ref            uint64
	hash           uint64 // of the label bytes, for the cache
}

type flatSample struct {
	t int64
	v float64
}

// flatBatch is a decoded request; it implements batch.
type flatBatch struct {
	series  []flatSeries
	labels  []series.Label
	samples []flatSample
	// cache, when set, is consulted for each series' label bytes; body
	// is the request the series' positions are in.
	cache *refCache
	body  []byte
	// meta: the metric metadata the request carried.
	meta []wireMetadata
	// exemplars, with their labels in exLabels.
	exemplars []flatExemplar
	exLabels  []series.Label
}

// flatExemplar is an exemplar of series (an index of the batch's).
type flatExemplar struct {
	series, l0, l1 int
	v              float64
	t              int64
}

var flatPool = sync.Pool{New: func() any { return &flatBatch{} }}

func getFlat() *flatBatch { return flatPool.Get().(*flatBatch) }

// release returns b to the pool; the label strings it held point into
// a request body, so they are cleared to let the body be collected.
func (b *flatBatch) release() {
	if cap(b.labels) > 1<<20 {
		return // a huge request: let its arrays go
	}
	clear(b.labels)
	clear(b.exLabels)
	b.series, b.labels, b.samples, b.meta = b.series[:0], b.labels[:0], b.samples[:0], b.meta[:0]
	b.exemplars, b.exLabels = b.exemplars[:0], b.exLabels[:0]
	b.cache, b.body = nil, nil
	flatPool.Put(b)
}

func (b *flatBatch) Len() int { return len(b.series) }

// Labels returns the batch's own slice (the caller sorts it in place):
// copying it was a measurable share of the hot path. A series the cache
// knew has its labels parsed now (the bytes parsed once before: they
// cannot fail).
func (b *flatBatch) Labels(i int, dst series.Labels) series.Labels {
	s := b.series[i]
	if s.ref != 0 && s.l0 == s.l1 {
		str := unsafe.String(unsafe.SliceData(b.body), len(b.body))
		dst = dst[:0]
		for p := s.raw0; p < s.raw1; {
			_, lo, hi, _, _ := nextBytes(b.body, p, s.raw1)
			p = hi
			l, _ := parseLabel(b.body, str, lo, hi)
			dst = append(dst, l)
		}
		return dst
	}
	return b.labels[s.l0:s.l1:s.l1]
}

// Ref returns series i's reference (0: none known) and its label bytes.
func (b *flatBatch) Ref(i int) (ref, hash uint64, raw []byte) {
	s := b.series[i]
	if s.raw0 < 0 {
		return s.ref, 0, nil
	}
	return s.ref, s.hash, b.body[s.raw0:s.raw1]
}
func (b *flatBatch) NumSamples(i int) int { return b.series[i].s1 - b.series[i].s0 }
func (b *flatBatch) Sample(i, j int) (int64, float64) {
	s := b.samples[b.series[i].s0+j]
	return s.t, s.v
}

// wireError is a malformed request; it wraps errBadBody.
type wireError struct {
	msg string
	at  int
}

func (e *wireError) Error() string { return fmt.Sprintf("protobuf: %s at byte %d", e.msg, e.at) }
func (e *wireError) Unwrap() error { return errBadBody }

// uvarint reads a varint at b[pos:end], with a fast path for the one-byte
// tags and lengths that make up most of a request; it returns -1 as the
// position when the varint is malformed or truncated.
func uvarint(b []byte, pos, end int) (uint64, int) {
	if pos < end && b[pos] < 0x80 {
		return uint64(b[pos]), pos + 1
	}
	v, n := protowire.ConsumeVarint(b[pos:end])
	if n < 0 {
		return 0, -1
	}
	return v, pos + n
}

// field reads a field's tag; for a length-delimited field it also reads
// the length and returns the contents' bounds [lo, hi) and the position
// after them; other fields are left for skip.
func field(b []byte, pos, end int) (num protowire.Number, typ protowire.Type, lo, hi int, err error) {
	at := pos
	tag, pos := uvarint(b, pos, end)
	if pos < 0 || tag>>3 == 0 || tag>>3 > uint64(protowire.MaxValidNumber) {
		return 0, 0, 0, 0, &wireError{msg: "malformed field tag", at: at}
	}
	num, typ = protowire.Number(tag>>3), protowire.Type(tag&7)
	if typ != protowire.BytesType {
		return num, typ, pos, pos, nil
	}
	n, p := uvarint(b, pos, end)
	if p < 0 || n > uint64(end-p) {
		return 0, 0, 0, 0, &wireError{msg: fmt.Sprintf("truncated field %d", num), at: at}
	}
	return num, typ, p, p + int(n), nil
}

// skip passes over a field that is not length-delimited (those were read
// whole by field), as the protobuf decoder does with unknown fields.
func skip(b []byte, num protowire.Number, typ protowire.Type, pos, end int) (int, error) {
	n := protowire.ConsumeFieldValue(num, typ, b[pos:end])
	if n < 0 {
		return 0, &wireError{msg: fmt.Sprintf("malformed field %d", num), at: pos}
	}
	return pos + n, nil
}

// nextBytes reads the field at pos: a length-delimited one's contents are
// [lo, hi); any other is skipped (ok false, lo == hi the position after).
func nextBytes(b []byte, pos, end int) (num protowire.Number, lo, hi int, ok bool, err error) {
	num, typ, lo, hi, err := field(b, pos, end)
	if err != nil {
		return 0, 0, 0, false, err
	}
	if typ != protowire.BytesType {
		hi, err = skip(b, num, typ, lo, end)
		return num, hi, hi, false, err
	}
	return num, lo, hi, true, nil
}

// decodeWrite decodes a write request of schema sc from body into b.
// body must not change while b's labels are in use: the label strings
// share its memory.
func decodeWrite(body []byte, sc wireSchema, b *flatBatch) error {
	b.body = body
	str := unsafe.String(unsafe.SliceData(body), len(body))
	pos, end := 0, len(body)
	for pos < end {
		num, lo, hi, ok, err := nextBytes(body, pos, end)
		if err != nil {
			return err
		}
		pos = hi
		if ok && num == sc.requestSeries {
			if err := decodeSeries(body, str, lo, hi, sc, b); err != nil {
				return err
			}
		}
		if ok && sc.requestMetadata != 0 && num == sc.requestMetadata {
			m, err := parseMetadata(body[lo:hi])
			if err != nil {
				return &wireError{msg: err.Error(), at: lo}
			}
			b.meta = append(b.meta, m)
		}
	}
	return nil
}

// parseExemplar parses a remote-write 1.0 Exemplar (labels 1, value 2,
// timestamp 3) of the series being decoded.
func (b *flatBatch) parseExemplar(body []byte, str string, lo, hi int) error {
	e := flatExemplar{series: len(b.series), l0: len(b.exLabels)}
	for p := lo; p < hi; {
		num, typ, vlo, vhi, err := field(body, p, hi)
		if err != nil {
			return err
		}
		switch {
		case num == 1 && typ == protowire.BytesType:
			l, err := parseLabel(body, str, vlo, vhi)
			if err != nil {
				return err
			}
			b.exLabels = append(b.exLabels, l)
			p = vhi
		case typ == protowire.BytesType:
			p = vhi
		case num == 2 && typ == protowire.Fixed64Type:
			if hi-vlo < 8 {
				return &wireError{msg: "truncated exemplar value", at: vlo}
			}
			e.v, p = math.Float64frombits(binary.LittleEndian.Uint64(body[vlo:])), vlo+8
		case num == 3 && typ == protowire.VarintType:
			v, np := uvarint(body, vlo, hi)
			if np < 0 {
				return &wireError{msg: "malformed exemplar timestamp", at: vlo}
			}
			e.t, p = int64(v), np
		default:
			if p, err = skip(body, num, typ, vlo, hi); err != nil {
				return err
			}
		}
	}
	e.l1 = len(b.exLabels)
	b.exemplars = append(b.exemplars, e)
	return nil
}

// parseLabel parses a Label message in body[lo:hi].
func parseLabel(body []byte, str string, lo, hi int) (series.Label, error) {
	var l series.Label
	for p := lo; p < hi; {
		num, vlo, vhi, ok, err := nextBytes(body, p, hi)
		if err != nil {
			return l, err
		}
		p = vhi
		switch {
		case !ok:
		case num == 1:
			l.Name = str[vlo:vhi]
		case num == 2:
			l.Value = str[vlo:vhi]
		}
	}
	return l, nil
}

func decodeSeries(body []byte, str string, pos, end int, sc wireSchema, b *flatBatch) error {
	start := pos
	fs := flatSeries{l0: len(b.labels), s0: len(b.samples), raw0: -1}
	split := false // label fields with other fields between them
	for pos < end {
		at := pos
		num, lo, hi, ok, err := nextBytes(body, pos, end)
		if err != nil {
			return err
		}
		pos = hi
		if !ok {
			continue
		}
		switch num {
		case sc.seriesLabels:
			if fs.raw0 < 0 {
				fs.raw0 = at
			} else if fs.raw1 != at {
				split = true
			}
			fs.raw1 = hi
		case sc.seriesSamples:
			var s flatSample
			for p := lo; p < hi; {
				num, typ, vlo, vhi, err := field(body, p, hi)
				if err != nil {
					return err
				}
				switch {
				case typ == protowire.BytesType:
					p = vhi
				case num == sc.sampleTime && typ == protowire.VarintType:
					v, np := uvarint(body, vlo, hi)
					if np < 0 {
						return &wireError{msg: "malformed sample timestamp", at: vlo}
					}
					s.t, p = int64(v), np
				case num == sc.sampleValue && typ == protowire.Fixed64Type:
					if hi-vlo < 8 {
						return &wireError{msg: "truncated sample value", at: vlo}
					}
					s.v, p = math.Float64frombits(binary.LittleEndian.Uint64(body[vlo:])), vlo+8
				default:
					// Unknown fields, and known ones of another wire
					// type, are skipped, as the protobuf decoder does.
					if p, err = skip(body, num, typ, vlo, hi); err != nil {
						return err
					}
				}
			}
			b.samples = append(b.samples, s)
		case sc.seriesExemplars:
			if sc.seriesExemplars == 0 {
				continue
			}
			if err := b.parseExemplar(body, str, lo, hi); err != nil {
				return err
			}
		}
	}
	fs.s1 = len(b.samples)
	if split {
		fs.raw0 = -1
	}
	if fs.raw0 >= 0 && b.cache != nil {
		var hit bool
		if fs.ref, fs.hash, hit = b.cache.get(body[fs.raw0:fs.raw1]); hit {
			fs.l1 = fs.l0
			b.series = append(b.series, fs)
			return nil
		}
	}
	// Parse the labels: those of the contiguous run, or, split, every
	// label field of the series.
	lo, hi := fs.raw0, fs.raw1
	if fs.raw0 < 0 {
		lo, hi = start, end
	}
	for p := lo; p < hi; {
		num, flo, fhi, ok, err := nextBytes(body, p, hi)
		if err != nil {
			return err
		}
		p = fhi
		if !ok || num != sc.seriesLabels {
			continue
		}
		l, err := parseLabel(body, str, flo, fhi)
		if err != nil {
			return err
		}
		b.labels = append(b.labels, l)
	}
	fs.l1 = len(b.labels)
	b.series = append(b.series, fs)
	return nil
}
