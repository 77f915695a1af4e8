package report_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/query/report"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

type src struct{ db *storage.DB }

func (s src) Querier(mint, maxt int64) (query.Querier, error) {
	return s.db.Querier(max(mint, storage.MinTime), min(maxt, storage.MaxTime))
}

const (
	base, amp, threshold = 0.3, 0.1, 0.8
	growth               = 0.004 // per day
	days                 = 60
)

// model is the noiseless utilisation of a host at t (ms): a daily cycle
// peaking at 15:00 UTC, on top of a level that grows linearly (or not).
func model(t int64, slope, level float64) float64 {
	d := float64(t) / 86400_000
	hour := math.Mod(d, 1) * 24
	return level + slope*d + amp*math.Sin((hour-9)/24*2*math.Pi)
}

func setup(t *testing.T) (src, time.Time, time.Time) {
	t.Helper()
	end := time.Now().Truncate(24 * time.Hour)
	start := end.Add(-days * 24 * time.Hour)
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true, Retention: 100 * 24 * time.Hour, Tiers: []storage.Tier{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := rand.New(rand.NewPCG(1, 2))
	origin := float64(start.UnixMilli()) / 86400_000
	for _, h := range []struct {
		name         string
		slope, level float64
	}{{"grow", growth, base - growth*origin}, {"flat", 0, base}, {"hot", 0, 0.9}} {
		ls := series.FromStrings("__name__", "cpu", "host", h.name)
		app := db.Appender()
		for ts := start.UnixMilli(); ts < end.UnixMilli(); ts += 300_000 {
			app.Append(ls, ts, model(ts, h.slope, h.level)+r.NormFloat64()*0.005)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	return src{db}, start, end
}

// Known trend, daily seasonality and noise: the forecast date is within
// 5% of the true crossing; a flat series is "not within the horizon"; a
// series above the threshold says so; the busiest hour is the model's.
func TestReportForecast(t *testing.T) {
	s, start, end := setup(t)
	rep, err := report.Run(context.Background(), &query.Engine{}, s, report.Options{
		Query: "cpu", Start: start, End: end, Threshold: threshold, HasThreshold: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Step != time.Hour || len(rep.Groups) != 3 {
		t.Fatalf("step %v, %d groups", rep.Step, len(rep.Groups))
	}
	by := map[string]report.Group{}
	for _, g := range rep.Groups {
		by[g.Labels.Get("host")] = g
	}
	// The truth: the noiseless model's daily p95 of its 5-minute samples
	// (the level the report shows and forecasts) reaches the threshold
	// on this day.
	origin := float64(start.UnixMilli()) / 86400_000
	level := base - growth*origin
	var truth time.Time
	for d := end.Truncate(24 * time.Hour); d.Before(end.Add(400 * 24 * time.Hour)); d = d.Add(24 * time.Hour) {
		var vs []float64
		for m := 5; m <= 24*60; m += 5 {
			vs = append(vs, model(d.Add(time.Duration(m)*time.Minute).UnixMilli(), growth, level))
		}
		sort.Float64s(vs)
		if p95 := quantileOf(vs, 0.95); p95 >= threshold {
			truth = d.Add(24 * time.Hour) // the day is over: its level is known
			break
		}
	}
	g := by["grow"]
	want := truth.Sub(end)
	t.Logf("grow: forecast %v, truth %v after the end", g.Crossing.Sub(end).Round(time.Hour), want)
	if got := g.Crossing.Sub(end); !g.CrossingInHorizon || math.Abs(float64(got-want)) > 0.05*float64(want) {
		t.Errorf("grow: crossing in %v, true crossing in %v (trend %.5f/day, R² %.3f)", got.Round(time.Hour), want, g.TrendPerDay, g.TrendR2)
	}
	if math.Abs(g.TrendPerDay-growth) > 0.0005 || g.TrendR2 < 0.95 {
		t.Errorf("grow: trend %v/day R² %v, want %v and near 1", g.TrendPerDay, g.TrendR2, growth)
	}
	// The forecast says how sure it is, and forecasts the level shown:
	// the last whole day's p95 of the samples.
	if g.Forecast != "crosses" || g.CrossingLo.After(g.Crossing) || (!g.CrossingHi.IsZero() && g.CrossingHi.Before(g.Crossing)) || g.CrossingLo.IsZero() {
		t.Errorf("grow: forecast %q, interval %v .. %v around %v", g.Forecast, g.CrossingLo, g.CrossingHi, g.Crossing)
	}
	if lastDay := g.DailyP95[len(g.DailyP95)-1]; math.Abs(g.CurrentLevel-lastDay) > 0.02 {
		t.Errorf("grow: current level %v, the last day's p95 %v", g.CurrentLevel, lastDay)
	}
	if f := by["flat"]; f.Forecast != "not within the horizon" || f.ForecastWhy == "" {
		t.Errorf("flat: forecast %q (%s)", f.Forecast, f.ForecastWhy)
	}
	if g.BusiestHour != 15 {
		t.Errorf("grow: busiest hour %d, want 15", g.BusiestHour)
	}
	if f := by["flat"]; f.CrossingInHorizon || !math.IsInf(f.DaysUntilCrossing, 1) || f.Headroom < 0.35 || f.HeadroomPct < 40 {
		t.Errorf("flat: %+v", f)
	}
	if h := by["hot"]; !h.AlreadyAboveThreshold || h.Headroom >= 0 {
		t.Errorf("hot: %+v", h)
	}
	// Sorted by days until the threshold: hot, grow, flat.
	if rep.Groups[0].Labels.Get("host") != "hot" || rep.Groups[1].Labels.Get("host") != "grow" {
		t.Errorf("order: %s, %s, %s", rep.Groups[0].Labels, rep.Groups[1].Labels, rep.Groups[2].Labels)
	}
	if g.P95 <= g.P50 || g.Max < g.P99 || g.PeakToAverage <= 1 {
		t.Errorf("grow: distribution %+v", g)
	}
}

func TestReportEmptyAndBad(t *testing.T) {
	s, start, end := setup(t)
	_, err := report.Run(context.Background(), &query.Engine{}, s, report.Options{Query: `cpu{host="nope"}`, Start: start, End: end})
	if !errors.Is(err, report.ErrEmpty) {
		t.Errorf("empty selection: %v", err)
	}
	if _, err := report.Run(context.Background(), &query.Engine{}, s, report.Options{Query: "cpu(", Start: start, End: end}); !errors.Is(err, query.ErrBadQuery) {
		t.Errorf("bad query: %v", err)
	}
	if _, err := report.Run(context.Background(), &query.Engine{}, s, report.Options{Query: "cpu", Start: end, End: start}); !errors.Is(err, query.ErrBadQuery) {
		t.Errorf("reversed range: %v", err)
	}
}

// What the distribution is of: raw samples by default for a selector
// (from the rollup sketches when tiers answer), step averages
// ("points"), or 5-minute averages; an expression has points or its
// 5-minute values.
func TestReportPercentileOf(t *testing.T) {
	s, start, end := setup(t)
	run := func(q, of string) (*report.Report, error) {
		return report.Run(context.Background(), &query.Engine{}, s, report.Options{Query: q, Start: start, End: end, PercentileOf: of})
	}
	by := map[string]report.Group{}
	for _, of := range []string{"", "points", "5m-avg"} {
		r, err := run(`cpu{host="grow"}`, of)
		if err != nil {
			t.Fatal(err)
		}
		want := of
		if of == "" {
			want = "samples"
		}
		if r.PercentileOf != want || len(r.Groups) != 1 {
			t.Fatalf("%q: percentiles of %q, %d groups", of, r.PercentileOf, len(r.Groups))
		}
		by[want] = r.Groups[0]
	}
	// Samples reach at least as high as 5-minute averages (the same here:
	// one sample per 5 minutes), which reach higher than hourly ones (the
	// noise and the daily cycle average out).
	if !(by["samples"].Max >= by["5m-avg"].Max && by["5m-avg"].Max > by["points"].Max) {
		t.Errorf("max of samples %v, of 5m averages %v, of hourly points %v", by["samples"].Max, by["5m-avg"].Max, by["points"].Max)
	}
	if math.Abs(by["samples"].Mean-by["points"].Mean) > 0.01 {
		t.Errorf("means differ: %v and %v", by["samples"].Mean, by["points"].Mean)
	}
	if _, err := run(`avg(cpu)`, "samples"); !errors.Is(err, query.ErrBadQuery) {
		t.Errorf("samples of an expression: %v", err)
	}
	if r, err := run(`avg(cpu)`, ""); err != nil || r.PercentileOf != "points" {
		t.Errorf("an expression: %v", err)
	}
	// An expression's 5-minute values (the README's example asks for
	// them): more of them than hourly points, so a higher max.
	r, err := run(`avg by (host) (cpu{host="grow"})`, "5m-avg")
	if err != nil || r.PercentileOf != "5m-avg" || len(r.Groups) != 1 || !(r.Groups[0].Max > by["points"].Max) {
		t.Errorf("5m-avg of an expression: %v %+v", err, r)
	}
}

// A flat series with a daily cycle has no trend whatever the hour the
// range ends at: the days the range cuts (its first and last) have the
// p95 of a part of the day and stay out of the fit. With the first day
// kept from 15 hours on, a range ending at 09:00 found a trend of
// 0.0014/day and a crossing in 282 days (TestReportCommand, run at 09:00).
func TestReportTrendWholeDaysOnly(t *testing.T) {
	s, _, end := setup(t)
	for h := 0; h < 24; h++ {
		e := end.Add(-time.Duration(24-h) * time.Hour)
		rep, err := report.Run(context.Background(), &query.Engine{}, s, report.Options{
			Query: `cpu{host="flat"}`, Start: e.Add(-10 * 24 * time.Hour), End: e, Threshold: threshold, HasThreshold: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		if g := rep.Groups[0]; g.CrossingInHorizon || math.Abs(g.TrendPerDay) > 0.0005 {
			t.Errorf("range ending at %02d:00: trend %.5f/day, crossing in %.0f days", h, g.TrendPerDay, g.DaysUntilCrossing)
		}
	}
}

// rollupSrc is src with the tiers of the engine.
type rollupSrc struct{ src }

func (s rollupSrc) Tiers() []query.Tier {
	var out []query.Tier
	for _, t := range s.db.Tiers() {
		out = append(out, query.Tier{Resolution: t.Resolution, Watermark: t.Watermark, Oldest: t.Oldest, Sketches: t.Sketches})
	}
	return out
}

func (s rollupSrc) EachRollup(tier int, mint, maxt int64, cols uint, shard, shards int, ms []*series.Matcher, f func(series.Labels, *rollup.Columns) error) (query.TierRead, error) {
	rr, err := s.db.EachRollup(tier, mint, maxt, cols, shard, shards, ms, f)
	return query.TierRead{RawDays: rr.RawDays}, err
}

func (s rollupSrc) EachHistRollup(tier int, mint, maxt int64, shard, shards int, ms []*series.Matcher, f func(series.Labels, []rollup.HistBucket) error) (query.TierRead, error) {
	rr, err := s.db.EachHistRollup(tier, mint, maxt, shard, shards, ms, f)
	return query.TierRead{RawDays: rr.RawDays}, err
}

// A report over two years picks its step (a day: 730 points) and reads
// the tiers; a step too small for the range is refused with the smallest
// that fits.
func TestReportLongRange(t *testing.T) {
	end := time.Now().UTC().Truncate(24 * time.Hour)
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true, Retention: 800 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	app := db.Appender()
	for ts := end.Add(-700 * 24 * time.Hour).UnixMilli(); ts < end.UnixMilli(); ts += 3600_000 {
		app.Append(series.FromStrings("__name__", "disk", "host", "a"), ts, float64(ts/86400_000%100))
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	s := rollupSrc{src{db}}
	rep, err := report.Run(context.Background(), &query.Engine{}, s, report.Options{Query: "disk", Start: end.Add(-730 * 24 * time.Hour), End: end})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Step != 24*time.Hour || len(rep.Groups) != 1 || !slices.Contains(rep.Tiers, "1d") || rep.Groups[0].Max != 99 {
		t.Fatalf("two years: step %v, tiers %v, %d groups", rep.Step, rep.Tiers, len(rep.Groups))
	}
	_, err = report.Run(context.Background(), &query.Engine{}, s, report.Options{Query: "disk", Start: end.Add(-730 * 24 * time.Hour), End: end, Step: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "give a step of 1h35m") {
		t.Fatalf("two years at 1h: %v", err)
	}
}

// A latency percentile as the report's level: histogram_quantile over
// native histograms gives a group per pod; a selector of the histograms
// themselves gives no level to report, and no crash.
func TestReportHistogramQuantile(t *testing.T) {
	end := time.Now().Truncate(24 * time.Hour)
	start := end.Add(-3 * 24 * time.Hour)
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour, Tiers: []storage.Tier{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	app := db.Appender()
	for _, pod := range []string{"a", "b"} {
		h := &series.Histogram{Schema: 0, PositiveSpans: []series.Span{{Offset: -3, Length: 4}}, PositiveBuckets: make([]float64, 4)}
		for ts := start.UnixMilli(); ts < end.UnixMilli(); ts += 300_000 {
			for k := range h.PositiveBuckets {
				h.PositiveBuckets[k] += float64(10 * (k + 1))
			}
			h.Count += 100
			h.Sum += 30
			if err := app.AppendHistogram(series.FromStrings("__name__", "lat", "pod", pod), ts, h); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	r, err := report.Run(context.Background(), &query.Engine{}, src{db}, report.Options{Query: `histogram_quantile(0.9, rate(lat[1h]))`, Start: start, End: end})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Groups) != 2 || !(r.Groups[0].P95 > 0.5 && r.Groups[0].P95 <= 1) {
		t.Fatalf("groups %+v, want two with a p95 in the bucket (0.5, 1]", r.Groups)
	}
	if _, err := report.Run(context.Background(), &query.Engine{}, src{db}, report.Options{Query: `lat`, Start: start, End: end}); !errors.Is(err, report.ErrEmpty) ||
		!strings.Contains(err.Error(), "histogram_quantile(0.95, rate(lat[5m]))") {
		t.Fatalf("a selector of histograms: %v, want the error to say what to report instead", err)
	}
}

// A latency percentile over 40 days is reported from the 1h tier's
// histogram buckets, with the figures the raw samples give, and its
// trend: the pods' latency grows, so the p99 reaches a threshold.
func TestReportHistogramQuantileFromTier(t *testing.T) {
	end := time.Now().UTC().Truncate(24 * time.Hour).Add(-24 * time.Hour)
	start := end.Add(-40 * 24 * time.Hour)
	c := &struct{ now time.Time }{end}
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true, Retention: 60 * 24 * time.Hour, Now: func() time.Time { return c.now }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	app := db.Appender()
	for p, pod := range []string{"a", "b"} {
		h := &series.Histogram{Schema: 0, PositiveSpans: []series.Span{{Offset: -3, Length: 8}}, PositiveBuckets: make([]float64, 8)}
		for ts := start.UnixMilli() + int64(p)*7_000; ts < end.UnixMilli(); ts += 60_000 {
			// Requests move to slower buckets as the days pass.
			slow := float64(ts-start.UnixMilli()) / float64(40*24*3600_000)
			for k := range h.PositiveBuckets {
				h.PositiveBuckets[k] += math.Round(20 * math.Exp(-math.Abs(float64(k)-1-5*slow)))
			}
			h.Count = 0
			for _, b := range h.PositiveBuckets {
				h.Count += b
			}
			h.Sum += 30
			if err := app.AppendHistogram(series.FromStrings("__name__", "lat", "pod", pod), ts, h); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	c.now = end.Add(24 * time.Hour)
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	c.now = c.now.Add(time.Hour)
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	o := report.Options{Query: `histogram_quantile(0.99, sum by (pod) (rate(lat[1h])))`, Start: start, End: end, Threshold: 16, HasThreshold: true}
	got, err := report.Run(context.Background(), &query.Engine{}, rollupSrc{src{db}}, o)
	if err != nil {
		t.Fatal(err)
	}
	want, err := report.Run(query.WithTier(context.Background(), "raw"), &query.Engine{}, rollupSrc{src{db}}, o)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Tiers, []string{"1h"}) || !slices.Equal(want.Tiers, []string{"raw"}) {
		t.Fatalf("tiers %v and %v, want 1h and raw", got.Tiers, want.Tiers)
	}
	if len(got.Groups) != 2 || len(want.Groups) != 2 {
		t.Fatalf("%d and %d groups, want 2", len(got.Groups), len(want.Groups))
	}
	for i, g := range got.Groups {
		w := want.Groups[i]
		for _, f := range [][2]float64{{g.P95, w.P95}, {g.P99, w.P99}, {g.Max, w.Max}, {g.TrendPerDay, w.TrendPerDay}} {
			if math.Abs(f[0]-f[1]) > 1e-9*math.Max(1, math.Abs(f[1])) {
				t.Fatalf("group %s: tier %+v\nraw %+v", g.Labels, g, w)
			}
		}
		if !(g.TrendPerDay > 0) || g.Points < 900 {
			t.Fatalf("group %s: trend %v a day over %d points, want a growing latency over 40 days of hours", g.Labels, g.TrendPerDay, g.Points)
		}
	}
}

// quantileOf is Prometheus's quantile of sorted values.
func quantileOf(sorted []float64, q float64) float64 {
	r := q * float64(len(sorted)-1)
	lo := int(math.Floor(r))
	hi := min(lo+1, len(sorted)-1)
	return sorted[lo] + (r-float64(lo))*(sorted[hi]-sorted[lo])
}
