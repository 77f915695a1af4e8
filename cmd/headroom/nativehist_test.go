package main

import (
	"context"
	"math"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
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
