package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/headroomdb/headroom/auth"
	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	prompb "github.com/headroomdb/headroom/proto/prometheus"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

type testServer struct {
	*server
	grpcAddr string
	httpURL  string
}

// startServer runs `headroom serve` in-process on loopback ports chosen by
// the kernel, over a fresh data directory.
func startServer(t *testing.T, args ...string) *testServer {
	t.Helper()
	return startServerLogging(t, slog.New(slog.NewTextHandler(io.Discard, nil)), args...)
}

// startServerLogging is startServer with the server's log going to log.
func startServerLogging(t *testing.T, log *slog.Logger, args ...string) *testServer {
	t.Helper()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg := serveFlags(fs)
	base := []string{"--data-dir", filepath.Join(t.TempDir(), "data"), "--grpc-port", "0", "--http-port", "0", "--retention", "30d"}
	if err := fs.Parse(append(base, args...)); err != nil {
		t.Fatal(err)
	}
	s, err := newServer(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	s.start()
	ts := &testServer{server: s, grpcAddr: s.grpcLis.Addr().String(), httpURL: "http://" + s.httpLis.Addr().String()}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return ts
}

func (ts *testServer) dial(t *testing.T, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(ts.grpcAddr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// stored returns the stored series as label strings with their samples.
func stored(t *testing.T, db *storage.DB) map[string][]float64 {
	t.Helper()
	out := map[string][]float64{}
	eachStored(t, db, func(s *storage.Series) {
		it := s.Iterator()
		var vs []float64
		for it.Next() {
			_, v := it.At()
			vs = append(vs, v)
		}
		out[s.Labels.String()] = vs
	})
	return out
}

// storedHists returns every stored series' native histograms.
func storedHists(t *testing.T, db *storage.DB) map[string][]series.HistSample {
	t.Helper()
	out := map[string][]series.HistSample{}
	eachStored(t, db, func(s *storage.Series) {
		if len(s.Hists) > 0 {
			out[s.Labels.String()] = s.Hists
		}
	})
	return out
}

// eachStored calls f with every stored series, of all time.
func eachStored(t *testing.T, db *storage.DB, f func(*storage.Series)) {
	t.Helper()
	q, err := db.Querier(0, storage.MaxTime)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set, err := q.Select(series.MustMatcher(series.MatchRegexp, "__name__", ".+"))
	if err != nil {
		t.Fatal(err)
	}
	for set.Next() {
		f(set.At())
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func remoteWriteBody(t *testing.T, ts ...*prompb.TimeSeries) []byte {
	t.Helper()
	return remoteWriteBodyOf(&prompb.WriteRequest{Timeseries: ts})
}

// remoteWriteBodyOf is req as a remote-write body: protobuf, then snappy.
func remoteWriteBodyOf(req *prompb.WriteRequest) []byte {
	b, err := proto.Marshal(req)
	if err != nil {
		panic(err) // our own message: cannot fail
	}
	return snappy.Encode(nil, b)
}

func postRemoteWrite(t *testing.T, url, token string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/api/v1/write", bytes.NewReader(body))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func promSeries(name string, t int64, v float64, extra ...string) *prompb.TimeSeries {
	ls := []*prompb.Label{{Name: "__name__", Value: name}}
	for i := 0; i+1 < len(extra); i += 2 {
		ls = append(ls, &prompb.Label{Name: extra[i], Value: extra[i+1]})
	}
	return &prompb.TimeSeries{Labels: ls, Samples: []*prompb.Sample{{Timestamp: t, Value: v}}}
}

// TestServeEndToEnd pushes through every protocol with a real client of
// each: Headroom's gRPC API, the OpenTelemetry Go SDK's OTLP exporter, and
// a remote-write body built from our proto and snappy.
func TestServeEndToEnd(t *testing.T) {
	ts := startServer(t)
	ctx := context.Background()
	now := time.Now().UnixMilli()

	// gRPC, unary and stream.
	ic := headroomv1.NewIngestClient(ts.dial(t))
	if _, err := ic.Write(ctx, &headroomv1.WriteRequest{Series: []*headroomv1.Series{{
		Labels:  []*headroomv1.Label{{Name: "__name__", Value: "grpc_metric"}, {Name: "host", Value: "a"}},
		Samples: []*headroomv1.Sample{{TimestampMs: now - 1000, Value: 1}, {TimestampMs: now, Value: 2}},
	}}}); err != nil {
		t.Fatal(err)
	}
	stream, err := ic.WriteStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if err := stream.Send(&headroomv1.WriteStreamRequest{Sequence: seq, Series: []*headroomv1.Series{{
			Labels:  []*headroomv1.Label{{Name: "__name__", Value: "stream_metric"}},
			Samples: []*headroomv1.Sample{{TimestampMs: now + int64(seq), Value: float64(seq)}},
		}}}); err != nil {
			t.Fatal(err)
		}
		ack, err := stream.Recv()
		if err != nil || ack.Sequence != seq || ack.Error != "" {
			t.Fatalf("ack %d: %v %v", seq, ack, err)
		}
	}
	stream.CloseSend()

	// OTLP through the official SDK exporter.
	// gzip, as the Collector's otlp exporter sends by default.
	exp, err := otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpoint(ts.grpcAddr), otlpmetricgrpc.WithInsecure(), otlpmetricgrpc.WithCompressor("gzip"))
	if err != nil {
		t.Fatal(err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "checkout"), attribute.String("service.instance.id", "pod-7"), attribute.String("k8s.namespace.name", "shop"))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))))
	meter := mp.Meter("e2e")
	counter, _ := meter.Int64Counter("orders", metricNoUnit())
	counter.Add(ctx, 5, withAttr("region", "eu"))
	gauge, _ := meter.Float64Gauge("queue.depth")
	gauge.Record(ctx, 17.5)
	hist, _ := meter.Float64Histogram("latency", unitSeconds(), bucketBounds(0.1, 1))
	for _, v := range []float64{0.05, 0.5, 0.7, 3} {
		hist.Record(ctx, v)
	}
	if err := mp.ForceFlush(ctx); err != nil {
		t.Fatalf("OTLP export: %v", err)
	}
	if err := mp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	// Remote-write.
	if code, msg := postRemoteWrite(t, ts.httpURL, "", remoteWriteBody(t, promSeries("rw_metric", now, 3, "job", "node"))); code != http.StatusNoContent {
		t.Fatalf("remote write: %d %s", code, msg)
	}

	got := stored(t, ts.db)
	base := `instance="pod-7", job="checkout", otel_scope_name="e2e"`
	for name, want := range map[string][]float64{
		`{__name__="grpc_metric", host="a"}`:                                                    {1, 2},
		`{__name__="stream_metric"}`:                                                            {1, 2, 3},
		`{__name__="orders_total", ` + base + `, region="eu"}`:                                  {5},
		`{__name__="queue_depth", ` + base + `}`:                                                {17.5},
		`{__name__="latency_seconds_count", ` + base + `}`:                                      {4},
		`{__name__="latency_seconds_sum", ` + base + `}`:                                        {4.25},
		`{__name__="latency_seconds_bucket", ` + insertLe(base, "0.1"):                          {1},
		`{__name__="latency_seconds_bucket", ` + insertLe(base, "1"):                            {3},
		`{__name__="latency_seconds_bucket", ` + insertLe(base, "+Inf"):                         {4},
		`{__name__="target_info", instance="pod-7", job="checkout", k8s_namespace_name="shop"}`: {1},
		`{__name__="rw_metric", job="node"}`:                                                    {3},
	} {
		vs := got[name]
		if strings.HasPrefix(name, `{__name__="grpc`) || strings.HasPrefix(name, `{__name__="stream`) {
			// exact history
		} else if len(vs) > 0 {
			// The SDK exports on ForceFlush and again on Shutdown
			// (cumulative: the same values, later timestamps).
			vs = vs[len(vs)-1:]
		}
		if fmt.Sprint(vs) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	if t.Failed() {
		for k, v := range got {
			t.Logf("stored %s %v", k, v)
		}
	}

	_, metrics := httpGet(t, ts.httpURL+"/metrics")
	for _, want := range []string{
		`headroom_ingest_samples_total{protocol="grpc"} 5`,
		`headroom_ingest_samples_total{protocol="remote_write"} 1`,
		`headroom_ingest_requests_total{outcome="ok",protocol="otlp"} 2`,
		`headroom_active_series 11`,
		`headroom_wal_fsync_duration_seconds_count`,
		`headroom_pebble_compactions_total`,
		`headroom_http_request_duration_seconds_count{code="204",handler="/api/v1/write"} 1`,
		`headroom_grpc_request_duration_seconds_count{code="OK",method="/headroom.v1.Ingest/Write"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	code, body := httpGet(t, ts.httpURL+"/api/v1/status/tsdb?limit=1")
	if want := `{"status":"success","data":{"headStats":{"numSeries":11,`; code != 200 || !strings.HasPrefix(body, want) ||
		!strings.Contains(body, `"seriesCountByMetricName":[{"name":"latency_seconds_bucket","value":3}]`) {
		t.Errorf("/api/v1/status/tsdb: %d %s", code, body)
	}
	if code, body := httpGet(t, ts.httpURL+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz = %d %q", code, body)
	}
}

func insertLe(base, le string) string {
	// le sorts between job and otel_scope_name.
	i := strings.Index(base, ", otel_scope_name")
	return base[:i] + `, le="` + le + `"` + base[i:] + "}"
}

// repeatField returns n copies of msg as entries of a repeated message
// field: the wire form of a message holding them.
func repeatField(field protowire.Number, msg []byte, n int) []byte {
	entry := protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), msg)
	return bytes.Repeat(entry, n)
}

// rawCodec sends bytes as they are, to put broken protobuf on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

var _ encoding.Codec = rawCodec{}

// TestServeBadInput sends each protocol a table of bad requests and checks
// the answer, that the server stays healthy, and that nothing of a refused
// request is stored.
func TestServeBadInput(t *testing.T) {
	ts := startServer(t, "--max-label-value-length", "1024")
	ctx := context.Background()
	conn := ts.dial(t)
	ic := headroomv1.NewIngestClient(conn)
	oc := colmetricspb.NewMetricsServiceClient(conn)
	now := time.Now().UnixMilli()
	good := &headroomv1.Series{Labels: []*headroomv1.Label{{Name: "__name__", Value: "ok"}}, Samples: []*headroomv1.Sample{{TimestampMs: now, Value: 1}}}
	own := func(ls ...string) *headroomv1.Series {
		s := &headroomv1.Series{Samples: []*headroomv1.Sample{{TimestampMs: now, Value: 1}}}
		for i := 0; i+1 < len(ls); i += 2 {
			s.Labels = append(s.Labels, &headroomv1.Label{Name: ls[i], Value: ls[i+1]})
		}
		return s
	}
	huge := strings.Repeat("x", 2000)
	// A million series: built as wire bytes (a repeated field is its
	// entries concatenated), which is far cheaper than a million messages.
	oneSeries, _ := proto.Marshal(&headroomv1.Series{Labels: []*headroomv1.Label{{Name: "__name__", Value: "m"}, {Name: "i", Value: "123456"}}, Samples: []*headroomv1.Sample{{TimestampMs: now, Value: 1}}})
	manySeries := repeatField(1, oneSeries, 1_000_000)
	valid, _ := proto.Marshal(&headroomv1.WriteRequest{Series: []*headroomv1.Series{good, good}})

	t.Run("grpc", func(t *testing.T) {
		for _, c := range []struct {
			name string
			req  *headroomv1.WriteRequest
			raw  []byte
			code codes.Code
			msg  string
		}{
			{name: "truncated protobuf", raw: valid[:len(valid)-3], code: codes.InvalidArgument, msg: "protobuf: truncated"},
			{name: "empty labels", req: &headroomv1.WriteRequest{Series: []*headroomv1.Series{good, own()}}, code: codes.InvalidArgument, msg: "series 1: invalid input: empty label set"},
			{name: "duplicate labels", req: &headroomv1.WriteRequest{Series: []*headroomv1.Series{good, own("__name__", "x", "a", "1", "a", "2")}}, code: codes.InvalidArgument, msg: `duplicate label name "a"`},
			{name: "huge label value", req: &headroomv1.WriteRequest{Series: []*headroomv1.Series{good, own("__name__", "x", "a", huge)}}, code: codes.InvalidArgument, msg: "value of 2000 bytes, the limit is 1024"},
			{name: "negative timestamp", req: &headroomv1.WriteRequest{Series: []*headroomv1.Series{good, {Labels: good.Labels, Samples: []*headroomv1.Sample{{TimestampMs: -1}}}}}, code: codes.InvalidArgument, msg: "outside the range"},
			{name: "a million series", raw: manySeries, code: codes.ResourceExhausted, msg: "larger than max"},
		} {
			var err error
			if c.raw != nil {
				var out []byte
				err = conn.Invoke(ctx, "/headroom.v1.Ingest/Write", c.raw, &out, grpc.ForceCodec(rawCodec{}))
			} else {
				_, err = ic.Write(ctx, c.req)
			}
			if st := status.Convert(err); st.Code() != c.code || !strings.Contains(st.Message(), c.msg) {
				t.Errorf("%s: %v %q, want %v with %q", c.name, st.Code(), st.Message(), c.code, c.msg)
			}
		}
	})
	t.Run("otlp", func(t *testing.T) {
		gaugeReq := func(tn uint64) *colmetricspb.ExportMetricsServiceRequest {
			return &colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{
				{Name: "g", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{{TimeUnixNano: tn, Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: math.NaN()}}}}}},
			}}}}}}
		}
		var out []byte
		err := conn.Invoke(ctx, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", []byte{0x0a, 0x05, 0x12}, &out, grpc.ForceCodec(rawCodec{}))
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "protobuf: truncated") {
			t.Errorf("truncated protobuf: %v, want InvalidArgument naming the problem", err)
		}
		resp, err := oc.Export(ctx, gaugeReq(0))
		if err != nil || resp.GetPartialSuccess().GetRejectedDataPoints() != 1 || !strings.Contains(resp.GetPartialSuccess().GetErrorMessage(), "no time_unix_nano") {
			t.Errorf("point without a time: %v %v, want one rejected point", resp, err)
		}
		// A million points (ExportMetricsServiceRequest > ResourceMetrics >
		// ScopeMetrics > Metric > Gauge > NumberDataPoint), as wire bytes.
		pt, _ := proto.Marshal(&metricspb.NumberDataPoint{TimeUnixNano: uint64(now) * 1e6, Value: &metricspb.NumberDataPoint_AsInt{AsInt: 1}})
		gauge := repeatField(1, pt, 1_000_000)
		metric := protowire.AppendBytes(protowire.AppendTag(protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "g"), 5, protowire.BytesType), gauge)
		big := repeatField(1, repeatField(2, repeatField(2, metric, 1), 1), 1)
		err = conn.Invoke(ctx, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", big, &out, grpc.ForceCodec(rawCodec{}))
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("a million points: %v, want ResourceExhausted", err)
		}
	})
	t.Run("remote-write", func(t *testing.T) {
		valid := remoteWriteBody(t, promSeries("ok", now, 1))
		raw, _ := snappy.Decode(nil, valid)
		one, _ := proto.Marshal(promSeries("m", now, 1, "i", "123456"))
		big := snappy.Encode(nil, repeatField(1, one, 1_000_000))
		for _, c := range []struct {
			name string
			body []byte
			code int
			msg  string
		}{
			{"truncated protobuf", snappy.Encode(nil, raw[:len(raw)-2]), 400, "protobuf"},
			{"wrong snappy", []byte("definitely not snappy"), 400, "snappy"},
			{"empty labels", remoteWriteBody(t, promSeries("ok", now, 1), &prompb.TimeSeries{Samples: []*prompb.Sample{{Timestamp: now}}}), 400, "series 1: invalid input: empty label set"},
			{"duplicate labels", remoteWriteBody(t, promSeries("x", now, 1, "a", "1", "a", "2")), 400, "duplicate label"},
			{"huge label value", remoteWriteBody(t, promSeries("x", now, 1, "a", huge)), 400, "the limit is 1024"},
			{"a million series", big, 413, "1000000 series, the limit is 100000"},
		} {
			code, msg := postRemoteWrite(t, ts.httpURL, "", c.body)
			if code != c.code || !strings.Contains(msg, c.msg) {
				t.Errorf("%s: %d %q, want %d with %q", c.name, code, msg, c.code, c.msg)
			}
		}
	})
	if got := stored(t, ts.db); len(got) != 0 {
		t.Errorf("refused requests stored %d series: %v", len(got), got)
	}
	// Still healthy, and a good request goes through.
	if code, _ := httpGet(t, ts.httpURL+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d after bad input", code)
	}
	if _, err := ic.Write(ctx, &headroomv1.WriteRequest{Series: []*headroomv1.Series{good}}); err != nil {
		t.Fatalf("good write after bad input: %v", err)
	}
	if got := stored(t, ts.db); len(got) != 1 {
		t.Errorf("after one good write: %d series stored", len(got))
	}
	_, metrics := httpGet(t, ts.httpURL+"/metrics")
	for _, want := range []string{
		`headroom_ingest_requests_total{outcome="bad_body",protocol="remote_write"} 2`,
		`headroom_ingest_requests_total{outcome="invalid",protocol="grpc"} 3`,
		`headroom_ingest_rejected_samples_total{protocol="otlp",reason="invalid"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestServeActiveSeriesLimit: a request that would bring a metric over its
// active-series limit is refused whole with 429 / ResourceExhausted.
func TestServeActiveSeriesLimit(t *testing.T) {
	ts := startServer(t, "--max-active-series-per-metric", "2", "--max-active-series", "3")
	now := time.Now().UnixMilli()
	body := remoteWriteBody(t, promSeries("a", now, 1, "i", "1"), promSeries("a", now, 1, "i", "2"), promSeries("a", now, 1, "i", "3"))
	if code, msg := postRemoteWrite(t, ts.httpURL, "", body); code != http.StatusTooManyRequests || !strings.Contains(msg, `of metric "a", the limit is 2`) {
		t.Errorf("3 series of a: %d %q, want 429 naming the per-metric limit", code, msg)
	}
	ic := headroomv1.NewIngestClient(ts.dial(t))
	req := &headroomv1.WriteRequest{}
	for _, m := range []string{"b", "c", "d", "e"} {
		req.Series = append(req.Series, &headroomv1.Series{Labels: []*headroomv1.Label{{Name: "__name__", Value: m}}, Samples: []*headroomv1.Sample{{TimestampMs: now, Value: 1}}})
	}
	if _, err := ic.Write(context.Background(), req); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "the limit is 3") {
		t.Errorf("4 series over a total of 3: %v, want ResourceExhausted", err)
	}
	if got := stored(t, ts.db); len(got) != 0 {
		t.Errorf("refused requests stored %v", got)
	}
	if code, msg := postRemoteWrite(t, ts.httpURL, "", remoteWriteBody(t, promSeries("a", now, 1, "i", "1"), promSeries("a", now, 1, "i", "2"))); code != http.StatusNoContent {
		t.Errorf("2 series within the limits: %d %s", code, msg)
	}
	if _, m := httpGet(t, ts.httpURL+"/metrics"); !strings.Contains(m, `headroom_active_series_top_metric{metric="a"} 2`) || !strings.Contains(m, "headroom_active_series_per_metric_limit 2") {
		t.Errorf("/metrics does not show how close the limit is")
	}
	// One active series is left of 3, but a series with 1.5 KiB of labels
	// counts for two.
	heavy := promSeries("f", now, 1, "big", strings.Repeat("x", 1500))
	if code, msg := postRemoteWrite(t, ts.httpURL, "", remoteWriteBody(t, heavy)); code != http.StatusTooManyRequests || !strings.Contains(msg, "would make 4 active series") {
		t.Errorf("a series of 1.5 KiB of labels with one series left: %d %q, want 429", code, msg)
	}
	if code, msg := postRemoteWrite(t, ts.httpURL, "", remoteWriteBody(t, promSeries("f", now, 1, "small", "x"))); code != http.StatusNoContent {
		t.Errorf("a small series with one series left: %d %s", code, msg)
	}
}

func TestServeAuth(t *testing.T) {
	const rtok, wtok = "read-token-0123456789", "write-token-0123456789"
	tf := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tf, []byte("read "+rtok+" grafana\nwrite "+wtok+" agent\n"), 0o600)
	ts := startServer(t, "--tokens-file", tf)
	ctx := context.Background()
	now := time.Now().UnixMilli()
	req := &headroomv1.WriteRequest{Series: []*headroomv1.Series{{Labels: []*headroomv1.Label{{Name: "__name__", Value: "m"}}, Samples: []*headroomv1.Sample{{TimestampMs: now, Value: 1}}}}}
	otlpReq := &colmetricspb.ExportMetricsServiceRequest{}
	for _, c := range []struct {
		token string
		grpc  codes.Code
		http  int
	}{
		{"", codes.Unauthenticated, 401},
		{"wrong-token-0123456789", codes.Unauthenticated, 401},
		{rtok, codes.PermissionDenied, 403},
		{wtok, codes.OK, 204},
	} {
		var opts []grpc.DialOption
		if c.token != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(auth.Credentials{Token: c.token, Insecure: true}))
		}
		conn := ts.dial(t, opts...)
		_, err := headroomv1.NewIngestClient(conn).Write(ctx, req)
		if status.Code(err) != c.grpc {
			t.Errorf("token %q: Ingest.Write %v, want %v", c.token, err, c.grpc)
		}
		_, err = colmetricspb.NewMetricsServiceClient(conn).Export(ctx, otlpReq)
		if status.Code(err) != c.grpc {
			t.Errorf("token %q: OTLP Export %v, want %v", c.token, err, c.grpc)
		}
		if code, _ := postRemoteWrite(t, ts.httpURL, c.token, remoteWriteBody(t, promSeries("rw", now, 1))); code != c.http {
			t.Errorf("token %q: remote write %d, want %d", c.token, code, c.http)
		}
	}
	if got := stored(t, ts.db); len(got) != 2 {
		t.Errorf("stored %v, want only the two writes with the write token", got)
	}
	// The write command passes --token (or $HEADROOM_TOKEN) along.
	csv := writeFile(t, "a.csv", "metric,timestamp,value\nfrom_cli,"+time.Now().Format(time.RFC3339)+",1\n")
	if err := runWrite([]string{"--server", ts.grpcAddr, "--quiet", csv}); err == nil || !strings.Contains(err.Error(), "(Unauthenticated)") {
		t.Errorf("write without a token: %v, want Unauthenticated", err)
	}
	if err := runWrite([]string{"--server", ts.grpcAddr, "--quiet", "--token", wtok, csv}); err != nil {
		t.Errorf("write with the write token: %v", err)
	}
	// The query API wants a read token.
	for tok, want := range map[string]int{"": 401, wtok: 403, rtok: 200} {
		req, _ := http.NewRequest("GET", ts.httpURL+"/api/v1/series?match[]=rw", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (want == 200 && !strings.Contains(string(b), `"__name__":"rw"`)) {
			t.Errorf("/api/v1/series with token %q: %d %s, want %d", tok, resp.StatusCode, b, want)
		}
	}
	// Health and metrics stay open for probes and scrapers.
	if code, _ := httpGet(t, ts.httpURL+"/healthz"); code != 200 {
		t.Errorf("/healthz with auth on: %d", code)
	}
	if _, m := httpGet(t, ts.httpURL+"/metrics"); !strings.Contains(m, `headroom_ingest_requests_total{outcome="unauthenticated",protocol="remote_write"} 2`) {
		t.Errorf("/metrics does not count refused tokens")
	}
}

// TestBinaryDecompressesGzip: the Collector's otlp exporter sends gzip by
// default, so the binary (not only this test, whose OpenTelemetry SDK
// registers gzip on its own) must link gRPC's gzip decompressor.
func TestBinaryDecompressesGzip(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	if !strings.Contains(string(out), "google.golang.org/grpc/encoding/gzip\n") {
		t.Fatal("the headroom binary does not link google.golang.org/grpc/encoding/gzip")
	}
}
