package ingest

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
)

// otlpDecoder reads an ExportMetricsServiceRequest from the wire into an
// oRequest. Field numbers are those of opentelemetry-proto's
// metrics/v1/metrics.proto and common/v1/common.proto. As the generated
// decoder does, it skips unknown fields and known fields of another wire
// type, lets the last of a repeated scalar win, and appends repeated
// fields; a singular message given twice (which protobuf merges) returns
// errFallback.
type otlpDecoder struct {
	b []byte
	s string
	o *oRequest
}

func decodeOTLP(body []byte, o *oRequest) error {
	d := otlpDecoder{b: body, s: unsafe.String(unsafe.SliceData(body), len(body)), o: o}
	return d.each(0, len(body), func(num protowire.Number, typ protowire.Type, lo, hi int) error {
		if num == 1 && typ == protowire.BytesType {
			return d.resourceMetrics(lo, hi)
		}
		return nil
	})
}

// each calls f for every field in [pos, end); for a length-delimited
// field lo, hi bound its contents, for a varint or fixed field lo is where
// its value starts. Fields f does not read are skipped by each.
func (d *otlpDecoder) each(pos, end int, f func(num protowire.Number, typ protowire.Type, lo, hi int) error) error {
	for pos < end {
		num, typ, lo, hi, err := field(d.b, pos, end)
		if err != nil {
			return err
		}
		if typ == protowire.BytesType {
			pos = hi
		} else if pos, err = skip(d.b, num, typ, lo, end); err != nil {
			return err
		}
		if err := f(num, typ, lo, hi); err != nil {
			return err
		}
	}
	return nil
}

func (d *otlpDecoder) fixed64(typ protowire.Type, lo int) (uint64, bool) {
	if typ != protowire.Fixed64Type {
		return 0, false
	}
	return binary.LittleEndian.Uint64(d.b[lo:]), true // each has checked the length
}

func (d *otlpDecoder) varint(typ protowire.Type, lo int) (uint64, bool) {
	if typ != protowire.VarintType {
		return 0, false
	}
	v, _ := protowire.ConsumeVarint(d.b[lo:])
	return v, true
}

func (d *otlpDecoder) resourceMetrics(lo, hi int) error {
	r := oResource{}
	r.scopes.lo = len(d.o.scopes)
	seen := false
	err := d.each(lo, hi, func(num protowire.Number, typ protowire.Type, lo, hi int) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1: // resource
			if seen {
				return errFallback
			}
			seen = true
			r.attrs.lo = len(d.o.kvs)
			err := d.each(lo, hi, func(num protowire.Number, typ protowire.Type, lo, hi int) error {
				if num == 1 && typ == protowire.BytesType {
					return d.keyValue(lo, hi)
				}
				return nil
			})
			r.attrs.hi = len(d.o.kvs)
			return err
		case 2: // scope_metrics
			return d.scopeMetrics(lo, hi)
		}
		return nil
	})
	r.scopes.hi = len(d.o.scopes)
	d.o.resources = append(d.o.resources, r)
	return err
}

func (d *otlpDecoder) scopeMetrics(lo, hi int) error {
	s := oScope{}
	s.metrics.lo = len(d.o.metrics)
	seen := false
	err := d.each(lo, hi, func(num protowire.Number, typ protowire.Type, lo, hi int) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1: // scope
			if seen {
				return errFallback
			}
			seen = true
			return d.each(lo, hi, func(num protowire.Number, typ protowire.Type, lo, hi int) error {
				if typ == protowire.BytesType && num == 1 {
					s.name = d.s[lo:hi]
				} else if typ == protowire.BytesType && num == 2 {
					s.version = d.s[lo:hi]
				}
				return nil
			})
		case 2: // metrics
			return d.metric(lo, hi)
		}
		return nil
	})
	s.metrics.hi = len(d.o.metrics)
	d.o.scopes = append(d.o.scopes, s)
	return err
}

func (d *otlpDecoder) metric(lo, hi int) error {
	m := oMetric{}
	m.points.lo = len(d.o.points)
	err := d.each(lo, hi, func(num protowire.Number, typ protowire.Type, lo, hi int) error {
		if typ != protowire.BytesType {
			return nil
		}
		var kind metricKind
		switch num {
		case 1:
			m.name = d.s[lo:hi]
			return nil
		case 2:
			m.help = d.s[lo:hi]
			return nil
		case 3:
			m.unit = d.s[lo:hi]
			return nil
		case 5:
			kind = kindGauge
		case 7:
			kind = kindSum
		case 9:
			kind = kindHistogram
		case 10:
			kind = kindExpHistogram
		case 11:
			kind = kindSummary
		default:
			return nil
		}
		if m.kind != kindNone {
			return errFallback // a second data field: protobuf merges or replaces
		}
		m.kind = kind
		return d.each(lo, hi, func(num protowire.Number, typ protowire.Type, lo, hi int) error {
			switch {
			case num == 1 && typ == protowire.BytesType:
				return d.point(kind, lo, hi)
			case num == 2 && kind != kindGauge && kind != kindSummary:
				if v, ok := d.varint(typ, lo); ok {
					m.temporality = metricspb.AggregationTemporality(int32(v))
				}
			case num == 3 && kind == kindSum:
				if v, ok := d.varint(typ, lo); ok {
					m.monotonic = v != 0
				}
			}
			return nil
		})
	})
	m.points.hi = len(d.o.points)
	d.o.metrics = append(d.o.metrics, m)
	return err
}

// point reads one data point of a metric of kind k. Field numbers differ
// by kind: attributes are 7 in number and summary points, 9 in histogram
// points, 1 in exponential histogram points; flags 8, 10, 8 and 10.
func (d *otlpDecoder) point(k metricKind, lo, hi int) error {
	p := oPoint{}
	attrField, flagsField := protowire.Number(7), protowire.Number(8)
	switch k {
	case kindHistogram:
		attrField, flagsField = 9, 10
	case kindExpHistogram:
		attrField, flagsField = 1, 10
	}
	p.neg.lo, p.neg.hi = len(d.o.uints), len(d.o.uints)
	seenPos, seenNeg := false, false
	p.attrs.lo = len(d.o.kvs)
	p.bounds.lo, p.bounds.hi = len(d.o.floats), len(d.o.floats)
	p.counts.lo, p.counts.hi = len(d.o.uints), len(d.o.uints)
	p.quants.lo, p.quants.hi = len(d.o.quants), len(d.o.quants)
	p.ex.lo, p.ex.hi = len(d.o.exemplars), len(d.o.exemplars)
	exField := protowire.Number(5)
	switch k {
	case kindHistogram:
		exField = 8
	case kindExpHistogram:
		exField = 11
	}
	if k == kindSummary {
		p.hasSum = true // a plain double in summaries
	}
	err := d.each(lo, hi, func(num protowire.Number, typ protowire.Type, lo, hi int) error {
		switch {
		case num == attrField && typ == protowire.BytesType:
			return d.keyValue(lo, hi)
		case num == flagsField:
			if v, ok := d.varint(typ, lo); ok {
				p.flags = uint32(v)
			}
		case num == 3:
			if v, ok := d.fixed64(typ, lo); ok {
				p.time = v
			}
		case (k == kindGauge || k == kindSum || k == kindHistogram || k == kindExpHistogram) && num == exField && typ == protowire.BytesType:
			var x oExemplar
			err := d.each(lo, hi, func(num protowire.Number, typ protowire.Type, lo, hi int) error {
				switch {
				case num == 4 && typ == protowire.BytesType:
					x.spanID = hex.EncodeToString(d.b[lo:hi])
				case num == 5 && typ == protowire.BytesType:
					x.trace = hex.EncodeToString(d.b[lo:hi])
				case num == 2 || num == 3 || num == 6:
					if v, ok := d.fixed64(typ, lo); ok {
						switch num {
						case 2:
							x.time = v
						case 3:
							x.value = math.Float64frombits(v)
						case 6:
							x.value = float64(int64(v))
						}
					}
				}
				return nil
			})
			d.o.exemplars = append(d.o.exemplars, x)
			p.ex.hi = len(d.o.exemplars)
			return err
		case (k == kindGauge || k == kindSum) && (num == 4 || num == 6):
			if v, ok := d.fixed64(typ, lo); ok {
				if num == 4 {
					p.value = math.Float64frombits(v)
				} else {
					p.value = float64(int64(v))
				}
			}
		case (k == kindHistogram || k == kindSummary || k == kindExpHistogram) && num == 4:
			if v, ok := d.fixed64(typ, lo); ok {
				p.count = v
			}
		case (k == kindHistogram || k == kindSummary || k == kindExpHistogram) && num == 5:
			if v, ok := d.fixed64(typ, lo); ok {
				p.sum, p.hasSum = math.Float64frombits(v), true
			}
		case k == kindExpHistogram && num == 6:
			if v, ok := d.varint(typ, lo); ok {
				p.scale = int32(protowire.DecodeZigZag(v & math.MaxUint32))
			}
		case k == kindExpHistogram && num == 7:
			if v, ok := d.fixed64(typ, lo); ok {
				p.zeroCount = v
			}
		case k == kindExpHistogram && num == 14:
			if v, ok := d.fixed64(typ, lo); ok {
				p.zeroThreshold = math.Float64frombits(v)
			}
		case k == kindExpHistogram && (num == 8 || num == 9) && typ == protowire.BytesType:
			// Buckets: offset 1 (sint32), bucket_counts 2 (packed or not).
			// A second one merges with the first in protobuf: left to the
			// generated decoder.
			if (num == 8 && seenPos) || (num == 9 && seenNeg) {
				return errFallback
			}
			// The positive counts go in p.counts, the negative in p.neg,
			// each one run of d.o.uints.
			if num == 8 {
				seenPos = true
				p.counts.lo = len(d.o.uints)
			} else {
				seenNeg = true
				p.neg.lo = len(d.o.uints)
			}
			var off int32
			err := d.each(lo, hi, func(num protowire.Number, typ protowire.Type, lo, hi int) error {
				switch {
				case num == 1:
					if v, ok := d.varint(typ, lo); ok {
						off = int32(protowire.DecodeZigZag(v & math.MaxUint32))
					}
				case num == 2 && typ == protowire.VarintType:
					v, _ := protowire.ConsumeVarint(d.b[lo:])
					d.o.uints = append(d.o.uints, v)
				case num == 2 && typ == protowire.BytesType:
					for b := d.b[lo:hi]; len(b) > 0; {
						v, n := protowire.ConsumeVarint(b)
						if n < 0 {
							return &wireError{msg: "malformed packed bucket counts", at: lo}
						}
						d.o.uints = append(d.o.uints, v)
						b = b[n:]
					}
				}
				return nil
			})
			if num == 8 {
				p.posOff, p.counts.hi = off, len(d.o.uints)
			} else {
				p.negOff, p.neg.hi = off, len(d.o.uints)
			}
			return err
		case k == kindHistogram && (num == 6 || num == 7):
			return d.repeatedFixed64(num, typ, lo, hi, func(v uint64) {
				if num == 6 {
					d.o.uints = append(d.o.uints, v)
					p.counts.hi = len(d.o.uints)
				} else {
					d.o.floats = append(d.o.floats, math.Float64frombits(v))
					p.bounds.hi = len(d.o.floats)
				}
			})
		case k == kindSummary && num == 6 && typ == protowire.BytesType:
			var q oQuantile
			err := d.each(lo, hi, func(num protowire.Number, typ protowire.Type, lo, hi int) error {
				if v, ok := d.fixed64(typ, lo); ok && num == 1 {
					q.q = math.Float64frombits(v)
				} else if ok && num == 2 {
					q.v = math.Float64frombits(v)
				}
				return nil
			})
			d.o.quants = append(d.o.quants, q)
			p.quants.hi = len(d.o.quants)
			return err
		}
		return nil
	})
	p.attrs.hi = len(d.o.kvs)
	d.o.points = append(d.o.points, p)
	return err
}

// repeatedFixed64 reads a packed or unpacked repeated fixed64/double.
func (d *otlpDecoder) repeatedFixed64(num protowire.Number, typ protowire.Type, lo, hi int, add func(uint64)) error {
	switch typ {
	case protowire.Fixed64Type:
		add(binary.LittleEndian.Uint64(d.b[lo:]))
	case protowire.BytesType:
		if (hi-lo)%8 != 0 {
			return &wireError{msg: "packed repeated fixed64 of a length not a multiple of 8", at: lo}
		}
		for p := lo; p < hi; p += 8 {
			add(binary.LittleEndian.Uint64(d.b[p:]))
		}
	}
	return nil
}

func (d *otlpDecoder) keyValue(lo, hi int) error {
	kv := oKV{}
	seen := false
	err := d.each(lo, hi, func(num protowire.Number, typ protowire.Type, lo, hi int) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			kv.key = d.s[lo:hi]
		case 2:
			if seen {
				return errFallback
			}
			seen = true
			v, err := d.anyValue(lo, hi)
			kv.val = v
			return err
		}
		return nil
	})
	d.o.kvs = append(d.o.kvs, kv)
	return err
}

func (d *otlpDecoder) anyValue(lo, hi int) (oAny, error) {
	var v oAny
	complex := false
	err := d.each(lo, hi, func(num protowire.Number, typ protowire.Type, flo, fhi int) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			v = oAny{kind: anyString, s: d.s[flo:fhi]}
		case num == 2 && typ == protowire.VarintType:
			x, _ := d.varint(typ, flo)
			v = oAny{kind: anyBool, i: boolInt(x != 0)}
		case num == 3 && typ == protowire.VarintType:
			x, _ := d.varint(typ, flo)
			v = oAny{kind: anyInt, i: int64(x)}
		case num == 4 && typ == protowire.Fixed64Type:
			x, _ := d.fixed64(typ, flo)
			v = oAny{kind: anyDouble, f: math.Float64frombits(x)}
		case (num == 5 || num == 6) && typ == protowire.BytesType:
			complex = true
		case num == 7 && typ == protowire.BytesType:
			v = oAny{kind: anyBytes, b: d.b[flo:fhi:fhi]}
		case num == 8 && typ == protowire.VarintType:
			v = oAny{} // string_value_strindex: profiles only
		}
		return nil
	})
	if err != nil || !complex {
		return v, err
	}
	// Arrays and key-value lists are rare: the generated decoder renders
	// them, with protobuf's own oneof and merge rules.
	var m commonpb.AnyValue
	if err := proto.Unmarshal(d.b[lo:hi], &m); err != nil {
		return oAny{}, &wireError{msg: "attribute value: " + err.Error(), at: lo}
	}
	return anyFromProto(&m), nil
}
