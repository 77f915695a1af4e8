package query_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

// histRolledUp writes three days of native histograms (counters with
// resets, with and without hints, new buckets, coarser schemas and float
// counts now and then; a gauge; one of custom buckets that turns
// exponential; stale markers), rolls them up, then writes late samples
// into one of the rolled-up days, which a query computes from raw.
func histRolledUp(t *testing.T) (histSrc, int64) {
	t.Helper()
	end := time.Now().Add(-48 * time.Hour).Truncate(24 * time.Hour)
	c := &fixedClock{end}
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour, Now: c.Now, ChunkSamples: 50})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := rand.New(rand.NewPCG(11, 12))
	start := end.Add(-3 * 24 * time.Hour).UnixMilli()
	type sample struct {
		ls series.Labels
		t  int64
		h  *series.Histogram
	}
	var late []sample
	for s := 0; s < 6; s++ {
		ls := series.FromStrings("__name__", "lat", "i", fmt.Sprint(s))
		app := db.Appender()
		h := &series.Histogram{Schema: 3, ZeroThreshold: 1e-9, PositiveSpans: []series.Span{{Offset: 1, Length: 4}}, PositiveBuckets: make([]float64, 4)}
		if s == 5 {
			h.Schema, h.ZeroThreshold, h.CustomValues = series.CustomBucketsSchema, 0, []float64{0.1, 0.5, 1, 5}
		}
		ts := start + r.Int64N(60_000)
		for ts < end.UnixMilli() {
			h = h.Clone()
			h.CounterReset = 0
			switch x := r.IntN(120); {
			case s == 4: // a gauge
				h.CounterReset = 3
				for i := range h.PositiveBuckets {
					h.PositiveBuckets[i] = float64(r.IntN(50))
				}
			case x < 2: // a reset, hinted or not
				clear(h.PositiveBuckets)
				h.Sum = 0
				h.CounterReset = uint8(x)
			case x == 2 && h.Schema != series.CustomBucketsSchema:
				h.PositiveSpans = append(slices.Clone(h.PositiveSpans), series.Span{Offset: 1, Length: 1})
				h.PositiveBuckets = append(h.PositiveBuckets, 0)
			case x == 3 && h.Schema > 0:
				h = coarser(h)
			case x == 4:
				h.Float = !h.Float
			case x == 5 && s == 5 && h.Schema == series.CustomBucketsSchema:
				h = &series.Histogram{Schema: 2, PositiveSpans: []series.Span{{Offset: 0, Length: 2}}, PositiveBuckets: make([]float64, 2)}
			}
			total := 0.0
			for i := range h.PositiveBuckets {
				if s != 4 {
					h.PositiveBuckets[i] += float64(r.IntN(6))
				}
				total += h.PositiveBuckets[i]
			}
			h.Count = total
			h.Sum += float64(r.IntN(1000)) / 10
			out := h
			if r.IntN(400) == 0 {
				out = &series.Histogram{Sum: series.StaleNaN}
			}
			if ts > end.UnixMilli()-26*3600_000 && ts < end.UnixMilli()-20*3600_000 && r.IntN(4) == 0 {
				late = append(late, sample{ls, ts, out})
			} else if err := app.AppendHistogram(ls, ts, out); err != nil {
				t.Fatal(err)
			}
			ts += 1000 + r.Int64N(40_000)
			if r.IntN(2000) == 0 {
				ts += 2 * 3600_000 // a gap
			}
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	rollUpDays(t, db, c, end)
	app := db.Appender()
	for _, x := range late {
		if err := app.AppendHistogram(x.ls, x.t, x.h); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	return histSrc{src{db}}, end.UnixMilli()
}

// coarser is h at the next coarser schema: pairs of buckets merged.
func coarser(h *series.Histogram) *series.Histogram {
	c := h.Clone()
	c.Schema--
	var idx []int32
	i := int32(0)
	for _, sp := range h.PositiveSpans {
		i += sp.Offset
		for k := uint32(0); k < sp.Length; k++ {
			idx = append(idx, i)
			i++
		}
	}
	var spans []series.Span
	var buckets []float64
	last := int32(math.MinInt32)
	for k, x := range idx {
		j := (x - 1) >> 1
		if x > 0 {
			j = (x + 1) >> 1
		}
		if j == last {
			buckets[len(buckets)-1] += h.PositiveBuckets[k]
			continue
		}
		if len(spans) > 0 && j == last+1 {
			spans[len(spans)-1].Length++
		} else {
			off := j
			if len(spans) > 0 {
				off = j - last - 1
			}
			spans = append(spans, series.Span{Offset: off, Length: 1})
		}
		buckets = append(buckets, h.PositiveBuckets[k])
		last = j
	}
	c.PositiveSpans, c.PositiveBuckets = spans, buckets
	return c
}

// Property: rate, increase, delta, count_over_time, last_over_time and
// present_over_time over native histograms give from a tier, bit for
// bit, what they give from the raw samples, with the same annotations,
// whatever resets, schema changes and kinds of buckets the windows hold;
// and histogram_quantile over a 1h rate, summed, within rounding.
func TestHistogramTiersAnswerAsRaw(t *testing.T) {
	s, end := histRolledUp(t)
	eng := &query.Engine{}
	raw := query.WithTier(context.Background(), "raw")
	auto := context.Background()
	start := end - 2*24*3600_000
	for _, fn := range []string{"rate", "increase", "delta", "count_over_time", "last_over_time", "present_over_time"} {
		for _, c := range []struct {
			window, step time.Duration
			tier         string
		}{{5 * time.Minute, 5 * time.Minute, "5m"}, {time.Hour, time.Hour, "1h"}, {2 * time.Hour, time.Hour, "1h"}, {15 * time.Minute, 30 * time.Minute, "5m"}, {24 * time.Hour, 24 * time.Hour, "1d"}} {
			q := fmt.Sprintf("%s(lat[%s])", fn, model(c.window))
			want, err := eng.Range(raw, s, q, start, end, c.step.Milliseconds())
			if err != nil {
				t.Fatal(err)
			}
			got, err := eng.Range(auto, s, q, start, end, c.step.Milliseconds())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(got.Tiers, c.tier) || !slices.Contains(got.Tiers, "raw") {
				t.Fatalf("%s step %v: tiers %v, want %s and raw (the late day)", q, c.step, got.Tiers, c.tier)
			}
			if got.Samples >= want.Samples {
				t.Errorf("%s: the tier loaded %d buckets, raw %d samples", q, got.Samples, want.Samples)
			}
			if !slices.Equal(got.Warnings, want.Warnings) || !slices.Equal(got.Infos, want.Infos) {
				t.Errorf("%s: annotations %v %v, raw %v %v", q, got.Warnings, got.Infos, want.Warnings, want.Infos)
			}
			sameHistResults(t, q, got, want, 0)
		}
	}
	q := `histogram_quantile(0.99, sum(rate(lat{i!="4"}[1h])))`
	want, err := eng.Range(raw, s, q, start, end, 3600_000)
	if err != nil {
		t.Fatal(err)
	}
	got, err := eng.Range(auto, s, q, start, end, 3600_000)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got.Tiers, "1h") {
		t.Fatalf("%s: tiers %v", q, got.Tiers)
	}
	sameHistResults(t, q, got, want, 1e-9)
}

// sameHistResults compares results' floats and histograms: bit for bit
// with tol 0, else within tol relatively.
func sameHistResults(t *testing.T, q string, got, want *query.Result, tol float64) {
	t.Helper()
	if len(got.Series) != len(want.Series) {
		t.Fatalf("%s: %d series, raw %d", q, len(got.Series), len(want.Series))
	}
	near := func(a, b float64) bool {
		if tol == 0 {
			return math.Float64bits(a) == math.Float64bits(b) || math.IsNaN(a) && math.IsNaN(b)
		}
		return a == b || math.IsNaN(a) && math.IsNaN(b) || math.Abs(a-b) <= tol*math.Max(math.Abs(a), math.Abs(b))
	}
	steps := 0
	for i := range want.Series {
		g, w := got.Series[i], want.Series[i]
		if g.Labels.String() != w.Labels.String() || len(g.Points) != len(w.Points) || len(g.Histograms) != len(w.Histograms) {
			t.Fatalf("%s: series %s with %d points and %d histograms, raw %s with %d and %d", q, g.Labels, len(g.Points), len(g.Histograms), w.Labels, len(w.Points), len(w.Histograms))
		}
		for j := range w.Points {
			if g.Points[j].T != w.Points[j].T || !near(g.Points[j].V, w.Points[j].V) {
				t.Fatalf("%s: %s at %d: %v, raw %v", q, w.Labels, w.Points[j].T, g.Points[j].V, w.Points[j].V)
			}
		}
		for j := range w.Histograms {
			a, b := g.Histograms[j], w.Histograms[j]
			if a.T != b.T {
				t.Fatalf("%s: %s: histogram at %d, raw at %d", q, w.Labels, a.T, b.T)
			}
			if tol == 0 && !a.H.Equals(b.H) {
				t.Fatalf("%s: %s at %d:\n got %v\nraw %v", q, w.Labels, a.T, a.H, b.H)
			}
			if !near(a.H.Count, b.H.Count) || !near(a.H.Sum, b.H.Sum) {
				t.Fatalf("%s: %s at %d: count %v sum %v, raw %v %v", q, w.Labels, a.T, a.H.Count, a.H.Sum, b.H.Count, b.H.Sum)
			}
		}
		steps += len(w.Points) + len(w.Histograms)
	}
	if steps == 0 {
		t.Fatalf("%s: no answer at any step", q)
	}
}
