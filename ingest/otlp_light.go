package ingest

import (
	"encoding/hex"
	"errors"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
)

// The OTLP converter works on this light form of an export request: flat,
// pooled arrays indexed by spans, strings shared with the request body.
// decodeOTLP fills it from the wire without the generated decoder (which
// allocated a message per attribute, value and point: half the OTLP
// server's CPU); fromProto fills it from generated messages, for Export
// called with one and for the rare requests decodeOTLP leaves to the
// generated decoder.

type span struct{ lo, hi int }

func (s span) len() int { return s.hi - s.lo }

type anyKind uint8

const (
	anyNone anyKind = iota
	anyString
	anyBool
	anyInt
	anyDouble
	anyBytes
	anyComplex // arrays and key-value lists: rare, kept as a message
)

type oAny struct {
	kind    anyKind
	s       string
	i       int64
	f       float64
	b       []byte
	complex *commonpb.AnyValue
}

type oKV struct {
	key string
	val oAny
}

type metricKind uint8

const (
	kindNone metricKind = iota
	kindGauge
	kindSum
	kindHistogram
	kindExpHistogram
	kindSummary
)

type oResource struct{ attrs, scopes span }

type oScope struct {
	name, version string
	metrics       span
}

type oMetric struct {
	name, unit  string
	help        string // the metric's description
	kind        metricKind
	temporality metricspb.AggregationTemporality
	monotonic   bool
	points      span
}

type oQuantile struct{ q, v float64 }

type oPoint struct {
	attrs  span
	time   uint64
	flags  uint32
	value  float64 // number points: as_double, or as_int converted
	count  uint64
	sum    float64
	hasSum bool
	bounds span // floats
	counts span // uints; an exponential histogram's positive buckets
	// Exponential histograms: scale, zero bucket, the first bucket's
	// index of each side, and the negative buckets (uints).
	scale          int32
	zeroCount      uint64
	zeroThreshold  float64
	posOff, negOff int32
	neg            span
	quants         span
	ex             span // exemplars
}

// oExemplar is a data point's exemplar: its time (ns), value, and the
// trace and span it points at (hex). Its filtered attributes are not
// kept.
type oExemplar struct {
	time          uint64
	value         float64
	trace, spanID string
}

type oRequest struct {
	resources []oResource
	scopes    []oScope
	metrics   []oMetric
	points    []oPoint
	kvs       []oKV
	floats    []float64
	uints     []uint64
	quants    []oQuantile
	exemplars []oExemplar
}

func (o *oRequest) reset() {
	clear(o.scopes)
	clear(o.metrics)
	clear(o.kvs)
	o.resources, o.scopes, o.metrics, o.points = o.resources[:0], o.scopes[:0], o.metrics[:0], o.points[:0]
	o.kvs, o.floats, o.uints, o.quants = o.kvs[:0], o.floats[:0], o.uints[:0], o.quants[:0]
	clear(o.exemplars)
	o.exemplars = o.exemplars[:0]
}

// errFallback: the request uses a protobuf feature decodeOTLP leaves to
// the generated decoder (a singular message field given twice, which
// protobuf merges).
var errFallback = errors.New("left to the generated decoder")

// fromProto fills o from a generated request.
func fromProto(req *colmetricspb.ExportMetricsServiceRequest, o *oRequest) {
	addKVs := func(kvs []*commonpb.KeyValue) span {
		lo := len(o.kvs)
		for _, kv := range kvs {
			o.kvs = append(o.kvs, oKV{key: kv.GetKey(), val: anyFromProto(kv.GetValue())})
		}
		return span{lo, len(o.kvs)}
	}
	for _, rm := range req.GetResourceMetrics() {
		r := oResource{attrs: addKVs(rm.GetResource().GetAttributes())}
		r.scopes.lo = len(o.scopes)
		// Scopes are appended after their metrics, so collect them first.
		var scopes []oScope
		for _, sm := range rm.GetScopeMetrics() {
			s := oScope{name: sm.GetScope().GetName(), version: sm.GetScope().GetVersion()}
			s.metrics.lo = len(o.metrics)
			var ms []oMetric
			for _, m := range sm.GetMetrics() {
				ms = append(ms, metricFromProto(m, o, addKVs))
			}
			o.metrics = append(o.metrics, ms...)
			s.metrics.hi = len(o.metrics)
			scopes = append(scopes, s)
		}
		o.scopes = append(o.scopes, scopes...)
		r.scopes.hi = len(o.scopes)
		o.resources = append(o.resources, r)
	}
}

func metricFromProto(m *metricspb.Metric, o *oRequest, addKVs func([]*commonpb.KeyValue) span) oMetric {
	om := oMetric{name: m.GetName(), unit: m.GetUnit(), help: m.GetDescription()}
	om.points.lo = len(o.points)
	number := func(ps []*metricspb.NumberDataPoint) {
		for _, p := range ps {
			op := oPoint{attrs: addKVs(p.GetAttributes()), time: p.GetTimeUnixNano(), flags: p.GetFlags()}
			switch v := p.GetValue().(type) {
			case *metricspb.NumberDataPoint_AsDouble:
				op.value = v.AsDouble
			case *metricspb.NumberDataPoint_AsInt:
				op.value = float64(v.AsInt)
			}
			op.ex = exemplarsFromProto(o, p.GetExemplars())
			o.points = append(o.points, op)
		}
	}
	switch d := m.GetData().(type) {
	case *metricspb.Metric_Gauge:
		om.kind = kindGauge
		number(d.Gauge.GetDataPoints())
	case *metricspb.Metric_Sum:
		om.kind, om.temporality, om.monotonic = kindSum, d.Sum.GetAggregationTemporality(), d.Sum.GetIsMonotonic()
		number(d.Sum.GetDataPoints())
	case *metricspb.Metric_Histogram:
		om.kind, om.temporality = kindHistogram, d.Histogram.GetAggregationTemporality()
		for _, p := range d.Histogram.GetDataPoints() {
			op := oPoint{attrs: addKVs(p.GetAttributes()), time: p.GetTimeUnixNano(), flags: p.GetFlags(), count: p.GetCount(), sum: p.GetSum(), hasSum: p.Sum != nil}
			op.bounds.lo = len(o.floats)
			o.floats = append(o.floats, p.GetExplicitBounds()...)
			op.bounds.hi = len(o.floats)
			op.counts.lo = len(o.uints)
			o.uints = append(o.uints, p.GetBucketCounts()...)
			op.counts.hi = len(o.uints)
			op.ex = exemplarsFromProto(o, p.GetExemplars())
			o.points = append(o.points, op)
		}
	case *metricspb.Metric_ExponentialHistogram:
		om.kind, om.temporality = kindExpHistogram, d.ExponentialHistogram.GetAggregationTemporality()
		for _, p := range d.ExponentialHistogram.GetDataPoints() {
			op := oPoint{attrs: addKVs(p.GetAttributes()), time: p.GetTimeUnixNano(), flags: p.GetFlags(), count: p.GetCount(), sum: p.GetSum(), hasSum: p.Sum != nil,
				scale: p.GetScale(), zeroCount: p.GetZeroCount(), zeroThreshold: p.GetZeroThreshold(),
				posOff: p.GetPositive().GetOffset(), negOff: p.GetNegative().GetOffset()}
			op.counts.lo = len(o.uints)
			o.uints = append(o.uints, p.GetPositive().GetBucketCounts()...)
			op.counts.hi = len(o.uints)
			op.neg.lo = len(o.uints)
			o.uints = append(o.uints, p.GetNegative().GetBucketCounts()...)
			op.neg.hi = len(o.uints)
			op.ex = exemplarsFromProto(o, p.GetExemplars())
			o.points = append(o.points, op)
		}
	case *metricspb.Metric_Summary:
		om.kind = kindSummary
		for _, p := range d.Summary.GetDataPoints() {
			op := oPoint{attrs: addKVs(p.GetAttributes()), time: p.GetTimeUnixNano(), flags: p.GetFlags(), count: p.GetCount(), sum: p.GetSum(), hasSum: true}
			op.quants.lo = len(o.quants)
			for _, q := range p.GetQuantileValues() {
				o.quants = append(o.quants, oQuantile{q.GetQuantile(), q.GetValue()})
			}
			op.quants.hi = len(o.quants)
			o.points = append(o.points, op)
		}
	}
	om.points.hi = len(o.points)
	return om
}

func exemplarsFromProto(o *oRequest, es []*metricspb.Exemplar) span {
	sp := span{lo: len(o.exemplars)}
	for _, e := range es {
		x := oExemplar{time: e.GetTimeUnixNano(), trace: hex.EncodeToString(e.GetTraceId()), spanID: hex.EncodeToString(e.GetSpanId())}
		switch v := e.GetValue().(type) {
		case *metricspb.Exemplar_AsDouble:
			x.value = v.AsDouble
		case *metricspb.Exemplar_AsInt:
			x.value = float64(v.AsInt)
		}
		o.exemplars = append(o.exemplars, x)
	}
	sp.hi = len(o.exemplars)
	return sp
}

func anyFromProto(v *commonpb.AnyValue) oAny {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return oAny{kind: anyString, s: x.StringValue}
	case *commonpb.AnyValue_BoolValue:
		return oAny{kind: anyBool, i: boolInt(x.BoolValue)}
	case *commonpb.AnyValue_IntValue:
		return oAny{kind: anyInt, i: x.IntValue}
	case *commonpb.AnyValue_DoubleValue:
		return oAny{kind: anyDouble, f: x.DoubleValue}
	case *commonpb.AnyValue_BytesValue:
		return oAny{kind: anyBytes, b: x.BytesValue}
	case *commonpb.AnyValue_ArrayValue, *commonpb.AnyValue_KvlistValue:
		return oAny{kind: anyComplex, complex: v}
	}
	return oAny{}
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
