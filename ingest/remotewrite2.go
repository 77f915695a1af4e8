package ingest

import (
	"encoding/binary"
	"fmt"
	"math"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/headroomdb/headroom/storage/series"
)

// Remote-write 2.0 (io.prometheus.write.v2.Request): every string of a
// request sits once in its symbol table and series refer to them by
// index. It is chosen by the request's Content-Type, as the 2.0
// specification negotiates; the body is snappy-compressed, as in 1.0.

const (
	protoV1 = "prometheus.WriteRequest"
	protoV2 = "io.prometheus.write.v2.Request"
)

// negotiate reads which message a request holds from its Content-Type
// and Content-Encoding; msg says what is supported when it cannot be
// served (415).
func negotiate(r *http.Request) (v2 bool, msg string) {
	if ce := r.Header.Get("Content-Encoding"); ce != "" && ce != "snappy" {
		return false, fmt.Sprintf("unsupported Content-Encoding %q: snappy is supported", ce)
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return false, "" // senders older than the specification send none
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/x-protobuf" {
		return false, fmt.Sprintf("unsupported Content-Type %q: application/x-protobuf;proto=%s (remote-write 2.0) or application/x-protobuf (1.0) is supported", ct, protoV2)
	}
	switch params["proto"] {
	case "", protoV1:
		return false, ""
	case protoV2:
		return true, ""
	}
	return false, fmt.Sprintf("unsupported remote-write message %q: proto=%s (2.0) or proto=%s (1.0) is supported", params["proto"], protoV2, protoV1)
}

// v2Batch is a decoded 2.0 request: its series with their float samples
// or native histograms (a batch, for write), their metadata and
// exemplars.
type v2Batch struct {
	series  []v2Series
	labels  []series.Label
	samples []flatSample
	hists   []series.HistSample
	meta    []wireMetadata
	// Exemplars of the series, their labels in exLabels.
	exemplars []flatExemplar
	exLabels  []series.Label
	refs      []uint64 // scratch: one series' label references
	symbols   []string // scratch: the request's symbol table
	spans     [][2]int // scratch: where its series are
}

var v2Pool = sync.Pool{New: func() any { return &v2Batch{} }}

// release empties b (its strings point into a request body) and pools
// it; a huge request's arrays are let go.
func (b *v2Batch) release() {
	if cap(b.labels) > 1<<20 {
		return
	}
	clear(b.labels)
	clear(b.exLabels)
	clear(b.meta)
	clear(b.symbols)
	clear(b.hists)
	*b = v2Batch{series: b.series[:0], labels: b.labels[:0], samples: b.samples[:0], hists: b.hists[:0], meta: b.meta[:0],
		exemplars: b.exemplars[:0], exLabels: b.exLabels[:0], refs: b.refs[:0], symbols: b.symbols[:0], spans: b.spans[:0]}
	v2Pool.Put(b)
}

type v2Series struct{ l0, l1, s0, s1, h0, h1 int }

func (b *v2Batch) Len() int { return len(b.series) }
func (b *v2Batch) Labels(i int, dst series.Labels) series.Labels {
	s := b.series[i]
	if dst == nil {
		return b.labels[s.l0:s.l1]
	}
	return append(dst, b.labels[s.l0:s.l1]...)
}
func (b *v2Batch) NumSamples(i int) int { return b.series[i].s1 - b.series[i].s0 }
func (b *v2Batch) Sample(i, j int) (int64, float64) {
	p := b.samples[b.series[i].s0+j]
	return p.t, p.v
}
func (b *v2Batch) NumHists(i int) int { return b.series[i].h1 - b.series[i].h0 }
func (b *v2Batch) Hist(i, j int) (int64, *series.Histogram) {
	h := b.hists[b.series[i].h0+j]
	return h.T, h.H
}

// decodeV2 decodes a Request. body must not be reused: the label strings
// share its memory.
func decodeV2(body []byte, b *v2Batch) error {
	str := unsafe.String(unsafe.SliceData(body), len(body))
	symbols, ts := b.symbols[:0], b.spans[:0]
	defer func() { b.symbols, b.spans = symbols, ts }()
	for pos := 0; pos < len(body); {
		num, typ, n := protowire.ConsumeTag(body[pos:])
		if n < 0 {
			return &wireError{msg: "malformed field tag", at: pos}
		}
		pos += n
		if typ == protowire.BytesType && (num == 4 || num == 5) {
			v, n := protowire.ConsumeBytes(body[pos:])
			if n < 0 {
				return &wireError{msg: fmt.Sprintf("truncated field %d", num), at: pos}
			}
			lo := pos + n - len(v)
			if num == 4 {
				symbols = append(symbols, str[lo:lo+len(v)])
			} else {
				ts = append(ts, [2]int{lo, lo + len(v)})
			}
			pos += n
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, body[pos:])
		if n < 0 {
			return &wireError{msg: fmt.Sprintf("malformed field %d", num), at: pos}
		}
		pos += n
	}
	if len(symbols) > 0 && symbols[0] != "" {
		return &wireError{msg: fmt.Sprintf("symbols[0] is %q: the specification makes it the empty string", symbols[0])}
	}
	for i, r := range ts {
		if err := b.decodeSeries(body[r[0]:r[1]], symbols, i); err != nil {
			return err
		}
	}
	return nil
}

func (b *v2Batch) decodeSeries(body []byte, symbols []string, idx int) error {
	sym := func(ref uint64, what string) (string, error) {
		if ref >= uint64(len(symbols)) {
			return "", fmt.Errorf("%s reference %d is outside the %d symbols", what, ref, len(symbols))
		}
		return symbols[ref], nil
	}
	refs := b.refs[:0]
	defer func() { b.refs = refs[:0] }()
	s := v2Series{l0: len(b.labels), s0: len(b.samples), h0: len(b.hists)}
	ex0 := len(b.exemplars)
	var md series.Metadata
	hasMD := false
	for pos := 0; pos < len(body); {
		num, typ, n := protowire.ConsumeTag(body[pos:])
		if n < 0 {
			return fmt.Errorf("%w: series %d: malformed field tag", errBadBody, idx)
		}
		pos += n
		switch {
		case num == 1 && (typ == protowire.BytesType || typ == protowire.VarintType):
			var n int
			var err error
			if refs, n, err = consumeRefs(refs, typ, body[pos:]); err != nil {
				return fmt.Errorf("%w: series %d: %v", errBadBody, idx, err)
			}
			pos += n
			continue
		case num == 2 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(body[pos:])
			if n < 0 {
				return fmt.Errorf("%w: series %d: truncated sample", errBadBody, idx)
			}
			p, err := decodeV2Sample(v)
			if err != nil {
				return fmt.Errorf("%w: series %d: %v", errBadBody, idx, err)
			}
			b.samples = append(b.samples, p)
			pos += n
			continue
		case num == 5 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(body[pos:])
			if n < 0 {
				return fmt.Errorf("%w: series %d: truncated metadata", errBadBody, idx)
			}
			m, err := decodeV2Metadata(v, sym)
			if err != nil {
				return fmt.Errorf("%w: series %d: %v", errBadBody, idx, err)
			}
			md, hasMD = m, true
			pos += n
			continue
		case num == 3 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(body[pos:])
			if n < 0 {
				return fmt.Errorf("%w: series %d: truncated histogram", errBadBody, idx)
			}
			hs, err := decodeV2Histogram(v)
			if err != nil {
				return fmt.Errorf("%w: series %d: histogram %d: %v", errBadBody, idx, len(b.hists)-s.h0, err)
			}
			b.hists = append(b.hists, hs)
			pos += n
			continue
		case num == 4 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(body[pos:])
			if n < 0 {
				return fmt.Errorf("%w: series %d: truncated exemplar", errBadBody, idx)
			}
			if err := b.decodeExemplar(v, sym); err != nil {
				return fmt.Errorf("%w: series %d: exemplar: %v", errBadBody, idx, err)
			}
			pos += n
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, body[pos:])
		if n < 0 {
			return fmt.Errorf("%w: series %d: malformed field %d", errBadBody, idx, num)
		}
		pos += n
	}
	var err error
	if b.labels, err = refLabels(b.labels, refs, sym); err != nil {
		return fmt.Errorf("%w: series %d: %v", errBadBody, idx, err)
	}
	s.l1, s.s1, s.h1 = len(b.labels), len(b.samples), len(b.hists)
	ls := b.labels[s.l0:s.l1]
	if s.h1 > s.h0 && s.s1 > s.s0 {
		return fmt.Errorf("%w: series %d %s: both float samples and histograms (the specification asks for one series of each)", errBadBody, idx, series.Labels(ls).String())
	}
	for i := ex0; i < len(b.exemplars); i++ {
		b.exemplars[i].series = len(b.series)
	}
	b.series = append(b.series, s)
	if hasMD {
		if name := series.Labels(ls).Get(series.MetricName); name != "" && (md.Type != "unknown" || md.Help != "" || md.Unit != "") {
			b.meta = append(b.meta, wireMetadata{metric: name, md: md})
		}
	}
	return nil
}

// decodeV2Histogram reads a Histogram message (fields: count_int 1 or
// count_float 2, sum 3, schema 4, zero_threshold 5, zero_count_int 6 or
// zero_count_float 7, negative spans, deltas, counts 8-10, positive 11-13,
// reset_hint 14, timestamp 15, custom_values 16), as the generated
// decoder would: the last of a oneof wins, repeated fields packed or not.
func decodeV2Histogram(v []byte) (series.HistSample, error) {
	h := &series.Histogram{}
	var t int64
	var countKind, zeroKind int // 0 none, 1 integer, 2 float
	var countInt, zeroInt uint64
	var countF, zeroF float64
	var posDeltas, negDeltas []int64
	var posCounts, negCounts []float64
	var hint uint64
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return series.HistSample{}, fmt.Errorf("malformed field tag")
		}
		v = v[n:]
		switch {
		case typ == protowire.VarintType && (num == 1 || num == 4 || num == 6 || num == 14 || num == 15 || num == 9 || num == 12):
			x, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return series.HistSample{}, fmt.Errorf("truncated field %d", num)
			}
			v = v[n:]
			switch num {
			case 1:
				countKind, countInt = 1, x
			case 4:
				h.Schema = int32(protowire.DecodeZigZag(x & math.MaxUint32))
			case 6:
				zeroKind, zeroInt = 1, x
			case 14:
				hint = x
			case 15:
				t = int64(x)
			case 9:
				negDeltas = append(negDeltas, protowire.DecodeZigZag(x))
			case 12:
				posDeltas = append(posDeltas, protowire.DecodeZigZag(x))
			}
			continue
		case typ == protowire.Fixed64Type && (num == 2 || num == 3 || num == 5 || num == 7 || num == 10 || num == 13 || num == 16):
			x, n := protowire.ConsumeFixed64(v)
			if n < 0 {
				return series.HistSample{}, fmt.Errorf("truncated field %d", num)
			}
			v = v[n:]
			f := math.Float64frombits(x)
			switch num {
			case 2:
				countKind, countF = 2, f
			case 3:
				h.Sum = f
			case 5:
				h.ZeroThreshold = f
			case 7:
				zeroKind, zeroF = 2, f
			case 10:
				negCounts = append(negCounts, f)
			case 13:
				posCounts = append(posCounts, f)
			case 16:
				h.CustomValues = append(h.CustomValues, f)
			}
			continue
		case typ == protowire.BytesType && (num == 8 || num == 9 || num == 10 || num == 11 || num == 12 || num == 13 || num == 16):
			b, n := protowire.ConsumeBytes(v)
			if n < 0 {
				return series.HistSample{}, fmt.Errorf("truncated field %d", num)
			}
			v = v[n:]
			var err error
			switch num {
			case 8, 11:
				var sp series.Span
				if sp, err = decodeV2Span(b); num == 8 {
					h.NegativeSpans = append(h.NegativeSpans, sp)
				} else {
					h.PositiveSpans = append(h.PositiveSpans, sp)
				}
			case 9:
				negDeltas, err = appendPackedZigZag(negDeltas, b)
			case 12:
				posDeltas, err = appendPackedZigZag(posDeltas, b)
			case 10:
				negCounts, err = appendPackedDoubles(negCounts, b)
			case 13:
				posCounts, err = appendPackedDoubles(posCounts, b)
			case 16:
				h.CustomValues, err = appendPackedDoubles(h.CustomValues, b)
			}
			if err != nil {
				return series.HistSample{}, fmt.Errorf("field %d: %v", num, err)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, v)
		if n < 0 {
			return series.HistSample{}, fmt.Errorf("malformed field %d", num)
		}
		v = v[n:]
	}
	if rh := int32(hint); rh < 0 || rh > 3 { // an enum is an int32, as the generated decoder reads it
		return series.HistSample{}, fmt.Errorf("reset_hint %d is not one of 0..3", rh)
	}
	h.CounterReset = uint8(int32(hint))
	if zeroKind != 0 && countKind != 0 && zeroKind != countKind {
		return series.HistSample{}, fmt.Errorf("count and zero_count are not both integers or both floats")
	}
	h.Float = countKind == 2
	if h.Float {
		h.Count, h.ZeroCount = countF, zeroF
		if zeroKind == 1 {
			h.ZeroCount = float64(zeroInt)
		}
		if len(posDeltas) > 0 || len(negDeltas) > 0 {
			return series.HistSample{}, fmt.Errorf("float histogram with integer bucket deltas")
		}
		h.PositiveBuckets, h.NegativeBuckets = posCounts, negCounts
	} else {
		h.Count, h.ZeroCount = float64(countInt), float64(zeroInt)
		if zeroKind == 2 {
			h.ZeroCount = zeroF
		}
		if len(posCounts) > 0 || len(negCounts) > 0 {
			return series.HistSample{}, fmt.Errorf("integer histogram with float bucket counts")
		}
		var err error
		if h.PositiveBuckets, err = absoluteCounts(posDeltas, "positive"); err != nil {
			return series.HistSample{}, err
		}
		if h.NegativeBuckets, err = absoluteCounts(negDeltas, "negative"); err != nil {
			return series.HistSample{}, err
		}
	}
	return series.HistSample{T: t, H: h}, nil
}

// decodeV2Span reads a BucketSpan (offset 1, sint32; length 2).
func decodeV2Span(b []byte) (series.Span, error) {
	var sp series.Span
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return sp, fmt.Errorf("malformed span")
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == 1 || num == 2) {
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return sp, fmt.Errorf("truncated span")
			}
			b = b[n:]
			if num == 1 {
				sp.Offset = int32(protowire.DecodeZigZag(x & math.MaxUint32))
			} else {
				sp.Length = uint32(x)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return sp, fmt.Errorf("malformed span field %d", num)
		}
		b = b[n:]
	}
	return sp, nil
}

func appendPackedZigZag(dst []int64, b []byte) ([]int64, error) {
	n := 0 // the varints: bytes without the continuation bit
	for _, c := range b {
		if c < 0x80 {
			n++
		}
	}
	dst = slices.Grow(dst, n)
	for len(b) > 0 {
		x, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return dst, fmt.Errorf("truncated packed varint")
		}
		dst = append(dst, protowire.DecodeZigZag(x))
		b = b[n:]
	}
	return dst, nil
}

func appendPackedDoubles(dst []float64, b []byte) ([]float64, error) {
	if len(b)%8 != 0 {
		return dst, fmt.Errorf("packed doubles of %d bytes", len(b))
	}
	dst = slices.Grow(dst, len(b)/8)
	for ; len(b) > 0; b = b[8:] {
		dst = append(dst, math.Float64frombits(binary.LittleEndian.Uint64(b)))
	}
	return dst, nil
}

// absoluteCounts turns integer buckets' deltas (each from the bucket
// before) into counts; a count that goes negative is refused here, where
// the bucket is known.
func absoluteCounts(deltas []int64, side string) ([]float64, error) {
	if len(deltas) == 0 {
		return nil, nil
	}
	out := make([]float64, len(deltas))
	c := int64(0)
	for i, d := range deltas {
		c += d
		if c < 0 {
			return nil, fmt.Errorf("%s bucket %d: the deltas make a count of %d", side, i, c)
		}
		out[i] = float64(c)
	}
	return out, nil
}

// decodeExemplar reads an Exemplar (labels_refs 1, value 2, timestamp 3).
func (b *v2Batch) decodeExemplar(v []byte, sym func(uint64, string) (string, error)) error {
	e := flatExemplar{l0: len(b.exLabels)}
	var refs []uint64
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return fmt.Errorf("malformed field tag")
		}
		v = v[n:]
		switch {
		case num == 1 && (typ == protowire.BytesType || typ == protowire.VarintType):
			var n int
			var err error
			if refs, n, err = consumeRefs(refs, typ, v); err != nil {
				return err
			}
			v = v[n:]
			continue
		case num == 2 && typ == protowire.Fixed64Type:
			x, n := protowire.ConsumeFixed64(v)
			if n < 0 {
				return fmt.Errorf("truncated value")
			}
			e.v, v = math.Float64frombits(x), v[n:]
			continue
		case num == 3 && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return fmt.Errorf("truncated timestamp")
			}
			e.t, v = int64(x), v[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, v)
		if n < 0 {
			return fmt.Errorf("malformed field %d", num)
		}
		v = v[n:]
	}
	var err error
	if b.exLabels, err = refLabels(b.exLabels, refs, sym); err != nil {
		return err
	}
	e.l1 = len(b.exLabels)
	b.exemplars = append(b.exemplars, e)
	return nil
}

// consumeRefs reads a labels_refs field's value at v (packed, or one
// unpacked reference) onto refs, and how many bytes it took.
func consumeRefs(refs []uint64, typ protowire.Type, v []byte) ([]uint64, int, error) {
	if typ == protowire.VarintType {
		r, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return refs, 0, fmt.Errorf("malformed label reference")
		}
		return append(refs, r), n, nil
	}
	p, n := protowire.ConsumeBytes(v)
	if n < 0 {
		return refs, 0, fmt.Errorf("truncated label references")
	}
	for len(p) > 0 {
		r, k := protowire.ConsumeVarint(p)
		if k < 0 {
			return refs, 0, fmt.Errorf("malformed label reference")
		}
		refs, p = append(refs, r), p[k:]
	}
	return refs, n, nil
}

// refLabels appends the labels that name/value reference pairs say.
func refLabels(dst []series.Label, refs []uint64, sym func(uint64, string) (string, error)) ([]series.Label, error) {
	if len(refs)%2 != 0 {
		return dst, fmt.Errorf("%d label references, not name and value pairs", len(refs))
	}
	for i := 0; i < len(refs); i += 2 {
		name, err := sym(refs[i], "label name")
		if err != nil {
			return dst, err
		}
		value, err := sym(refs[i+1], "label value")
		if err != nil {
			return dst, err
		}
		dst = append(dst, series.Label{Name: name, Value: value})
	}
	return dst, nil
}

func decodeV2Sample(v []byte) (flatSample, error) {
	var p flatSample
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return p, fmt.Errorf("malformed sample")
		}
		v = v[n:]
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			x, n := protowire.ConsumeFixed64(v)
			if n < 0 {
				return p, fmt.Errorf("truncated sample value")
			}
			p.v, v = math.Float64frombits(x), v[n:]
			continue
		case num == 2 && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return p, fmt.Errorf("truncated sample timestamp")
			}
			p.t, v = int64(x), v[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, v)
		if n < 0 {
			return p, fmt.Errorf("malformed sample field %d", num)
		}
		v = v[n:]
	}
	return p, nil
}

func decodeV2Metadata(v []byte, sym func(uint64, string) (string, error)) (series.Metadata, error) {
	md := series.Metadata{Type: "unknown"}
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 || typ != protowire.VarintType {
			if n >= 0 {
				if k := protowire.ConsumeFieldValue(num, typ, v[n:]); k >= 0 {
					v = v[n+k:]
					continue
				}
			}
			return md, fmt.Errorf("malformed metadata")
		}
		x, k := protowire.ConsumeVarint(v[n:])
		if k < 0 {
			return md, fmt.Errorf("malformed metadata field %d", num)
		}
		v = v[n+k:]
		var err error
		switch num {
		case 1:
			if x >= uint64(len(metricTypes)) {
				return md, fmt.Errorf("unknown metric type %d", x)
			}
			md.Type = metricTypes[x]
		case 3:
			md.Help, err = sym(x, "help")
		case 4:
			md.Unit, err = sym(x, "unit")
		}
		if err != nil {
			return md, err
		}
	}
	return md, nil
}

// writtenHeaders are the 2.0 answer's counts of what was stored.
func writtenHeaders(w http.ResponseWriter, samples, histograms, exemplars int) {
	w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", strconv.Itoa(samples))
	w.Header().Set("X-Prometheus-Remote-Write-Histograms-Written", strconv.Itoa(histograms))
	w.Header().Set("X-Prometheus-Remote-Write-Exemplars-Written", strconv.Itoa(exemplars))
}
