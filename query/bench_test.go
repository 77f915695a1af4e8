package query_test

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

// BenchmarkScanRate: sum(rate(x[5m])) over 100 series of a day at 10 s
// (864,000 samples), range query at a 5-minute step: the raw scan speed
// of issue 4, in process. checkpointed: the chunks were just written
// (Pebble's memtable); compacted: flushed, compacted and reopened, as a
// server finds a day-old data set.
func BenchmarkScanRate(b *testing.B) {
	dir := b.TempDir()
	db, err := storage.Open(dir, storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { db.Close() }()
	end := time.Now().Truncate(time.Hour).UnixMilli()
	start := end - 24*3600_000
	r := rand.New(rand.NewPCG(1, 2))
	app := db.Appender()
	for h := 0; h < 100; h++ {
		ls := series.FromStrings("__name__", "x", "host", strconv.Itoa(h))
		v := 0.0
		for t := start; t <= end; t += 10_000 {
			v += float64(r.IntN(10))
			app.Append(ls, t, v)
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Checkpoint(); err != nil {
		b.Fatal(err)
	}
	scan := func(b *testing.B) {
		eng := &query.Engine{MaxSamples: 10_000_000}
		b.ReportAllocs()
		b.ResetTimer()
		samples := 0
		for i := 0; i < b.N; i++ {
			res, err := eng.Range(context.Background(), src{db}, "sum(rate(x[5m]))", start, end, 5*60_000)
			if err != nil {
				b.Fatal(err)
			}
			samples += res.Samples
		}
		b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
	}
	b.Run("checkpointed", scan)
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := db.Compact(); err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	if db, err = storage.Open(dir, storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour}); err != nil {
		b.Fatal(err)
	}
	b.Run("compacted", scan)
}

// BenchmarkSubquerySelector: avg_over_time of a 10 s subquery of a
// selector over 100 series x 12 h at a 1-hour step (the dashboard shape
// that needs label_replace), in process.
func BenchmarkSubquerySelector(b *testing.B) {
	db, err := storage.Open(b.TempDir(), storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	end := time.Now().Truncate(time.Hour).UnixMilli()
	start := end - 13*3600_000
	app := db.Appender()
	r := rand.New(rand.NewPCG(3, 4))
	for h := 0; h < 100; h++ {
		ls := series.FromStrings("__name__", "x", "host", strconv.Itoa(h))
		v := 50.0 // a CPU percentage doing a random walk, as the devops set
		for t := start; t <= end; t += 10_000 {
			v = min(100, max(0, v+float64(r.IntN(5)-2)))
			app.Append(ls, t, v)
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Checkpoint(); err != nil {
		b.Fatal(err)
	}
	eng := &query.Engine{MaxSamples: 10_000_000}
	q := `avg by (host) (avg_over_time(label_replace(x, "m", "$1", "__name__", "(.+)")[1h:10s]))`
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := eng.Range(context.Background(), src{db}, q, end-12*3600_000, end, 3600_000); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTierAvg: avg by host of avg_over_time[1h] over 100 series x 10
// days at 60 s, 1-hour step, from the 1h tier (raw=true: from samples).
func BenchmarkTierAvg(b *testing.B) {
	end := time.Now().Add(-48 * time.Hour).Truncate(24 * time.Hour)
	c := &fixedClock{end}
	db, err := storage.Open(b.TempDir(), storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour, Now: c.Now})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	r := rand.New(rand.NewPCG(1, 9))
	start := end.Add(-10 * 24 * time.Hour).UnixMilli()
	for s := 0; s < 100; s++ {
		ls := series.FromStrings("__name__", "cpu", "host", strconv.Itoa(s/10), "cpu", strconv.Itoa(s%10))
		app := db.Appender()
		v := 50.0
		for ts := start; ts < end.UnixMilli(); ts += 60_000 {
			v = min(100, max(0, v+float64(r.IntN(5)-2)))
			app.Append(ls, ts, v)
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	c.now = end.Add(24 * time.Hour)
	if err := db.Checkpoint(); err != nil {
		b.Fatal(err)
	}
	if err := db.RunRollups(); err != nil {
		b.Fatal(err)
	}
	eng := &query.Engine{}
	for _, tier := range []string{"raw", "auto"} {
		b.Run(tier, func(b *testing.B) {
			ctx := query.WithTier(context.Background(), tier)
			for i := 0; i < b.N; i++ {
				if _, err := eng.Range(ctx, src{db}, `avg by (host) (avg_over_time(cpu[1h]))`, start+3600_000, end.UnixMilli(), 3600_000); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// dashboardShapes are the query shapes of make bench's dashboard, over 10
// CPU metrics x 8 hosts x 13 h at 10 s (the last one is issue 15's: the
// maximum of each metric, named, from label_replace keeping __name__
// through max_over_time, which delayed name removal allows).
var dashboardShapes = []struct{ name, q string }{
	{"max_over_time_1h_1host", `max_over_time(cpu_user{host="3"}[1h])`},
	{"subquery_8metrics", `max_over_time(label_replace({__name__=~"cpu_(user|system|idle|nice|iowait|irq|softirq|steal)"}, "metric", "$1", "__name__", "(.+)")[1h:10s])`},
	{"avg_by_host", `avg by (host) (avg_over_time(label_replace({__name__=~"cpu_.+"}, "metric", "$1", "__name__", "(.+)")[1h:10s]))`},
	{"rate_sum", `sum by (host) (rate(cpu_user[5m]))`},
	{"max_by_name", `max by (__name__) (label_replace(max_over_time({__name__=~"cpu_.+"}[1h]), "__name__", "$1", "__name__", "(.+)"))`},
}

// BenchmarkDashboardShapes: each shape as a 12 h range query at a 1-hour
// step, in process, over a checkpointed directory.
func BenchmarkDashboardShapes(b *testing.B) {
	db, err := storage.Open(b.TempDir(), storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	end := time.Now().Truncate(time.Hour).UnixMilli()
	start := end - 13*3600_000
	r := rand.New(rand.NewPCG(5, 6))
	for _, m := range []string{"user", "system", "idle", "nice", "iowait", "irq", "softirq", "steal", "guest", "guest_nice"} {
		for h := 0; h < 8; h++ {
			ls := series.FromStrings("__name__", "cpu_"+m, "host", strconv.Itoa(h))
			app := db.Appender()
			v := 50.0
			for t := start; t <= end; t += 10_000 {
				v = min(100, max(0, v+float64(r.IntN(5)-2)))
				app.Append(ls, t, v)
			}
			if err := app.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := db.Checkpoint(); err != nil {
		b.Fatal(err)
	}
	eng := &query.Engine{MaxSamples: 10_000_000}
	for _, s := range dashboardShapes {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := eng.Range(context.Background(), src{db}, s.q, end-12*3600_000, end, 3600_000); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHistogramQuantile: histogram_quantile(0.99, sum(rate(x[5m])))
// over 20 series of latency histograms (schema 3, about 40 buckets) for
// 6 hours at 15 s, a range query at a 1-minute step: the arithmetic a
// latency dashboard costs over raw native histograms.
func BenchmarkHistogramQuantile(b *testing.B) {
	db, err := storage.Open(b.TempDir(), storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	end := time.Now().Truncate(time.Hour).UnixMilli()
	start := end - 6*3600_000
	writeLatencyPods(b, db, start, end, 15_000)
	if err := db.Checkpoint(); err != nil {
		b.Fatal(err)
	}
	eng := &query.Engine{}
	b.ReportAllocs()
	for b.Loop() {
		res, err := eng.Range(context.Background(), src{db}, "histogram_quantile(0.99, sum(rate(lat[5m])))", start+300_000, end, 60_000)
		if err != nil || len(res.Series) != 1 {
			b.Fatal(res, err)
		}
	}
}

// BenchmarkHistogramTierQuantile: a 30-day p99 of 20 pods' latency
// histograms at 1h steps, from the 1h tier.
func BenchmarkHistogramTierQuantile(b *testing.B) {
	end := time.Now().UTC().Truncate(24 * time.Hour).Add(-24 * time.Hour)
	start := end.Add(-30 * 24 * time.Hour)
	c := &fixedClock{end}
	// A quiet logger: the downsampler's line would break the benchmark's.
	db, err := storage.Open(b.TempDir(), storage.Options{DisableBackground: true, Retention: 60 * 24 * time.Hour, Now: c.Now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	writeLatencyPods(b, db, start.UnixMilli()+60_000, end.UnixMilli(), 60_000)
	rollUpDays(b, db, c, end)
	eng := &query.Engine{}
	b.ReportAllocs()
	for b.Loop() {
		res, err := eng.Range(context.Background(), src{db}, "histogram_quantile(0.99, sum(rate(lat[1h])))", start.UnixMilli()+3600_000, end.UnixMilli(), 3600_000)
		if err != nil || len(res.Series) != 1 || !slices.Equal(res.Tiers, []string{"1h"}) {
			b.Fatal(res, err)
		}
	}
}

// writeLatencyPods writes 20 pods' latency histograms ("lat", 40
// buckets, 50 requests a sample) from first to last every step ms, a
// commit a pod.
func writeLatencyPods(b *testing.B, db *storage.DB, first, last, step int64) {
	b.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	app := db.Appender()
	for s := 0; s < 20; s++ {
		ls := series.FromStrings("__name__", "lat", "pod", strconv.Itoa(s))
		h := &series.Histogram{Schema: 3, PositiveSpans: []series.Span{{Offset: -60, Length: 40}}, PositiveBuckets: make([]float64, 40)}
		for t := first; t <= last; t += step {
			for range 50 {
				k := min(max(20+int(r.NormFloat64()*6), 0), 39)
				h.PositiveBuckets[k]++
				h.Count++
				h.Sum += 0.05
			}
			if err := app.AppendHistogram(ls, t, h); err != nil {
				b.Fatal(err)
			}
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}
