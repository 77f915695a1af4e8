package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	prompb "github.com/headroomdb/headroom/proto/prometheus"
	"github.com/headroomdb/headroom/proto/prometheus/writev2"
)

// postRW2 sends body with the given Content-Type and Content-Encoding.
func postRW(t *testing.T, url, ctype, encoding string, body []byte) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/api/v1/write", bytes.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

const rw2Type = "application/x-protobuf;proto=io.prometheus.write.v2.Request"

func rw2Body(t *testing.T, req *writev2.Request) []byte {
	t.Helper()
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

// TestServeRemoteWrite2: a remote-write 2.0 body built from the published
// proto is stored, with its metadata, and answered with the Written
// counts; 1.0 keeps working; an unsupported Content-Type or
// Content-Encoding gets 415 naming what is supported; a bad symbol
// reference refuses the request whole; native histograms (not stored
// yet) are refused while the float series of the request are stored.
// Exemplars are kept (TestServeExemplars).
func TestServeRemoteWrite2(t *testing.T) {
	ts := startServer(t)
	now := time.Now().UnixMilli()
	req := &writev2.Request{
		Symbols: []string{"", "__name__", "rpc_duration_seconds_sum", "job", "api", "Time in RPCs.", "seconds", "rpc_total", "trace_id", "abc"},
		Timeseries: []*writev2.TimeSeries{
			{LabelsRefs: []uint32{1, 2, 3, 4}, Samples: []*writev2.Sample{{Value: 1.5, Timestamp: now - 1000}, {Value: 2.5, Timestamp: now}},
				Metadata: &writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_SUMMARY, HelpRef: 5, UnitRef: 6}},
			{LabelsRefs: []uint32{1, 7, 3, 4}, Samples: []*writev2.Sample{{Value: 7, Timestamp: now}},
				Exemplars: []*writev2.Exemplar{{LabelsRefs: []uint32{8, 9}, Value: 7, Timestamp: now}},
				Metadata:  &writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER}},
		},
	}
	resp, msg := postRW(t, ts.httpURL, rw2Type, "snappy", rw2Body(t, req))
	if resp.StatusCode != 204 {
		t.Fatalf("2.0: %d %s", resp.StatusCode, msg)
	}
	for h, want := range map[string]string{"Samples": "3", "Histograms": "0", "Exemplars": "1"} {
		if got := resp.Header.Get("X-Prometheus-Remote-Write-" + h + "-Written"); got != want {
			t.Errorf("%s written: %q, want %s", h, got, want)
		}
	}
	got := stored(t, ts.db)
	if v := got[`{__name__="rpc_duration_seconds_sum", job="api"}`]; len(v) != 2 || v[1] != 2.5 {
		t.Errorf("stored: %v", got)
	}
	md := getMetadata(t, ts.httpURL+"/api/v1/metadata")
	if e := md.Data["rpc_duration_seconds_sum"]; len(e) != 1 || e[0].Type != "summary" || e[0].Help != "Time in RPCs." || e[0].Unit != "seconds" {
		t.Errorf("metadata: %v", md.Data)
	}
	if e := md.Data["rpc_total"]; len(e) != 1 || e[0].Type != "counter" {
		t.Errorf("metadata of rpc_total: %v", md.Data)
	}

	// 1.0, said explicitly, still works.
	if resp, msg := postRW(t, ts.httpURL, "application/x-protobuf;proto=prometheus.WriteRequest", "snappy", remoteWriteBody(t, promSeries("v1_metric", now, 1))); resp.StatusCode != 204 {
		t.Errorf("1.0 with proto=: %d %s", resp.StatusCode, msg)
	}
	for _, c := range []struct{ ctype, enc, want string }{
		{"application/x-protobuf;proto=io.prometheus.write.v3.Request", "snappy", "proto=io.prometheus.write.v2.Request (2.0) or proto=prometheus.WriteRequest (1.0) is supported"},
		{"application/json", "snappy", `unsupported Content-Type "application/json"`},
		{rw2Type, "zstd", `unsupported Content-Encoding "zstd": snappy is supported`},
	} {
		if resp, msg := postRW(t, ts.httpURL, c.ctype, c.enc, rw2Body(t, req)); resp.StatusCode != 415 || !strings.Contains(msg, c.want) {
			t.Errorf("%s %s: %d %q, want 415 with %q", c.ctype, c.enc, resp.StatusCode, msg, c.want)
		}
	}

	// A bad reference refuses it all.
	bad := &writev2.Request{Symbols: []string{"", "__name__", "never_stored"}, Timeseries: []*writev2.TimeSeries{
		{LabelsRefs: []uint32{1, 2}, Samples: []*writev2.Sample{{Value: 1, Timestamp: now}}},
		{LabelsRefs: []uint32{1, 9}, Samples: []*writev2.Sample{{Value: 1, Timestamp: now}}},
	}}
	if resp, msg := postRW(t, ts.httpURL, rw2Type, "snappy", rw2Body(t, bad)); resp.StatusCode != 400 || !strings.Contains(msg, "series 1: label value reference 9 is outside the 3 symbols") ||
		resp.Header.Get("X-Prometheus-Remote-Write-Samples-Written") != "0" {
		t.Errorf("bad reference: %d %q %v", resp.StatusCode, msg, resp.Header)
	}
	if _, ok := stored(t, ts.db)[`{__name__="never_stored"}`]; ok {
		t.Error("a refused request stored a series")
	}

	// Native histograms are stored with the floats of their request:
	// integer bucket deltas become counts.
	mixed := &writev2.Request{Symbols: []string{"", "__name__", "latency_seconds", "floats_total"}, Timeseries: []*writev2.TimeSeries{
		{LabelsRefs: []uint32{1, 2}, Histograms: []*writev2.Histogram{{Count: &writev2.Histogram_CountInt{CountInt: 4}, Sum: 1, Timestamp: now, Schema: 3,
			PositiveSpans: []*writev2.BucketSpan{{Offset: 0, Length: 2}}, PositiveDeltas: []int64{1, 2}}}},
		{LabelsRefs: []uint32{1, 3}, Samples: []*writev2.Sample{{Value: 9, Timestamp: now}}},
	}}
	resp, msg = postRW(t, ts.httpURL, rw2Type, "snappy", rw2Body(t, mixed))
	if resp.StatusCode != 204 || resp.Header.Get("X-Prometheus-Remote-Write-Samples-Written") != "1" || resp.Header.Get("X-Prometheus-Remote-Write-Histograms-Written") != "1" {
		t.Errorf("histograms: %d %q %v", resp.StatusCode, msg, resp.Header)
	}
	if v := stored(t, ts.db)[`{__name__="floats_total"}`]; len(v) != 1 {
		t.Error("the float series of a request with histograms was not stored")
	}
	hs := storedHists(t, ts.db)[`{__name__="latency_seconds"}`]
	if len(hs) != 1 || hs[0].T != now || hs[0].H.Count != 4 || hs[0].H.Schema != 3 || !slices.Equal(hs[0].H.PositiveBuckets, []float64{1, 3}) {
		t.Errorf("stored histograms %v, want one of count 4 with buckets [1 3]", hs)
	}

	// A histogram whose spans do not add up refuses the request whole.
	bad = &writev2.Request{Symbols: []string{"", "__name__", "latency_seconds", "floats_total"}, Timeseries: []*writev2.TimeSeries{
		{LabelsRefs: []uint32{1, 3}, Samples: []*writev2.Sample{{Value: 10, Timestamp: now + 1000}}},
		{LabelsRefs: []uint32{1, 2}, Histograms: []*writev2.Histogram{{Count: &writev2.Histogram_CountInt{CountInt: 4}, Timestamp: now + 1000,
			PositiveSpans: []*writev2.BucketSpan{{Offset: 0, Length: 3}}, PositiveDeltas: []int64{1, 2}}}},
	}}
	resp, msg = postRW(t, ts.httpURL, rw2Type, "snappy", rw2Body(t, bad))
	if resp.StatusCode != 400 || !strings.Contains(msg, `latency_seconds`) || !strings.Contains(msg, "positive spans count 3 buckets, 2 given") ||
		resp.Header.Get("X-Prometheus-Remote-Write-Samples-Written") != "0" {
		t.Errorf("bad histogram: %d %q %v", resp.StatusCode, msg, resp.Header)
	}
	if v := stored(t, ts.db)[`{__name__="floats_total"}`]; len(v) != 1 {
		t.Error("a refused request stored its float sample")
	}
}

// TestServeExemplars: exemplars from remote-write 1.0 and 2.0 are served
// by /api/v1/query_exemplars for the query's selectors and time range, as
// Grafana asks for them; the 2.0 answer counts them.
func TestServeExemplars(t *testing.T) {
	ts := startServer(t)
	now := time.Now().UnixMilli()
	// 1.0: TimeSeries field 3, Exemplar{labels 1, value 2, timestamp 3}.
	var exm []byte
	exm = protowire.AppendTag(exm, 1, protowire.BytesType)
	exm = protowire.AppendBytes(exm, mustMarshal(t, &prompb.Label{Name: "trace_id", Value: "t1"}))
	exm = protowire.AppendTag(exm, 2, protowire.Fixed64Type)
	exm = protowire.AppendFixed64(exm, math.Float64bits(0.42))
	exm = protowire.AppendTag(exm, 3, protowire.VarintType)
	exm = protowire.AppendVarint(exm, uint64(now-500))
	// Append the exemplar to the (only) series: rebuild its message.
	series1 := mustMarshal(t, promSeries("rpc_seconds_bucket", now, 5, "le", "0.5"))
	series1 = protowire.AppendTag(series1, 3, protowire.BytesType)
	series1 = protowire.AppendBytes(series1, exm)
	v1 := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), series1)
	if code, msg := postRemoteWrite(t, ts.httpURL, "", snappy.Encode(nil, v1)); code != 204 {
		t.Fatalf("1.0 with an exemplar: %d %s", code, msg)
	}
	// 2.0: TimeSeries field 4.
	req := &writev2.Request{Symbols: []string{"", "__name__", "rpc_seconds_bucket", "le", "1", "trace_id", "t2"},
		Timeseries: []*writev2.TimeSeries{{LabelsRefs: []uint32{1, 2, 3, 4}, Samples: []*writev2.Sample{{Value: 9, Timestamp: now}},
			Exemplars: []*writev2.Exemplar{{LabelsRefs: []uint32{5, 6}, Value: 0.9, Timestamp: now - 100}}}}}
	resp, msg := postRW(t, ts.httpURL, rw2Type, "snappy", rw2Body(t, req))
	if resp.StatusCode != 204 || resp.Header.Get("X-Prometheus-Remote-Write-Exemplars-Written") != "1" {
		t.Fatalf("2.0 with an exemplar: %d %s %v", resp.StatusCode, msg, resp.Header)
	}
	q := func(params string) []seriesExemplarsAnswer { return queryExemplars(t, ts, params) }
	got := q("query=" + url.QueryEscape(`histogram_quantile(0.9, rate(rpc_seconds_bucket[5m]))`))
	if len(got) != 2 || got[0].SeriesLabels["le"] != "0.5" || got[0].Exemplars[0].Labels["trace_id"] != "t1" || got[0].Exemplars[0].Value != "0.42" ||
		got[1].Exemplars[0].Labels["trace_id"] != "t2" {
		t.Fatalf("exemplars: %+v", got)
	}
	if got := q("query=" + url.QueryEscape(`rpc_seconds_bucket{le="1"}`)); len(got) != 1 || got[0].SeriesLabels["le"] != "1" {
		t.Errorf("le=1: %+v", got)
	}
	if got := q(fmt.Sprintf("query=rpc_seconds_bucket&start=%.3f&end=%.3f", float64(now-300)/1000, float64(now)/1000+1)); len(got) != 1 || got[0].Exemplars[0].Labels["trace_id"] != "t2" {
		t.Errorf("time range: %+v", got)
	}
	if code, body := httpGet(t, ts.httpURL+"/api/v1/query_exemplars?query=sum("); code != 400 || !strings.Contains(body, "parse error") {
		t.Errorf("bad query: %d %s", code, body)
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestServeOTLPExemplars: OTLP exemplars (trace and span IDs) are kept
// for the series of their sample, a histogram's in the bucket of their
// value, and served by /api/v1/query_exemplars.
func TestServeOTLPExemplars(t *testing.T) {
	ts := startServer(t)
	now := uint64(time.Now().UnixNano())
	ex := func(v float64, trace byte) *metricspb.Exemplar {
		return &metricspb.Exemplar{TimeUnixNano: now - 1e9, Value: &metricspb.Exemplar_AsDouble{AsDouble: v},
			TraceId: bytes.Repeat([]byte{trace}, 16), SpanId: bytes.Repeat([]byte{trace + 1}, 8)}
	}
	req := &colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{
		{Name: "queue_depth", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{{
			TimeUnixNano: now, Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: 3}, Exemplars: []*metricspb.Exemplar{ex(3, 0xaa)}}}}}},
		{Name: "rpc.duration", Unit: "s", Data: &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{
			AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
			DataPoints: []*metricspb.HistogramDataPoint{{TimeUnixNano: now, Count: 4, ExplicitBounds: []float64{0.1, 1}, BucketCounts: []uint64{1, 2, 1},
				Exemplars: []*metricspb.Exemplar{ex(0.5, 0xbb), ex(7, 0xcc)}}}}}},
	}}}}}}
	if _, err := colmetricspb.NewMetricsServiceClient(ts.dial(t)).Export(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	data := queryExemplars(t, ts, "query="+url.QueryEscape(`{__name__=~"queue_depth|rpc_duration_seconds_bucket"}`))
	got := map[string]string{}
	for _, s := range data {
		for _, e := range s.Exemplars {
			got[s.SeriesLabels["__name__"]+"/"+s.SeriesLabels["le"]] = e.Labels["trace_id"][:4] + " " + e.Labels["span_id"][:4] + " " + e.Value
		}
	}
	want := map[string]string{"queue_depth/": "aaaa abab 3", "rpc_duration_seconds_bucket/1": "bbbb bcbc 0.5", "rpc_duration_seconds_bucket/+Inf": "cccc cdcd 7"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("exemplars %v, want %v", got, want)
	}
}

type seriesExemplarsAnswer struct {
	SeriesLabels map[string]string
	Exemplars    []struct {
		Labels    map[string]string
		Value     string
		Timestamp float64
	}
}

// queryExemplars asks /api/v1/query_exemplars with params.
func queryExemplars(t *testing.T, ts *testServer, params string) []seriesExemplarsAnswer {
	t.Helper()
	code, body := httpGet(t, ts.httpURL+"/api/v1/query_exemplars?"+params)
	var a struct{ Data []seriesExemplarsAnswer }
	if err := json.Unmarshal([]byte(body), &a); err != nil || code != 200 {
		t.Fatalf("%s: %d %v %s", params, code, err, body)
	}
	return a.Data
}
