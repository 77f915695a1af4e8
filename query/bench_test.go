package query_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

// BenchmarkScanRate: sum(rate(x[5m])) over 100 series of a day at 10 s
// (864,000 samples, stored and checkpointed), range query at a 5-minute
// step: the raw scan speed of issue 4, in process.
func BenchmarkScanRate(b *testing.B) {
	db, err := storage.Open(b.TempDir(), storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
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
