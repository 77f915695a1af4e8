package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/proto/prometheus/writev2"
)

// TestServeOTelExponentialHistogram: the OpenTelemetry Go SDK with an
// exponential-histogram view exports through the real gRPC port; the
// server stores one native histogram series per point stream, each
// observation in the bucket whose bounds hold it.
func TestServeOTelExponentialHistogram(t *testing.T) {
	ts := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	exp, err := otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpoint(ts.grpcAddr), otlpmetricgrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "checkout"))
	view := sdkmetric.NewView(sdkmetric.Instrument{Name: "rpc.*"},
		sdkmetric.Stream{Aggregation: sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 160, MaxScale: 20}})
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithView(view),
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))))
	hist, _ := mp.Meter("e2e").Float64Histogram("rpc.latency", unitSeconds())
	values := []float64{0.003, 0.012, 0.012, 0.05, 0.2, 0.21, 1.5}
	for _, v := range values {
		hist.Record(ctx, v)
	}
	// Values this close keep the SDK at scale 20: stored at schema 8,
	// buckets merged.
	tight, _ := mp.Meter("e2e").Float64Histogram("rpc.tight")
	tight.Record(ctx, 1.00001)
	tight.Record(ctx, 1.00002)
	if err := mp.ForceFlush(ctx); err != nil {
		t.Fatalf("OTLP export: %v", err)
	}
	if err := mp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	hs := storedHists(t, ts.db)[`{__name__="rpc_latency_seconds", job="checkout", otel_scope_name="e2e"}`]
	if len(hs) == 0 {
		t.Fatalf("no native histogram stored; stored: %v", storedHists(t, ts.db))
	}
	th := storedHists(t, ts.db)[`{__name__="rpc_tight", job="checkout", otel_scope_name="e2e"}`]
	if len(th) == 0 || th[0].H.Schema != 8 || th[0].H.Count != 2 || len(th[0].H.PositiveBuckets) != 1 || th[0].H.PositiveBuckets[0] != 2 {
		t.Errorf("scale 20 histogram stored as %v, want schema 8 with both values in one bucket", th)
	}
	h := hs[len(hs)-1].H
	sum := 0.0
	for _, v := range values {
		sum += v
	}
	if h.Count != float64(len(values)) || math.Abs(h.Sum-sum) > 1e-9 || h.Schema > 8 || h.Float {
		t.Fatalf("stored %+v, want an integer histogram of count %d, sum %v, schema at most 8", *h, len(values), sum)
	}
	// Each value lies in (base^(i-1), base^i] of its bucket i, base
	// 2^(2^-schema) (the SDK chose the scale that fits MaxSize buckets).
	want := map[int]float64{}
	for _, v := range values {
		want[int(math.Ceil(math.Log2(v)*math.Exp2(float64(h.Schema))))]++
	}
	got := map[int]float64{}
	idx := 0
	k := 0
	for _, sp := range h.PositiveSpans {
		idx += int(sp.Offset)
		for range sp.Length {
			if c := h.PositiveBuckets[k]; c > 0 {
				got[idx] = c
			}
			idx++
			k++
		}
	}
	if len(got) != len(want) {
		t.Fatalf("buckets %v, want %v", got, want)
	}
	for i, c := range want {
		if got[i] != c {
			t.Errorf("bucket %d holds %v, want %v (all: %v)", i, got[i], c, got)
		}
	}
}

// TestServeNativeHistogramQueries: native histograms written by remote-
// write 2.0 answer PromQL over the HTTP API as Prometheus does: the raw
// value in the "histogram" shape, rate and histogram_quantile over it,
// sum across series, and the same after a checkpoint (read back from the
// stored chunks, not the head).
func TestServeNativeHistogramQueries(t *testing.T) {
	ts := startServer(t)
	now := time.Now().Add(-10 * time.Minute).Truncate(time.Minute).UnixMilli()
	// Two pods, a scrape every 15 s for 5 minutes: each scrape observes
	// 10 requests of 0.1 s to 0.2 s (schema 0: the bucket (0.125, 0.25],
	// index -2) and 2 of 1 s to 2 s (bucket (1, 2], index 1).
	req := &writev2.Request{Symbols: []string{"", "__name__", "rpc_seconds", "pod", "a", "b"}}
	for p, pod := range []uint32{4, 5} {
		ts := &writev2.TimeSeries{LabelsRefs: []uint32{1, 2, 3, pod}}
		for k := int64(0); k <= 20; k++ {
			n := uint64(12 * (k + 1) * int64(p+1))
			ts.Histograms = append(ts.Histograms, &writev2.Histogram{
				Count: &writev2.Histogram_CountInt{CountInt: n}, Sum: float64(n) * 0.3, Schema: 0, Timestamp: now + k*15_000,
				PositiveSpans:  []*writev2.BucketSpan{{Offset: -2, Length: 1}, {Offset: 2, Length: 1}},
				PositiveDeltas: []int64{int64(n) * 10 / 12, int64(n)*2/12 - int64(n)*10/12},
			})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	if resp, msg := postRW(t, ts.httpURL, rw2Type, "snappy", rw2Body(t, req)); resp.StatusCode != 204 || resp.Header.Get("X-Prometheus-Remote-Write-Histograms-Written") != "42" {
		t.Fatalf("write: %d %q %v", resp.StatusCode, msg, resp.Header)
	}
	at := strconv.FormatInt((now+300_000)/1000, 10)
	query := func(ts *testServer, q string) string {
		t.Helper()
		code, body := httpGet(t, ts.httpURL+"/api/v1/query?time="+at+"&query="+url.QueryEscape(q))
		if code != 200 {
			t.Fatalf("%s: %d %s", q, code, body)
		}
		return body
	}
	check := func(ts *testServer, when string) {
		t.Helper()
		raw := query(ts, `rpc_seconds{pod="a"}`)
		if !strings.Contains(raw, `"histogram":[`+at+`,{"count":"252","sum":"75.6","buckets":[[0,"0.125","0.25","210"],[0,"1","2","42"]]}]`) {
			t.Errorf("%s: raw histogram answer %s", when, raw)
		}
		// 12 observations every 15 s for pod a, 24 for b: 2.4/s together,
		// 2 of 12 of them in (1, 2]; the 0.9 quantile lies in that bucket.
		one := func(q string) float64 {
			t.Helper()
			body := query(ts, q)
			var ans struct {
				Data struct {
					Result []struct {
						Value [2]any `json:"value"`
					} `json:"result"`
				} `json:"data"`
			}
			if err := json.Unmarshal([]byte(body), &ans); err != nil || len(ans.Data.Result) != 1 {
				t.Fatalf("%s: %s: %s (%v)", when, q, body, err)
			}
			s, _ := ans.Data.Result[0].Value[1].(string)
			v, _ := strconv.ParseFloat(s, 64)
			return v
		}
		if v := one(`histogram_count(sum(rate(rpc_seconds[1m])))`); math.Abs(v-2.4) > 1e-9 {
			t.Errorf("%s: histogram_count(sum(rate)) = %v, want 2.4", when, v)
		}
		if v := one(`histogram_quantile(0.9, sum(rate(rpc_seconds[1m])))`); !(v > 1 && v <= 2) {
			t.Errorf("%s: 0.9 quantile %v, want it in (1, 2]", when, v)
		}
	}
	check(ts, "from the head")

	// gRPC answers the same histogram, bucket by bucket.
	qs, err := headroomv1.NewQueryClient(ts.dial(t)).InstantQuery(context.Background(), &headroomv1.InstantQueryRequest{Query: `rpc_seconds{pod="a"}`, TimeMs: now + 300_000})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := qs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Series) != 1 || len(msg.Series[0].Histograms) != 1 || len(msg.Series[0].Samples) != 0 {
		t.Fatalf("gRPC answer %v, want one series with one histogram", msg)
	}
	hp := msg.Series[0].Histograms[0]
	if hp.Count != 252 || math.Abs(hp.Sum-75.6) > 1e-9 || len(hp.Buckets) != 2 || hp.Buckets[0].Lower != 0.125 || hp.Buckets[0].Upper != 0.25 ||
		hp.Buckets[0].Count != 210 || hp.Buckets[0].Boundaries != 0 || hp.Buckets[1].Count != 42 {
		t.Errorf("gRPC histogram %v", hp)
	}

	// headroom query prints a histogram as its count, sum and buckets.
	var out bytes.Buffer
	if err := runQuery([]string{"--server", ts.grpcAddr, `rpc_seconds{pod="a"}`, "--time", at}, &out); err != nil {
		t.Fatal(err)
	}
	if want := `rpc_seconds{pod="a"}  {count:252 sum:75.6 (0.125,0.25]:210 (1,2]:42}`; !strings.Contains(out.String(), want) {
		t.Errorf("headroom query printed\n%s\nwant a line with\n%s", out.String(), want)
	}

	if err := ts.db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	check(ts, "from the stored chunks")
}
