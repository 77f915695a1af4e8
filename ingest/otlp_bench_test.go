package ingest_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/headroomdb/headroom/ingest"
	"github.com/headroomdb/headroom/storage"
)

type rawBytesCodec struct{}

func (rawBytesCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawBytesCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawBytesCodec) Name() string                       { return "proto" }

// BenchmarkOTLPScrape: an OTLP export of one point for each of 5,000
// existing series (100 gauges x 50 hosts, three attributes each) over a
// loopback gRPC connection, request bytes prepared in advance, into a real
// data directory (fsync included).
func BenchmarkOTLPScrape(b *testing.B) {
	base := time.Now().Add(-24 * time.Hour).UnixMilli()
	benchOTLP(b, 5000, func(i int) []*metricspb.Metric { return gaugeMetrics(i, base) })
}

// gaugeMetrics is a node's scrape: 100 gauges of 50 hosts at step i.
func gaugeMetrics(i int, base int64) []*metricspb.Metric {
	str := func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	var ms []*metricspb.Metric
	for m := 0; m < 100; m++ {
		g := &metricspb.Gauge{}
		for h := 0; h < 50; h++ {
			g.DataPoints = append(g.DataPoints, &metricspb.NumberDataPoint{
				TimeUnixNano: uint64(base+int64(i)*10_000) * 1e6,
				Value:        &metricspb.NumberDataPoint_AsDouble{AsDouble: float64(m * h % 97)},
				Attributes: []*commonpb.KeyValue{{Key: "env", Value: str("prod")}, {Key: "host", Value: str(fmt.Sprintf("h%d", h))},
					{Key: "region", Value: str("eu-west-1")}},
			})
		}
		ms = append(ms, &metricspb.Metric{Name: fmt.Sprintf("node.metric.%d", m), Data: &metricspb.Metric_Gauge{Gauge: g}})
	}
	return ms
}

// BenchmarkOTLPMixed: BenchmarkOTLPScrape's requests with one metric of
// 10 exponential histograms more, as an SDK's export holds a latency
// histogram beside its gauges: ns/sample is per point.
func BenchmarkOTLPMixed(b *testing.B) {
	str := func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	base := time.Now().Add(-24 * time.Hour).UnixMilli()
	benchOTLP(b, 5010, func(i int) []*metricspb.Metric {
		ms := gaugeMetrics(i, base)
		eh := &metricspb.ExponentialHistogram{AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE}
		for h := 0; h < 10; h++ {
			sum := float64(i)
			eh.DataPoints = append(eh.DataPoints, &metricspb.ExponentialHistogramDataPoint{
				TimeUnixNano: uint64(base+int64(i)*10_000) * 1e6, Scale: 3, Count: uint64(40 * (i + 1)), Sum: &sum,
				Positive:   &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: -40, BucketCounts: slices.Repeat([]uint64{uint64(i + 1)}, 40)},
				Attributes: []*commonpb.KeyValue{{Key: "pod", Value: str(fmt.Sprintf("p%d", h))}},
			})
		}
		return append(ms, &metricspb.Metric{Name: "rpc.latency", Unit: "s", Data: &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: eh}})
	})
}

// BenchmarkOTLPExpHistograms: requests of 500 exponential histogram
// points (50 metrics of 10 series, 40 buckets at scale 3), as an
// OpenTelemetry SDK exports latencies: ns/sample is per histogram.
func BenchmarkOTLPExpHistograms(b *testing.B) {
	base := time.Now().Add(-24 * time.Hour).UnixMilli()
	counts := make([]uint64, 40)
	benchOTLP(b, 500, func(i int) []*metricspb.Metric {
		var ms []*metricspb.Metric
		for m := 0; m < 50; m++ {
			eh := &metricspb.ExponentialHistogram{AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE}
			for h := 0; h < 10; h++ {
				total := uint64(0)
				for k := range counts {
					counts[k] = uint64((i + 1) * (k%7 + h))
					total += counts[k]
				}
				sum := float64(total) * 0.1
				eh.DataPoints = append(eh.DataPoints, &metricspb.ExponentialHistogramDataPoint{
					TimeUnixNano: uint64(base+int64(i)*10_000) * 1e6, Scale: 3, Count: total, Sum: &sum,
					Positive:   &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: -40, BucketCounts: append([]uint64(nil), counts...)},
					Attributes: []*commonpb.KeyValue{{Key: "pod", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: fmt.Sprintf("p%d", h)}}}},
				})
			}
			ms = append(ms, &metricspb.Metric{Name: fmt.Sprintf("rpc.latency.%d", m), Unit: "s", Data: &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: eh}})
		}
		return ms
	})
}

// benchOTLP sends b.N requests of the metrics metrics(i) gives (of
// samples samples each) to a real OTLP server over gRPC.
func benchOTLP(b *testing.B, samples int, metrics func(i int) []*metricspb.Metric) {
	d, err := storage.Open(b.TempDir(), storage.Options{Retention: 30 * 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(ingest.ServerOptions()...)
	ingest.NewOTLP(db{d}, ingest.Options{}).Register(srv)
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawBytesCodec{})))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	str := func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	bodies := make([][]byte, b.N+1)
	for i := range bodies {
		raw, _ := proto.Marshal(&colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
			Resource:     &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: str("node")}, {Key: "service.instance.id", Value: str("i-1")}}},
			ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: metrics(i)}},
		}}})
		bodies[i] = raw
	}
	send := func(body []byte) {
		var out colmetricspb.ExportMetricsServiceResponse
		var raw []byte
		if err := conn.Invoke(context.Background(), "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", body, &raw); err != nil {
			b.Fatal(err)
		}
		if err := proto.Unmarshal(raw, &out); err != nil || out.GetPartialSuccess().GetRejectedDataPoints() != 0 {
			b.Fatalf("export: %v %v", out.GetPartialSuccess(), err)
		}
	}
	send(bodies[0])
	b.ReportAllocs()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		send(bodies[i])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*samples), "ns/sample")
}
