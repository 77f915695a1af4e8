package ingest

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"
)

// dumpO renders an oRequest canonically, following spans, so that two
// decodings can be compared whatever their pools' layout.
func dumpO(o *oRequest) string {
	var b strings.Builder
	kvs := func(s span) {
		for _, kv := range o.kvs[s.lo:s.hi] {
			fmt.Fprintf(&b, " %q=%s", kv.key, labelValue(kv.val))
		}
	}
	for _, r := range o.resources {
		b.WriteString("resource")
		kvs(r.attrs)
		b.WriteString("\n")
		for _, sc := range o.scopes[r.scopes.lo:r.scopes.hi] {
			fmt.Fprintf(&b, " scope %q %q\n", sc.name, sc.version)
			for _, m := range o.metrics[sc.metrics.lo:sc.metrics.hi] {
				fmt.Fprintf(&b, "  metric %q %q %q kind %d temporality %d monotonic %v\n", m.name, m.unit, m.help, m.kind, m.temporality, m.monotonic)
				for _, p := range o.points[m.points.lo:m.points.hi] {
					fmt.Fprintf(&b, "   point t=%d flags=%d v=%x count=%d sum=%x/%v", p.time, p.flags, math.Float64bits(p.value), p.count, math.Float64bits(p.sum), p.hasSum)
					kvs(p.attrs)
					fmt.Fprintf(&b, " bounds=%v counts=%v quants=%v exemplars=%+v", o.floats[p.bounds.lo:p.bounds.hi], o.uints[p.counts.lo:p.counts.hi], o.quants[p.quants.lo:p.quants.hi], o.exemplars[p.ex.lo:p.ex.hi])
					fmt.Fprintf(&b, " scale=%d zero=%d/%x pos@%d neg@%d%v\n", p.scale, p.zeroCount, math.Float64bits(p.zeroThreshold), p.posOff, p.negOff, o.uints[p.neg.lo:p.neg.hi])
				}
			}
		}
	}
	return b.String()
}

// FuzzOTLPWire checks decodeOTLP against the generated decoder: whatever
// the generated decoder accepts, ours reads the same request (or leaves it
// to the generated decoder with errFallback).
func FuzzOTLPWire(f *testing.F) {
	sum := 2.5
	kv := func(k string, v *commonpb.AnyValue) *commonpb.KeyValue { return &commonpb.KeyValue{Key: k, Value: v} }
	str := func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	seed, _ := proto.Marshal(&colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", str("a")), kv("n", &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: -3}}),
			kv("arr", &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: []*commonpb.AnyValue{str("x")}}}})}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{Scope: &commonpb.InstrumentationScope{Name: "s", Version: "1"}, Metrics: []*metricspb.Metric{
			{Name: "g", Unit: "By", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{{TimeUnixNano: 5e15, Value: &metricspb.NumberDataPoint_AsInt{AsInt: -7}, Attributes: []*commonpb.KeyValue{kv("k", str("v"))}}}}}},
			{Name: "c", Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{IsMonotonic: true, AggregationTemporality: 2, DataPoints: []*metricspb.NumberDataPoint{{TimeUnixNano: 1, Flags: 1, Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: 1.5}}}}}},
			{Name: "h", Data: &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{AggregationTemporality: 2, DataPoints: []*metricspb.HistogramDataPoint{{TimeUnixNano: 2, Count: 3, Sum: &sum, ExplicitBounds: []float64{1, 2}, BucketCounts: []uint64{1, 1, 1}}}}}},
			{Name: "s", Data: &metricspb.Metric_Summary{Summary: &metricspb.Summary{DataPoints: []*metricspb.SummaryDataPoint{{TimeUnixNano: 3, Count: 2, Sum: 4, QuantileValues: []*metricspb.SummaryDataPoint_ValueAtQuantile{{Quantile: 0.5, Value: 1}}}}}}},
			{Name: "e", Data: &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: &metricspb.ExponentialHistogram{DataPoints: []*metricspb.ExponentialHistogramDataPoint{{}}}}},
			{Name: "x", Unit: "s", Data: &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: &metricspb.ExponentialHistogram{AggregationTemporality: 2, DataPoints: []*metricspb.ExponentialHistogramDataPoint{{
				TimeUnixNano: 4, Count: 9, Sum: &sum, Scale: -3, ZeroCount: 2, ZeroThreshold: 1e-6, Flags: 1, Attributes: []*commonpb.KeyValue{kv("pod", str("p"))},
				Positive:  &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: -5, BucketCounts: []uint64{1, 0, 3}},
				Negative:  &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: 7, BucketCounts: []uint64{3}},
				Exemplars: []*metricspb.Exemplar{{TimeUnixNano: 4, Value: &metricspb.Exemplar_AsDouble{AsDouble: 0.5}, SpanId: []byte{1, 2, 3, 4, 5, 6, 7, 8}}}}}}}},
		}}},
	}}})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, body []byte) {
		var req colmetricspb.ExportMetricsServiceRequest
		if proto.Unmarshal(body, &req) != nil {
			return
		}
		var want, got oRequest
		fromProto(&req, &want)
		err := decodeOTLP(body, &got)
		if errors.Is(err, errFallback) {
			return
		}
		if err != nil {
			t.Fatalf("the generated decoder accepts the request, ours fails: %v", err)
		}
		if g, w := dumpO(&got), dumpO(&want); g != w {
			t.Fatalf("decoded\n%s\ngenerated decoder\n%s", g, w)
		}
	})
}
