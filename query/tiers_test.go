package query_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

type fixedClock struct{ now time.Time }

func (c *fixedClock) Now() time.Time { return c.now }

// rolledUp writes random series over three days (irregular and 10 s grid
// times, counters with resets, gauges, stale markers), rolls them up
// and returns the source and the days' end.
func rolledUp(t *testing.T) (src, int64) {
	t.Helper()
	end := time.Now().Add(-48 * time.Hour).Truncate(24 * time.Hour)
	c := &fixedClock{end}
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := rand.New(rand.NewPCG(5, 7))
	start := end.Add(-3 * 24 * time.Hour).UnixMilli()
	for s := 0; s < 8; s++ {
		ls := series.FromStrings("__name__", "m", "i", fmt.Sprint(s))
		app := db.Appender()
		v := 100.0
		ts := start + r.Int64N(60_000)
		if s%2 == 0 {
			ts = start // on the grid
		}
		for ts < end.UnixMilli() {
			switch {
			case r.IntN(150) == 0:
				app.Append(ls, ts, series.StaleNaN)
			case s < 4 && r.IntN(400) == 0:
				v = float64(r.IntN(5)) // a counter reset
				app.Append(ls, ts, v)
			case s < 4:
				v += float64(r.IntN(20))
				app.Append(ls, ts, v)
			default:
				app.Append(ls, ts, math.Round(r.NormFloat64()*5000)/100)
			}
			if s%2 == 0 {
				ts += 10_000 * (1 + r.Int64N(2))
			} else {
				ts += 1000 + r.Int64N(30_000)
			}
			if r.IntN(3000) == 0 {
				ts += 3 * 3600_000 // a gap
			}
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	rollUpDays(t, db, c, end)
	rolledClock = c
	return src{db}, end.UnixMilli()
}

// rollUpDays moves the clock a day past end, checkpoints, and runs the
// downsampler an hour later, when the days written are over and quiet.
func rollUpDays(t testing.TB, db *storage.DB, c *fixedClock, end time.Time) {
	t.Helper()
	c.now = end.Add(24 * time.Hour)
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	c.now = c.now.Add(time.Hour)
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
}

// rolledClock is the clock of the last rolledUp source.
var rolledClock *fixedClock

// Property: a range function a tier can answer gives from the tier what
// it gives from raw samples (float rounding aside; quantiles within the
// sketch's 1%), at steps of the tier's resolution or coarser.
func TestTiersAnswerAsRaw(t *testing.T) {
	s, end := rolledUp(t)
	eng := &query.Engine{}
	raw := query.WithTier(context.Background(), "raw")
	auto := context.Background()
	for _, fn := range []string{"sum_over_time", "count_over_time", "avg_over_time", "min_over_time", "max_over_time",
		"last_over_time", "present_over_time", "rate", "increase", "delta", "quantile_over_time"} {
		for _, c := range []struct {
			window, step time.Duration
			tier         string
		}{{5 * time.Minute, 5 * time.Minute, "5m"}, {time.Hour, time.Hour, "1h"}, {2 * time.Hour, time.Hour, "1h"}, {15 * time.Minute, 30 * time.Minute, "5m"}, {24 * time.Hour, 24 * time.Hour, "1d"}} {
			q := fmt.Sprintf("%s(m[%s])", fn, model(c.window))
			if fn == "quantile_over_time" {
				q = fmt.Sprintf("%s(0.9, m[%s])", fn, model(c.window))
			}
			start := end - 2*24*3600_000
			if fn == "quantile_over_time" && c.tier == "5m" {
				// The finest tier keeps no sketches: raw answers.
				got, err := eng.Range(auto, s, q, start, end, c.step.Milliseconds())
				if err != nil || !slices.Equal(got.Tiers, []string{"raw"}) {
					t.Fatalf("%s step %v: tiers %v, %v; want raw", q, c.step, got.Tiers, err)
				}
				continue
			}
			want, err := eng.Range(raw, s, q, start, end, c.step.Milliseconds())
			if err != nil {
				t.Fatal(err)
			}
			got, err := eng.Range(auto, s, q, start, end, c.step.Milliseconds())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(want.Tiers, []string{"raw"}) || !slices.Equal(got.Tiers, []string{c.tier}) {
				t.Fatalf("%s step %v: tiers %v and %v, want raw and %s", q, c.step, want.Tiers, got.Tiers, c.tier)
			}
			if got.Samples >= want.Samples {
				t.Errorf("%s: the tier loaded %d buckets, raw %d samples", q, got.Samples, want.Samples)
			}
			if fn != "quantile_over_time" {
				compareResults(t, q, got, want, 1e-9)
				continue
			}
			// A quantile interpolates two sample values, each within 1%:
			// the error is bounded by 1% of the window's largest magnitude.
			scale := map[string][]float64{}
			for _, f := range []string{"max_over_time", "min_over_time"} {
				r, err := eng.Range(raw, s, fmt.Sprintf("%s(m[%s])", f, model(c.window)), start, end, c.step.Milliseconds())
				if err != nil {
					t.Fatal(err)
				}
				for _, ser := range r.Series {
					k := ser.Labels.String()
					if scale[k] == nil {
						scale[k] = make([]float64, len(ser.Points))
					}
					for j, p := range ser.Points {
						scale[k][j] = math.Max(scale[k][j], math.Abs(p.V))
					}
				}
			}
			if len(got.Series) != len(want.Series) {
				t.Fatalf("%s: %d series, raw %d", q, len(got.Series), len(want.Series))
			}
			for i, w := range want.Series {
				g := got.Series[i]
				if len(g.Points) != len(w.Points) {
					t.Fatalf("%s: %d points, raw %d", q, len(g.Points), len(w.Points))
				}
				for j := range w.Points {
					if d := math.Abs(g.Points[j].V - w.Points[j].V); d > 0.0101*scale[w.Labels.String()][j]+1e-9 {
						t.Fatalf("%s: %s: %v, raw %v", q, w.Labels, g.Points[j].V, w.Points[j].V)
					}
				}
			}
		}
	}
}

func model(d time.Duration) string { return query.TierName(d) }

func compareResults(t *testing.T, q string, got, want *query.Result, tol float64) {
	t.Helper()
	if len(got.Series) != len(want.Series) {
		t.Fatalf("%s: %d series, raw %d", q, len(got.Series), len(want.Series))
	}
	for i := range want.Series {
		g, w := got.Series[i], want.Series[i]
		if g.Labels.String() != w.Labels.String() || len(g.Points) != len(w.Points) {
			t.Fatalf("%s: series %s with %d points, raw %s with %d", q, g.Labels, len(g.Points), w.Labels, len(w.Points))
		}
		for j := range w.Points {
			a, b := g.Points[j], w.Points[j]
			if a.T != b.T || math.Abs(a.V-b.V) > tol*math.Max(1, math.Max(math.Abs(a.V), math.Abs(b.V))) {
				t.Fatalf("%s: %s at %d: %v, raw %v", q, g.Labels, (a.T-w.Points[0].T)/1000, a.V, b.V)
			}
		}
	}
}

// Steps past a tier's watermark come from raw samples; a forced tier is
// used where it can answer; an unknown tier is a bad query.
func TestTierPlanning(t *testing.T) {
	s, end := rolledUp(t)
	eng := &query.Engine{}
	// Samples on both sides of the 5m tier's watermark (the start of the
	// day in progress, two days after the data): those before it are late
	// (not rolled up yet: the tier computes their day from raw samples),
	// those after are raw only. A query across it reads the tier up to
	// the watermark and raw after, and says both.
	rolledClock.now = rolledClock.now.Add(24 * time.Hour)
	wm := s.Tiers()[0].Watermark
	if wm != end+2*86400_000 {
		t.Fatalf("watermark %v, want the day after the data's end", time.UnixMilli(wm).UTC())
	}
	app := s.db.Appender()
	ls := series.FromStrings("__name__", "m", "i", "0")
	for ts := wm - 3600_000; ts <= wm+3600_000; ts += 10_000 {
		if err := app.Append(ls, ts, float64(ts%7)); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	// Not rolled up yet: the day before the watermark is computed from
	// its raw samples.
	got, err := eng.Range(context.Background(), s, "max_over_time(m[5m])", wm-3600_000, wm, 300_000)
	if err != nil || !slices.Equal(got.Tiers, []string{"raw", "5m"}) || len(got.Series) != 1 || len(got.Series[0].Points) != 13 {
		t.Fatalf("before the rollup: %v %v", got, err)
	}
	if err := s.db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	rolledClock.now = rolledClock.now.Add(10 * time.Minute)
	if err := s.db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	if s.Tiers()[0].Watermark != wm {
		t.Fatal("the watermark moved")
	}
	got, err = eng.Range(context.Background(), s, "max_over_time(m[5m])", wm-3600_000, wm+3600_000, 300_000)
	if err != nil {
		t.Fatal(err)
	}
	want, err := eng.Range(query.WithTier(context.Background(), "raw"), s, "max_over_time(m[5m])", wm-3600_000, wm+3600_000, 300_000)
	if err != nil {
		t.Fatal(err)
	}
	compareResults(t, "max_over_time across the watermark", got, want, 1e-12)
	if !slices.Equal(got.Tiers, []string{"raw", "5m"}) || len(got.Series) != 1 || len(got.Series[0].Points) != 25 {
		t.Fatalf("across the watermark: tiers %v, %d series", got.Tiers, len(got.Series))
	}
	forced, err := eng.Range(query.WithTier(context.Background(), "5m"), s, "max_over_time(m[1h])", end-6*3600_000, end, 3600_000)
	if err != nil || !slices.Equal(forced.Tiers, []string{"5m"}) {
		t.Fatalf("forced 5m: %v %v", forced.Tiers, err)
	}
	// rate over 90 s: no tier divides it; raw answers.
	if r, err := eng.Range(context.Background(), s, "rate(m[90s])", end-3600_000, end, 300_000); err != nil || !slices.Equal(r.Tiers, []string{"raw"}) {
		t.Fatalf("rate(m[90s]): %v %v", r.Tiers, err)
	}
	if _, err := eng.Range(query.WithTier(context.Background(), "7m"), s, "m", end-3600_000, end, 300_000); err == nil {
		t.Fatal("unknown tier accepted")
	}
}

// trimmed is a source whose tiers claim to have dropped everything
// before oldest.
type trimmed struct {
	src
	oldest int64
}

func (t trimmed) Tiers() []query.Tier {
	ts := t.src.Tiers()
	for i := range ts {
		ts[i].Oldest = t.oldest
	}
	return ts
}

// A tier that no longer keeps the start of the first window is not used.
func TestTierRetentionPlanning(t *testing.T) {
	s, end := rolledUp(t)
	eng := &query.Engine{}
	q, start := "max_over_time(m[1h])", end-2*86400_000
	full, err := eng.Range(context.Background(), s, q, start, end, 3600_000)
	if err != nil || !slices.Equal(full.Tiers, []string{"1h"}) {
		t.Fatalf("all kept: %v %v", full.Tiers, err)
	}
	got, err := eng.Range(context.Background(), trimmed{s, end - 86400_000}, q, start, end, 3600_000)
	if err != nil || !slices.Equal(got.Tiers, []string{"raw"}) {
		t.Fatalf("tiers trimmed after the start: %v %v", got.Tiers, err)
	}
	compareResults(t, q, got, full, 1e-12)
}

// Simple aggregations of a range function over a selector fold each
// series into its group as the selection is read (in parallel shards,
// from raw samples, from a tier, and from both across the watermark);
// they give what aggregating the whole result gives. The regex selector
// of the same name takes the path that keeps every series.
func TestFoldedAggregations(t *testing.T) {
	s, end := rolledUp(t)
	wm := s.Tiers()[1].Watermark
	app := s.db.Appender()
	for i := 0; i < 3; i++ { // samples past the 1h tier's watermark
		ls := series.FromStrings("__name__", "m", "i", fmt.Sprint(i))
		for ts := wm + 1000; ts <= wm+2*3600_000; ts += 15_000 {
			if err := app.Append(ls, ts, float64(ts%11)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, par := range []int{1, 3} {
		eng := &query.Engine{Parallelism: par}
		for _, tier := range []string{"raw", "auto"} {
			ctx := query.WithTier(context.Background(), tier)
			for _, agg := range []string{"sum", "avg", "min", "max", "count", "group"} {
				for _, by := range []string{"", " by (i)", " without (i)"} {
					for _, fn := range []string{"rate(%s[1h])", "avg_over_time(%s[1h])", "max_over_time(%s[1h] offset 1h)", "last_over_time(%s[2h])", "quantile_over_time(0.5, %s[1h])"} {
						folded := agg + by + " (" + fmt.Sprintf(fn, "m") + ")"
						whole := agg + by + " (" + fmt.Sprintf(fn, `{__name__=~"m"}`) + ")"
						start, stop := end-2*24*3600_000, wm+2*3600_000
						got, err := eng.Range(ctx, s, folded, start, stop, 3600_000)
						if err != nil {
							t.Fatal(err)
						}
						want, err := eng.Range(ctx, s, whole, start, stop, 3600_000)
						if err != nil {
							t.Fatal(err)
						}
						if len(got.Series) == 0 {
							t.Fatalf("%s: no series", folded)
						}
						if tier == "auto" && !slices.Equal(got.Tiers, want.Tiers) {
							t.Fatalf("%s: tiers %v, whole %v", folded, got.Tiers, want.Tiers)
						}
						compareResults(t, fmt.Sprintf("%s (parallelism %d, %s)", folded, par, tier), got, want, 1e-12)
					}
				}
			}
		}
	}
}

// rawTrimmed is a source whose raw samples before oldest are gone.
type rawTrimmed struct {
	src
	oldest int64
}

func (r rawTrimmed) RawOldest() int64 { return r.oldest }

// A query that reads raw samples for a time the source no longer keeps
// them says so, naming the range; one the tiers answer does not.
func TestRawExpiredWarning(t *testing.T) {
	s, end := rolledUp(t)
	eng := &query.Engine{}
	src := rawTrimmed{s, end - 86400_000}
	start := end - 2*86400_000
	res, err := eng.Range(context.Background(), src, "m", start, end, 3600_000)
	if err != nil {
		t.Fatal(err)
	}
	want := "raw samples before " + time.UnixMilli(end-86400_000).UTC().Format(time.RFC3339) + " are no longer kept"
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], want) || !strings.Contains(res.Warnings[0], "the tiers 5m, 1h, 1d") {
		t.Fatalf("a plain selector over expired raw samples: warnings %q", res.Warnings)
	}
	res, err = eng.Range(context.Background(), src, "max_over_time(m[1h])", start, end, 3600_000)
	if err != nil || len(res.Warnings) != 0 || !slices.Equal(res.Tiers, []string{"1h"}) {
		t.Fatalf("from the 1h tier: %v %v %v", res.Tiers, res.Warnings, err)
	}
	res, err = eng.Range(context.Background(), src, "m", end-3600_000, end, 60_000)
	if err != nil || len(res.Warnings) != 0 {
		t.Fatalf("raw samples that are kept: %v %v", res.Warnings, err)
	}
}

// A range function that a tier answers gives the native histogram
// series too (from the tier's histogram buckets), at the steps the tier
// answered as at the others, alone or summed (folded), beside the
// floats.
func TestTiersWithHistograms(t *testing.T) {
	end := time.Now().Add(-48 * time.Hour).Truncate(24 * time.Hour)
	c := &fixedClock{end}
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := end.Add(-2 * 24 * time.Hour).UnixMilli()
	app := db.Appender()
	h := &series.Histogram{Schema: 0, PositiveSpans: []series.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []float64{0, 0}}
	for k, ts := 0, start; ts < end.UnixMilli(); k, ts = k+1, ts+60_000 {
		h.PositiveBuckets[0] += 2
		h.PositiveBuckets[1] += 1
		h.Count, h.Sum = h.Count+3, h.Sum+4
		for _, err := range []error{
			app.AppendHistogram(series.FromStrings("__name__", "lat", "kind", "native"), ts, h),
			app.Append(series.FromStrings("__name__", "lat", "kind", "float"), ts, float64(k)),
		} {
			if err != nil {
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
	eng := &query.Engine{}
	for _, q := range []string{`rate(lat[1h])`, `sum by (kind) (rate(lat[1h]))`} {
		res, err := eng.Range(context.Background(), histSrc{src{db}}, q, start+3600_000, end.UnixMilli(), 3600_000)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(res.Tiers, "1h") {
			t.Fatalf("%s: tiers %v, want the 1h tier to answer", q, res.Tiers)
		}
		var hist, floats int
		for _, s := range res.Series {
			hist += len(s.Histograms)
			floats += len(s.Points)
			for _, p := range s.Histograms {
				if math.Abs(p.H.Count-0.05) > 1e-9 {
					t.Errorf("%s at %d: rate's count %v, want 0.05 (3 a minute)", q, p.T, p.H.Count)
				}
			}
		}
		if steps := int((end.UnixMilli()-start-3600_000)/3600_000) + 1; hist != steps || floats != steps {
			t.Errorf("%s: %d histogram and %d float steps, want %d of each", q, hist, floats, steps)
		}
	}
}

// histSrc is src that says it holds native histograms.
type histSrc struct{ src }

func (s histSrc) HasHistograms() bool { return s.db.HasHistograms() }
