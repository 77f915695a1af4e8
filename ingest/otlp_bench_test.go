package ingest_test

import (
	"context"
	"fmt"
	"net"
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
	base := time.Now().Add(-24 * time.Hour).UnixMilli()
	body := func(i int) []byte {
		sm := &metricspb.ScopeMetrics{}
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
			sm.Metrics = append(sm.Metrics, &metricspb.Metric{Name: fmt.Sprintf("node.metric.%d", m), Data: &metricspb.Metric_Gauge{Gauge: g}})
		}
		raw, _ := proto.Marshal(&colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
			Resource:     &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: str("node")}, {Key: "service.instance.id", Value: str("i-1")}}},
			ScopeMetrics: []*metricspb.ScopeMetrics{sm},
		}}})
		return raw
	}
	bodies := make([][]byte, b.N+1)
	for i := range bodies {
		bodies[i] = body(i)
	}
	send := func(body []byte) {
		var out []byte
		if err := conn.Invoke(context.Background(), "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", body, &out); err != nil {
			b.Fatal(err)
		}
	}
	send(bodies[0])
	b.ReportAllocs()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		send(bodies[i])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*5000), "ns/sample")
}
