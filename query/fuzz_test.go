package query_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage/series"
)

// FuzzQuery evaluates arbitrary query text over a small real data
// directory: the engine must answer or refuse with one of its errors,
// never panic, whatever the parser lets through; native histograms are in
// the data, beside and in place of floats. Seed corpus:
// testdata/fuzz/FuzzQuery.
func FuzzQuery(f *testing.F) {
	for _, q := range []string{
		`sum by (job) (rate(c[1m]))`, `g offset 1m`, `g @ 100`, `max_over_time(g[5m:30s])`,
		`g / on(job) group_left(x) c`, `topk(2, g)`, `histogram_quantile(0.9, g)`,
		`label_replace(g, "a", "$1", "job", "(.*)")`, `count_values("v", g)`, `g > bool 2`,
		`absent(nope)`, `quantile_over_time(0.5, g[1m])`, `-g`, `time() - timestamp(g)`,
		`increase(c[1m] anchored)`, `rate(c[1m] smoothed)`, `g smoothed`, `g + fill(0) on(job) c`,
		`info(g, {job=~".+"})`, `limitk(1, g)`, `limit_ratio(0.5, g)`, `integral(g[1m], 1)`,
		`max by (__name__) (label_replace(rate({__name__=~"g|c"}[1m]), "__name__", "$1", "__name__", "(.+)"))`,
		`g[step()*2:range()+1s]`, `double_exponential_smoothing(g[2m], 0.5, 0.5)`,
	} {
		f.Add(q)
	}
	s := load(f, map[string][]float64{
		"__name__,g,job,a": {1, 2, 3, 4, 5},
		"__name__,g,job,b": {5, 4, 3, 2, 1},
		"__name__,c,job,a": {1, 5, 2, 8, 9},
	}, 30)
	// Native histograms too: a counter, and a series that turns from
	// floats to histograms.
	db := s.(src).db
	app := db.Appender()
	for i := range 5 {
		n := float64(i + 1)
		h := &series.Histogram{Schema: 1, Count: 3 * n, Sum: n, ZeroCount: n, PositiveSpans: []series.Span{{Offset: -1, Length: 2}}, PositiveBuckets: []float64{n, n}}
		if err := app.AppendHistogram(series.FromStrings("__name__", "h", "job", "a"), sec(i*30), h); err != nil {
			f.Fatal(err)
		}
		if i >= 2 {
			if err := app.AppendHistogram(series.FromStrings("__name__", "g", "job", "c"), sec(i*30), h); err != nil {
				f.Fatal(err)
			}
		} else if err := app.Append(series.FromStrings("__name__", "g", "job", "c"), sec(i*30), n); err != nil {
			f.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		f.Fatal(err)
	}
	for _, q := range []string{`histogram_quantile(0.9, sum(rate(h[1m])))`, `h * 2 + h`, `h </ 1`, `histogram_count(g)`, `sum_over_time(h[2m])`, `h == h`} {
		f.Add(q)
	}
	eng := &query.Engine{MaxSamples: 100_000, Timeout: 5 * time.Second}
	f.Fuzz(func(t *testing.T, q string) {
		_, err := eng.Instant(context.Background(), s, q, sec(120))
		if err == nil {
			_, err = eng.Range(context.Background(), s, q, sec(0), sec(120), 30_000)
		}
		if err != nil && !errors.Is(err, query.ErrBadQuery) && !errors.Is(err, query.ErrExec) &&
			!errors.Is(err, query.ErrTooLarge) && !errors.Is(err, query.ErrTimeout) {
			t.Fatalf("%q: unexpected error %v", q, err)
		}
	})
}
