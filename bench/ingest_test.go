package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/protobuf/proto"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	prompb "github.com/headroomdb/headroom/proto/prometheus"
	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

// The ingest benchmark's hand-built request bodies must decode with the
// generated code to the intended series, samples and timestamps, after
// patching, or the benchmark would measure refusals.
func TestBuildRequest(t *testing.T) {
	sh := shape{name: "t", series: 3, perSeries: 2, step: 1000, advance: 10_000}
	const base = 1_700_000_000_000
	for _, protocol := range []string{"grpc", "remote_write", "otlp"} {
		w := buildRequest(protocol, sh, 7)
		w.patch(base)
		var times []int64
		var nLabels int
		switch protocol {
		case "grpc":
			var m headroomv1.WriteRequest
			if err := proto.Unmarshal(w.b, &m); err != nil {
				t.Fatal(err)
			}
			for _, s := range m.Series {
				nLabels += len(s.Labels)
				for _, x := range s.Samples {
					times = append(times, x.TimestampMs)
				}
			}
		case "remote_write":
			var m prompb.WriteRequest
			if err := proto.Unmarshal(w.b, &m); err != nil {
				t.Fatal(err)
			}
			for _, s := range m.Timeseries {
				nLabels += len(s.Labels)
				for _, x := range s.Samples {
					times = append(times, x.Timestamp)
				}
			}
		case "otlp":
			var m colmetricspb.ExportMetricsServiceRequest
			if err := proto.Unmarshal(w.b, &m); err != nil {
				t.Fatal(err)
			}
			for _, met := range m.ResourceMetrics[0].ScopeMetrics[0].Metrics {
				for _, p := range met.GetGauge().DataPoints {
					nLabels += len(p.Attributes) + 3 // + __name__, job, instance
					times = append(times, int64(p.TimeUnixNano/1e6))
				}
			}
		}
		// 3 series of 6 labels; OTLP: 6 points, each of 6 labels once mapped.
		wantLabels := 18
		if protocol == "otlp" {
			wantLabels = 36
		}
		if len(times) != 6 || nLabels != wantLabels {
			t.Errorf("%s: %d samples, %d labels; want 6 and %d", protocol, len(times), nLabels, wantLabels)
		}
		for i, ts := range times {
			if want := int64(base + (i%2)*1000); ts != want {
				t.Errorf("%s: sample %d at %d, want %d", protocol, i, ts, want)
			}
		}
	}
}

// The query shapes must be valid PromQL for the engine (Prometheus's
// rules: no name collisions after a function), or the benchmark would
// measure errors.
func TestQueryShapesEvaluate(t *testing.T) {
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UnixMilli()
	app := db.Appender()
	for _, m := range cpuMetrics {
		for h := 0; h < 9; h++ {
			app.Append(series.FromStrings("__name__", "cpu_"+m, "hostname", fmt.Sprintf("host_%d", h)), now-60_000, 95)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	eng := &query.Engine{}
	for _, q := range queryShapes {
		var err error
		var r *query.Result
		if q.rng > 0 {
			r, err = eng.Range(context.Background(), benchSource{db}, q.query, now-q.rng.Milliseconds(), now, q.step.Milliseconds())
		} else {
			r, err = eng.Instant(context.Background(), benchSource{db}, q.query, now)
		}
		if err != nil || len(r.Series) == 0 {
			t.Errorf("%s: %v, %v", q.name, r, err)
		}
	}
}

// The downsampling benchmark runs end to end at a small scale (its own
// checks: every host answered, from raw and from the tiers).
func TestBenchRollupSmall(t *testing.T) {
	results = nil
	benchRollup(3, 2, 3, 1, "", "", 2)
	if len(results) < 8 {
		t.Fatalf("%d figures recorded", len(results))
	}
}
