package ingest_test

import (
	"context"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/headroomdb/headroom/ingest"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

func kv(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// dump returns every stored series as "labels value@t" lines, sorted.
func dump(t *testing.T, d *storage.DB) []string {
	t.Helper()
	q, err := d.Querier(0, storage.MaxTime)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set, err := q.Select(series.MustMatcher(series.MatchRegexp, "__name__", ".+"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for set.Next() {
		it := set.At().Iterator()
		for it.Next() {
			_, fv := it.At()
			v := strconv.FormatFloat(fv, 'g', -1, 64)
			if series.IsStaleNaN(fv) {
				v = "stale"
			}
			out = append(out, set.At().Labels.String()+" "+v)
		}
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestOTLPMapping(t *testing.T) {
	conn, d := startConn(t, ingest.Limits{})
	c := colmetricspb.NewMetricsServiceClient(conn)
	tn := uint64(now) * 1e6
	cum := metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	sum := 12.5
	req := &colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			kv("service.name", "api"), kv("service.namespace", "shop"), kv("service.instance.id", "pod-1"), kv("host.name", "h1"),
		}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{
			Scope: &commonpb.InstrumentationScope{Name: "lib", Version: "1.2"},
			Metrics: []*metricspb.Metric{
				{Name: "system.memory.usage", Unit: "By", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{
					{Attributes: []*commonpb.KeyValue{kv("state", "used")}, TimeUnixNano: tn, Value: &metricspb.NumberDataPoint_AsInt{AsInt: 42}},
				}}}},
				{Name: "http.server.requests", Unit: "{request}", Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{IsMonotonic: true, AggregationTemporality: cum, DataPoints: []*metricspb.NumberDataPoint{
					{Attributes: []*commonpb.KeyValue{kv("http.method", "GET"), kv("http_method", "get")}, TimeUnixNano: tn, Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: 7}},
				}}}},
				{Name: "queue.delta", Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{IsMonotonic: true, AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA, DataPoints: []*metricspb.NumberDataPoint{
					{TimeUnixNano: tn, Value: &metricspb.NumberDataPoint_AsInt{AsInt: 3}},
				}}}},
				{Name: "cpu.utilization", Unit: "1", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{
					{TimeUnixNano: tn, Flags: 1},
				}}}},
				{Name: "rpc.duration", Unit: "s", Data: &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{AggregationTemporality: cum, DataPoints: []*metricspb.HistogramDataPoint{
					{TimeUnixNano: tn, Count: 6, Sum: &sum, ExplicitBounds: []float64{0.1, 1}, BucketCounts: []uint64{1, 2, 3}},
				}}}},
				{Name: "gc.pause", Unit: "ms", Data: &metricspb.Metric_Summary{Summary: &metricspb.Summary{DataPoints: []*metricspb.SummaryDataPoint{
					{TimeUnixNano: tn, Count: 4, Sum: 10, QuantileValues: []*metricspb.SummaryDataPoint_ValueAtQuantile{{Quantile: 0.5, Value: 2}, {Quantile: 0.99, Value: 5}}},
				}}}},
				// Not storable: reported, the rest stored.
				{Name: "native", Data: &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: &metricspb.ExponentialHistogram{DataPoints: []*metricspb.ExponentialHistogramDataPoint{{TimeUnixNano: tn}}}}},
				{Name: "no.time", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{{Value: &metricspb.NumberDataPoint_AsInt{AsInt: 1}}}}}},
				{Name: "ancient", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{{TimeUnixNano: 1e15, Value: &metricspb.NumberDataPoint_AsInt{AsInt: 1}}}}}},
				{Name: "delta.hist", Data: &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA, DataPoints: []*metricspb.HistogramDataPoint{{TimeUnixNano: tn}}}}},
			},
		}},
	}}}
	resp, err := c.Export(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	ps := resp.GetPartialSuccess()
	if ps.GetRejectedDataPoints() != 4 {
		t.Errorf("rejected %d points (%q), want 4", ps.GetRejectedDataPoints(), ps.GetErrorMessage())
	}
	for _, want := range []string{`"native"`, "exponential", "no time_unix_nano", "retention", "cumulative temporality"} {
		if !strings.Contains(ps.GetErrorMessage(), want) {
			t.Errorf("partial success message %q does not mention %q", ps.GetErrorMessage(), want)
		}
	}
	base := `instance="pod-1", job="shop/api", otel_scope_name="lib", otel_scope_version="1.2"`
	want := []string{
		`{__name__="cpu_utilization_ratio", ` + base + `} stale`,
		`{__name__="gc_pause_milliseconds", ` + base + `, quantile="0.5"} 2`,
		`{__name__="gc_pause_milliseconds", ` + base + `, quantile="0.99"} 5`,
		`{__name__="gc_pause_milliseconds_count", ` + base + `} 4`,
		`{__name__="gc_pause_milliseconds_sum", ` + base + `} 10`,
		`{__name__="http_server_requests_total", http_method="GET;get", ` + base + `} 7`,
		`{__name__="queue_delta", ` + base + `} 3`,
		`{__name__="rpc_duration_seconds_bucket", instance="pod-1", job="shop/api", le="+Inf", otel_scope_name="lib", otel_scope_version="1.2"} 6`,
		`{__name__="rpc_duration_seconds_bucket", instance="pod-1", job="shop/api", le="0.1", otel_scope_name="lib", otel_scope_version="1.2"} 1`,
		`{__name__="rpc_duration_seconds_bucket", instance="pod-1", job="shop/api", le="1", otel_scope_name="lib", otel_scope_version="1.2"} 3`,
		`{__name__="rpc_duration_seconds_count", ` + base + `} 6`,
		`{__name__="rpc_duration_seconds_sum", ` + base + `} 12.5`,
		`{__name__="system_memory_usage_bytes", instance="pod-1", job="shop/api", otel_scope_name="lib", otel_scope_version="1.2", state="used"} 42`,
		`{__name__="target_info", host_name="h1", instance="pod-1", job="shop/api"} 1`,
	}
	got := dump(t, d)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stored:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestOTLPRequestLimit(t *testing.T) {
	conn, d := startConn(t, ingest.Limits{SamplesPerRequest: 10})
	c := colmetricspb.NewMetricsServiceClient(conn)
	var pts []*metricspb.HistogramDataPoint
	for i := 0; i < 3; i++ {
		pts = append(pts, &metricspb.HistogramDataPoint{TimeUnixNano: uint64(now) * 1e6, Count: 1, ExplicitBounds: []float64{1}, BucketCounts: []uint64{1, 0}, Attributes: []*commonpb.KeyValue{kv("i", string(rune('a'+i)))}})
	}
	_, err := c.Export(context.Background(), &colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{
		{Name: "h", Data: &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, DataPoints: pts}}},
	}}}}}})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "limit is 10") {
		t.Fatalf("Export over the sample limit: %v, want ResourceExhausted naming the limit", err)
	}
	if n := len(dump(t, d)); n != 0 {
		t.Fatalf("%d samples stored from a refused request", n)
	}
}

func TestMetricNames(t *testing.T) {
	for _, c := range []struct{ name, unit, kind, want string }{
		{"http.server.duration", "ms", "histogram", "http_server_duration_milliseconds"},
		{"process.cpu.time", "s", "counter", "process_cpu_time_seconds_total"},
		{"requests_total", "", "counter", "requests_total"},
		{"network.io", "By/s", "gauge", "network_io_bytes_per_second"},
		{"memory.utilization", "1", "gauge", "memory_utilization_ratio"},
		{"disk_bytes", "By", "gauge", "disk_bytes"},
		{"2xx.count", "{responses}", "counter", "_2xx_count_total"},
		{"a..b", "", "gauge", "a_b"},
	} {
		if got := ingest.MetricNameForTest(c.name, c.unit, c.kind); got != c.want {
			t.Errorf("metricName(%q, %q, %s) = %q, want %q", c.name, c.unit, c.kind, got, c.want)
		}
	}
}

// TestOTLPSameMillisecond: OTLP times are nanoseconds; a series keeps one
// sample a millisecond. Points of one series that share a millisecond
// were collapsed without a word (822 acknowledged, 720 stored with
// telemetrygen): the later ones are now rejected in partial_success.
func TestOTLPSameMillisecond(t *testing.T) {
	conn, d := startConn(t, ingest.Limits{})
	c := colmetricspb.NewMetricsServiceClient(conn)
	tn := uint64(now) * 1e6
	pt := func(ns uint64, v float64) *metricspb.NumberDataPoint {
		return &metricspb.NumberDataPoint{TimeUnixNano: ns, Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: v}}
	}
	resp, err := c.Export(context.Background(), &colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{
		{Name: "g", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{
			pt(tn, 1), pt(tn+100_000, 2), pt(tn+999_999, 3), pt(tn+1_000_000, 4),
		}}}},
	}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	ps := resp.GetPartialSuccess()
	if ps.GetRejectedDataPoints() != 2 || !strings.Contains(ps.GetErrorMessage(), "same millisecond") {
		t.Errorf("partial success %v, want 2 points rejected for their millisecond", ps)
	}
	got := dump(t, d)
	want := []string{`{__name__="g"} 1`, `{__name__="g"} 4`}
	if !slices.Contains(got, want[0]) || !slices.Contains(got, want[1]) || len(got) != 2 {
		t.Errorf("stored %q, want %q", got, want)
	}
}
