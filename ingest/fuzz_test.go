package ingest_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/golang/snappy"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/headroomdb/headroom/ingest"
	prompb "github.com/headroomdb/headroom/proto/prometheus"
	"github.com/headroomdb/headroom/storage"
)

// FuzzRemoteWrite sends arbitrary bodies (snappy, then protobuf) through
// the remote-write handler onto a real data directory: it must answer
// 204, 400, 413 or 429, never panic. Seed corpus:
// testdata/fuzz/FuzzRemoteWrite; raw protobuf seeds are also tried
// snappy-wrapped so that the fuzzer reaches the decoder behind snappy.
func FuzzRemoteWrite(f *testing.F) {
	good, _ := proto.Marshal(&prompb.WriteRequest{Timeseries: []*prompb.TimeSeries{promSeries("up", now)}})
	f.Add(snappy.Encode(nil, good), false)
	f.Add(good, true)
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f}, false)
	d, err := storage.Open(f.TempDir(), storage.Options{DisableBackground: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	h := ingest.NewRemoteWrite(db{d}, ingest.Options{})
	f.Fuzz(func(t *testing.T, body []byte, wrap bool) {
		if wrap {
			body = snappy.Encode(nil, body)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body)))
		switch rec.Code {
		case http.StatusNoContent, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

// FuzzOTLP decodes arbitrary bytes as an OTLP export request, as gRPC
// does, and converts what decodes onto a real data directory: whatever
// names, units, attributes or bucket layouts it gets, the converter must
// not panic, and must answer with success (maybe partial) or
// ResourceExhausted, never another error. Seed corpus:
// testdata/fuzz/FuzzOTLP.
func FuzzOTLP(f *testing.F) {
	sum := 1.5
	good, _ := proto.Marshal(&colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", "a"), kv("1.odd key", "v")}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{
			{Name: "h.x", Unit: "ms", Data: &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{AggregationTemporality: 2, DataPoints: []*metricspb.HistogramDataPoint{
				{TimeUnixNano: uint64(now) * 1e6, Count: 2, Sum: &sum, ExplicitBounds: []float64{1}, BucketCounts: []uint64{1, 1}, Attributes: []*commonpb.KeyValue{kv("a.b", "1"), kv("a_b", "2")}},
			}}}},
			{Name: "s", Data: &metricspb.Metric_Summary{Summary: &metricspb.Summary{DataPoints: []*metricspb.SummaryDataPoint{{TimeUnixNano: uint64(now) * 1e6, QuantileValues: []*metricspb.SummaryDataPoint_ValueAtQuantile{{Quantile: 0.5}}}}}}},
		}}},
	}}})
	f.Add(good)
	f.Add([]byte{0x0a, 0x02, 0x12, 0x00})
	d, err := storage.Open(f.TempDir(), storage.Options{DisableBackground: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	o := ingest.NewOTLP(db{d}, ingest.Options{Limits: ingest.Limits{SamplesPerRequest: 10_000}})
	f.Fuzz(func(t *testing.T, b []byte) {
		var req colmetricspb.ExportMetricsServiceRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		if _, err := o.Export(context.Background(), &req); err != nil {
			if c := status.Code(err); c != codes.ResourceExhausted && c != codes.Unavailable {
				t.Fatalf("Export: %v", err)
			}
		}
	})
}
