package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	prompb "github.com/headroomdb/headroom/proto/prometheus"
)

// rwMetadata is a remote-write MetricMetadata message (type 1,
// metric_family_name 2, help 4, unit 5), as Prometheus sends in field 3.
func rwMetadata(typ uint64, name, help, unit string) []byte {
	var m []byte
	m = protowire.AppendTag(m, 1, protowire.VarintType)
	m = protowire.AppendVarint(m, typ)
	m = protowire.AppendTag(m, 2, protowire.BytesType)
	m = protowire.AppendString(m, name)
	m = protowire.AppendTag(m, 4, protowire.BytesType)
	m = protowire.AppendString(m, help)
	m = protowire.AppendTag(m, 5, protowire.BytesType)
	m = protowire.AppendString(m, unit)
	return m
}

// rwBodyWithMetadata is a remote-write body of series and metadata.
func rwBodyWithMetadata(t *testing.T, ts []*prompb.TimeSeries, md ...[]byte) []byte {
	t.Helper()
	b, err := proto.Marshal(&prompb.WriteRequest{Timeseries: ts})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range md {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	return snappy.Encode(nil, b)
}

type metadataAnswer struct {
	Status string
	Error  string
	Data   map[string][]struct{ Type, Help, Unit string }
}

func getMetadata(t *testing.T, url string) metadataAnswer {
	t.Helper()
	code, body := httpGet(t, url)
	var a metadataAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil || code != 200 {
		t.Fatalf("%s: %d %v %s", url, code, err, body)
	}
	return a
}

// TestServeMetadata: the metadata remote-write (field 3, as Prometheus
// sends it, also without samples) and OTLP (type, unit, description)
// carry is served by /api/v1/metadata, as Grafana asks for it; a bad
// entry refuses the request whole.
func TestServeMetadata(t *testing.T) {
	ts := startServer(t)
	now := time.Now().UnixMilli()
	body := rwBodyWithMetadata(t, []*prompb.TimeSeries{promSeries("http_requests_total", now, 1, "job", "a")},
		rwMetadata(1, "http_requests_total", "Requests served.", ""),
		rwMetadata(2, "node_memory_free_bytes", "Free memory.", "bytes"))
	if code, msg := postRemoteWrite(t, ts.httpURL, "", body); code != 204 {
		t.Fatalf("remote write with metadata: %d %s", code, msg)
	}
	// Prometheus sends metadata in requests of their own.
	if code, msg := postRemoteWrite(t, ts.httpURL, "", rwBodyWithMetadata(t, nil, rwMetadata(3, "rpc_seconds", "RPC latency.", "seconds"))); code != 204 {
		t.Fatalf("metadata alone: %d %s", code, msg)
	}
	// A bad entry: 400 naming it, and the request's samples not stored.
	code, msg := postRemoteWrite(t, ts.httpURL, "", rwBodyWithMetadata(t, []*prompb.TimeSeries{promSeries("refused_total", now, 1)}, rwMetadata(99, "x", "", "")))
	if code != 400 || !strings.Contains(msg, "unknown metric type 99") {
		t.Fatalf("bad metadata: %d %s", code, msg)
	}
	if _, ok := stored(t, ts.db)[`{__name__="refused_total"}`]; ok {
		t.Error("a request with bad metadata stored its samples")
	}

	// OTLP: the metric's description and unit, under Prometheus's name.
	oc := colmetricspb.NewMetricsServiceClient(ts.dial(t))
	req := &colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{{
		Name: "queue.depth", Description: "Jobs waiting.", Unit: "1",
		Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{{TimeUnixNano: uint64(now) * 1e6, Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: 3}}}}},
	}}}}}}}
	if _, err := oc.Export(context.Background(), req); err != nil {
		t.Fatal(err)
	}

	all := getMetadata(t, ts.httpURL+"/api/v1/metadata")
	want := map[string]string{
		"http_requests_total":    "counter|Requests served.|",
		"node_memory_free_bytes": "gauge|Free memory.|bytes",
		"rpc_seconds":            "histogram|RPC latency.|seconds",
		"queue_depth_ratio":      "gauge|Jobs waiting.|1",
	}
	for name, w := range want {
		e := all.Data[name]
		if len(e) != 1 || e[0].Type+"|"+e[0].Help+"|"+e[0].Unit != w {
			t.Errorf("metadata of %s: %+v, want %s", name, e, w)
		}
	}
	if len(all.Data) != len(want) {
		t.Errorf("metadata: %d metrics, want %d: %v", len(all.Data), len(want), all.Data)
	}
	if one := getMetadata(t, ts.httpURL+"/api/v1/metadata?metric=rpc_seconds"); len(one.Data) != 1 || one.Data["rpc_seconds"] == nil {
		t.Errorf("metric=rpc_seconds: %v", one.Data)
	}
	if two := getMetadata(t, ts.httpURL+"/api/v1/metadata?limit=2"); len(two.Data) != 2 {
		t.Errorf("limit=2: %v", two.Data)
	}
	if code, body := httpGet(t, ts.httpURL+"/api/v1/metadata?limit=x"); code != 400 || !strings.Contains(body, `invalid parameter \"limit\"`) {
		t.Errorf("limit=x: %d %s", code, body)
	}
}
