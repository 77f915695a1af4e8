// Package report owns capacity reports: for a PromQL expression over a
// long range (days to years) it gives, per result series (a group), the
// distribution (mean, percentiles, max, peak to average), the busiest
// hour of day and day of week, the growth trend of the daily p95 (least
// squares, with its R²), the headroom left to a threshold and the date
// the trend crosses it. It evaluates through query.Engine (so rollup
// tiers serve long ranges) and must not import the storage engine.
package report

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/query/forecast"
	"github.com/headroomdb/headroom/storage/series"
)

// Options is what a report is asked for.
type Options struct {
	Query      string
	Start, End time.Time
	// Step between evaluations; 0 picks one from the range: 1m up to two
	// days, 5m up to 30 days, 1h up to 458 days, 1d beyond (so that rollup tiers answer).
	Step time.Duration
	// Threshold, when HasThreshold, is the capacity limit the headroom
	// and the forecast are computed against.
	Threshold    float64
	HasThreshold bool
	// Horizon bounds the forecast: a crossing further away is "not within
	// the horizon". Default 365 days.
	Horizon time.Duration
	// PercentileOf says what mean, percentiles and max are of: "samples"
	// (the raw samples, from the rollup sketches within 1%: the default
	// for a series selector), "points" (the values the query gives at
	// each step: the default, and the only choice, for other
	// expressions), or "5m-avg" (5-minute averages, as bandwidth billing
	// and right-sizing tools use; an expression's values every 5 minutes).
	PercentileOf string
	// Unit follows the levels in the HTML page and the JSON ("%": a
	// ratio shown as a percentage). Empty: MetricUnit's answer for the
	// query's metric, when the query is a selector of one.
	Unit       string
	MetricUnit func(metric string) string
}

// Group is one result series' figures.
type Group struct {
	Labels                series.Labels
	Points                int
	Mean, P50, P95, P99   float64
	Max, PeakToAverage    float64
	BusiestHour           int          // 0-23, UTC: the hour of day with the highest mean
	BusiestWeekday        time.Weekday // the weekday with the highest mean
	Days                  int          // days with points (the trend's input)
	TrendPerDay, TrendR2  float64      // least squares over the daily p95
	Headroom, HeadroomPct float64      // threshold - p95, and as a share of the threshold (%)
	Crossing              time.Time    // when the daily p95 trend reaches the threshold (zero: none)
	CrossingInHorizon     bool
	AlreadyAboveThreshold bool
	DaysUntilCrossing     float64 // from End; +Inf when none
	// The daily p95 the forecast is of, from FirstDay (NaN: a day
	// without points; only days the range holds whole), and the trend:
	// TrendIntercept + TrendPerDay * x, x in days since the Unix epoch,
	// fitted from RegimeStart on (TrendR2 is its fit there).
	FirstDay       time.Time
	DailyP95       []float64
	TrendIntercept float64
	RegimeStart    time.Time
	// The forecast (query/forecast, docs/forecast.md): "crosses", "not
	// within the horizon", "no reliable trend" or "already above"; why,
	// when it gives no date; the crossing's 80% interval (CrossingHi is
	// zero when it lies after the horizon); the level of the last day
	// as fitted; whether a weekly pattern was used.
	Forecast               string
	ForecastWhy            string
	CrossingLo, CrossingHi time.Time
	CurrentLevel           float64
	Seasonal               bool

	levels map[int64]float64 // the daily p95 of the points (analyse)
}

// Report is the answer.
type Report struct {
	Query        string
	Start, End   time.Time
	Step         time.Duration
	Threshold    float64
	HasThreshold bool
	Horizon      time.Duration
	Tiers        []string // the data tiers that answered
	PercentileOf string   // what the distribution is of: samples, points or 5m-avg
	Unit         string   // the levels' unit, if known
	Groups       []Group  // sorted by days until the crossing, then by p95 descending
}

// ErrEmpty: the expression selected no data in the range.
var ErrEmpty = errors.New("the query returned no data in the range")

// maxPoints is the most steps a report evaluates (Prometheus's limit
// on a range query).
const maxPoints = 11000

// DefaultStep is the step a report uses for a range: 1m up to two days,
// 5m up to 30 days, 1h up to 11,000 hours (458 days), then a day: each a
// tier's resolution, so that long ranges read the tiers.
func DefaultStep(r time.Duration) time.Duration {
	switch {
	case r <= 48*time.Hour:
		return time.Minute
	case r <= 30*24*time.Hour:
		return 5 * time.Minute
	case r <= maxPoints*time.Hour:
		return time.Hour
	}
	return 24 * time.Hour
}

// Run evaluates o.Query and computes the report.
func Run(ctx context.Context, eng *query.Engine, src query.Source, o Options) (*Report, error) {
	if o.Query == "" {
		return nil, fmt.Errorf("%w: empty query", query.ErrBadQuery)
	}
	if !o.End.After(o.Start) {
		return nil, fmt.Errorf("%w: the range must end after it starts", query.ErrBadQuery)
	}
	if o.Step <= 0 {
		o.Step = DefaultStep(o.End.Sub(o.Start))
	}
	if o.Horizon <= 0 {
		o.Horizon = 365 * 24 * time.Hour
	}
	// Align to the step (and so to the tiers' buckets).
	stepMs := o.Step.Milliseconds()
	start := (o.Start.UnixMilli() + stepMs - 1) / stepMs * stepMs
	end := o.End.UnixMilli() / stepMs * stepMs
	if (end-start)/stepMs > maxPoints {
		return nil, fmt.Errorf("%w: %v at a %v step is more than 11,000 points: give a step of %v or more (or none: the report picks one)", query.ErrBadQuery,
			o.End.Sub(o.Start), o.Step, time.Duration((end-start)/maxPoints+1)*time.Millisecond)
	}
	_, selErr := query.ParseSelector(o.Query)
	selector := selErr == nil
	switch o.PercentileOf {
	case "":
		o.PercentileOf = "points"
		if selector {
			o.PercentileOf = "samples"
		}
	case "points":
	case "5m-avg":
	case "samples":
		if !selector {
			return nil, fmt.Errorf("%w: percentiles of %s need a series selector as the query, not %q", query.ErrBadQuery, o.PercentileOf, o.Query)
		}
	default:
		return nil, fmt.Errorf("%w: percentile-of %q: want samples, points or 5m-avg", query.ErrBadQuery, o.PercentileOf)
	}
	// A selector is looked at through its average over each step (which
	// rollup tiers answer), not its instant value at each step.
	pointsQuery, from := o.Query, start
	if selector {
		// The first average covers (start, start+step].
		pointsQuery, from = fmt.Sprintf("avg_over_time(%s[%ds])", o.Query, stepMs/1000), start+stepMs
	}
	res, err := eng.Range(ctx, src, pointsQuery, from, end, stepMs)
	if err != nil {
		return nil, err
	}
	r := &Report{Query: o.Query, Start: time.UnixMilli(start).UTC(), End: time.UnixMilli(end).UTC(), Step: o.Step,
		Threshold: o.Threshold, HasThreshold: o.HasThreshold, Horizon: o.Horizon, Tiers: res.Tiers, PercentileOf: o.PercentileOf, Unit: o.Unit}
	if r.Unit == "" && selector && o.MetricUnit != nil {
		if ms, err := query.ParseSelector(o.Query); err == nil {
			for _, m := range ms {
				if m.Name == series.MetricName && m.Type == series.MatchEqual {
					r.Unit = o.MetricUnit(m.Value)
				}
			}
		}
	}
	var dist map[string]distribution
	// The daily levels the forecast is of: the daily p95 of what the p95
	// shown is of (by default the points' own, analyse's).
	var daily map[string]map[int64]float64
	switch o.PercentileOf {
	case "samples":
		if dist, err = sampleDistribution(ctx, eng, src, o.Query, start, end, r); err != nil {
			return nil, err
		}
		if daily, err = dailySampleP95(ctx, eng, src, o.Query, start, end, r); err != nil {
			return nil, err
		}
	case "5m-avg":
		if dist, daily, err = fiveMinuteDistribution(ctx, eng, src, o.Query, selector, start, end, r); err != nil {
			return nil, err
		}
	}
	// A selector's points are averages over the step before them: they
	// belong to the hour and day the step starts in.
	var shift int64
	if selector {
		shift = stepMs
	}
	for _, s := range res.Series {
		g, ok := analyse(s, start, end, shift, o.PercentileOf == "points")
		if !ok {
			continue
		}
		levels := g.levels
		if dl, ok := daily[s.Labels.String()]; ok {
			levels = dl // the same percentile of the same values as the p95 shown
		}
		forecastGroup(&g, levels, o, end)
		if d, ok := dist[s.Labels.String()]; ok {
			g.Mean, g.P50, g.P95, g.P99, g.Max = d.mean, d.p50, d.p95, d.p99, d.max
			g.PeakToAverage = 0
			if g.Mean != 0 {
				g.PeakToAverage = g.Max / g.Mean
			}
		}
		if o.HasThreshold {
			g.Headroom = o.Threshold - g.P95
			if o.Threshold != 0 {
				g.HeadroomPct = 100 * g.Headroom / o.Threshold
			}
		}
		r.Groups = append(r.Groups, g)
	}
	if len(r.Groups) == 0 {
		for _, s := range res.Series {
			if len(s.Histograms) > 0 {
				return nil, fmt.Errorf("%w: %s from %s to %s: it gives native histograms, not levels: report one of their quantiles, as histogram_quantile(0.95, rate(%s[5m]))",
					ErrEmpty, o.Query, r.Start.Format(time.RFC3339), r.End.Format(time.RFC3339), o.Query)
			}
		}
		return nil, fmt.Errorf("%w: %s from %s to %s", ErrEmpty, o.Query, r.Start.Format(time.RFC3339), r.End.Format(time.RFC3339))
	}
	sort.SliceStable(r.Groups, func(i, j int) bool {
		a, b := r.Groups[i], r.Groups[j]
		if a.DaysUntilCrossing != b.DaysUntilCrossing {
			return a.DaysUntilCrossing < b.DaysUntilCrossing
		}
		return a.P95 > b.P95
	})
	return r, nil
}

// analyse computes a group's figures from its points and, with
// ofPoints (the percentiles are of the points, not of samples or 5m
// averages that replace them), their percentiles and the daily p95 of
// the days [start, endMs] holds whole (g.levels).
func analyse(s query.Series, start, endMs int64, shift int64, ofPoints bool) (Group, bool) {
	var vals []float64
	var hourSum [24]float64
	var hourN [24]int
	var wdSum [7]float64
	var wdN [7]int
	byDay := map[int64][]float64{}
	for _, p := range s.Points {
		if math.IsNaN(p.V) || math.IsInf(p.V, 0) {
			continue
		}
		vals = append(vals, p.V)
		t := time.UnixMilli(p.T - shift).UTC()
		hourSum[t.Hour()] += p.V
		hourN[t.Hour()]++
		wdSum[t.Weekday()] += p.V
		wdN[t.Weekday()]++
		if ofPoints {
			d := (p.T - shift) / 86400_000
			byDay[d] = append(byDay[d], p.V)
		}
	}
	if len(vals) == 0 {
		return Group{}, false
	}
	g := Group{Labels: s.Labels, Points: len(vals), DaysUntilCrossing: math.Inf(1)}
	var sum float64
	for _, v := range vals {
		sum += v
	}
	g.Mean = sum / float64(len(vals))
	if ofPoints {
		// Sorting every series' points was a fifth of a 1,000-series
		// report's CPU when the sketches' percentiles replaced them.
		sorted := append([]float64(nil), vals...)
		sort.Float64s(sorted)
		g.P50, g.P95, g.P99 = quantile(sorted, 0.5), quantile(sorted, 0.95), quantile(sorted, 0.99)
		g.Max = sorted[len(sorted)-1]
		if g.Mean != 0 {
			g.PeakToAverage = g.Max / g.Mean
		}
	}
	g.BusiestHour = argmax(hourSum[:], hourN[:])
	g.BusiestWeekday = time.Weekday(argmax(wdSum[:], wdN[:]))

	// The daily p95 of the points, of the days the range holds whole: a
	// day cut by the range has a p95 of some of its hours, biased by
	// which (3.5 hours of night are not a day).
	g.levels = map[int64]float64{}
	for d, v := range byDay {
		if d*86400_000 < start || (d+1)*86400_000 > endMs {
			continue
		}
		sort.Float64s(v)
		g.levels[d] = quantile(v, 0.95)
	}
	return g, true
}

// forecastGroup sets g's daily levels and forecast from levels (day
// since the epoch -> the day's p95).
func forecastGroup(g *Group, levels map[int64]float64, o Options, endMs int64) {
	if len(levels) == 0 {
		g.Forecast, g.ForecastWhy = forecast.NoReliableTrend.String(), "the range holds no whole day"
		return
	}
	days := make([]int64, 0, len(levels))
	for d := range levels {
		days = append(days, d)
	}
	slices.Sort(days)
	first, last := days[0], days[len(days)-1]
	g.Days = len(days)
	g.FirstDay = time.UnixMilli(first * 86400_000).UTC()
	g.DailyP95 = make([]float64, last-first+1)
	for i := range g.DailyP95 {
		g.DailyP95[i] = math.NaN()
	}
	for _, d := range days {
		g.DailyP95[d-first] = levels[d]
	}
	thr := o.Threshold
	if !o.HasThreshold {
		thr = math.Inf(1) // the trend alone
	}
	lastEnd := (last + 1) * 86400_000
	horizon := int((o.Horizon.Milliseconds() + endMs - lastEnd) / 86400_000)
	f := forecast.Run(forecast.Input{Levels: g.DailyP95, Weekday0: g.FirstDay.Weekday(), Threshold: thr, Horizon: max(horizon, 1)})
	g.TrendPerDay = f.Slope
	g.TrendIntercept = f.Intercept - f.Slope*(float64(first)+0.5)
	g.RegimeStart = g.FirstDay.AddDate(0, 0, f.RegimeStart)
	g.CurrentLevel = f.Level
	g.Seasonal = f.Seasonal
	// The fit over the regime, for the reader: 1 - SSE/SST of the line.
	var sse, sst, mean float64
	var n int
	for i := f.RegimeStart; i < len(g.DailyP95); i++ {
		if !math.IsNaN(g.DailyP95[i]) {
			mean += g.DailyP95[i]
			n++
		}
	}
	if n > 1 {
		mean /= float64(n)
		for i := f.RegimeStart; i < len(g.DailyP95); i++ {
			if v := g.DailyP95[i]; !math.IsNaN(v) {
				e := v - (f.Intercept + f.Slope*float64(i))
				sse += e * e
				sst += (v - mean) * (v - mean)
			}
		}
		if sst > 0 {
			g.TrendR2 = math.Max(0, 1-sse/sst)
		}
	}
	if !o.HasThreshold {
		return
	}
	g.Forecast, g.ForecastWhy = f.Kind.String(), f.Why
	at := func(days float64) time.Time {
		return time.UnixMilli(lastEnd + int64(days*86400_000)).UTC()
	}
	switch f.Kind {
	case forecast.AlreadyAbove:
		g.AlreadyAboveThreshold, g.DaysUntilCrossing, g.Crossing, g.CrossingInHorizon = true, 0, time.UnixMilli(endMs).UTC(), true
	case forecast.Crosses:
		g.Crossing, g.CrossingLo = at(f.Day), at(f.Lo)
		if !math.IsInf(f.Hi, 1) {
			g.CrossingHi = at(f.Hi)
		}
		g.CrossingInHorizon = true
		g.DaysUntilCrossing = math.Max(0, float64(g.Crossing.UnixMilli()-endMs)/86400_000)
	}
}

// quantile is Prometheus's: ranks floor and ceil of q(n-1), interpolated.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 1 {
		return sorted[0]
	}
	rank := q * float64(len(sorted)-1)
	lo := int(math.Floor(rank))
	hi := min(lo+1, len(sorted)-1)
	frac := rank - float64(lo)
	return sorted[lo] + frac*(sorted[hi]-sorted[lo])
}

func argmax(sum []float64, n []int) int {
	best, bestV := 0, math.Inf(-1)
	for i := range sum {
		if n[i] == 0 {
			continue
		}
		if v := sum[i] / float64(n[i]); v > bestV {
			best, bestV = i, v
		}
	}
	return best
}

// errBad marks an empty selection as the caller's mistake (a bad query),
// for the APIs' error codes.
// ParseThreshold reads a threshold: a number (0.8, 1e9) or a percentage
// of a ratio metric (80% is 0.8; a metric in percent takes 80).
func ParseThreshold(s string) (float64, error) {
	t := strings.TrimSpace(s)
	scale := 1.0
	if rest, ok := strings.CutSuffix(t, "%"); ok {
		t, scale = strings.TrimSpace(rest), 0.01
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%w: threshold %q: want a number (0.8, 1e9) or a percentage of a ratio (80%% is 0.8)", query.ErrBadQuery, s)
	}
	return v * scale, nil
}

func errBad(err error) error { return fmt.Errorf("%w: %w", query.ErrBadQuery, err) }

// BadRequest wraps err so that APIs answer it as a bad request when it
// is one: a bad query, or an empty selection.
func BadRequest(err error) error {
	if errors.Is(err, ErrEmpty) {
		return errBad(err)
	}
	return err
}

type distribution struct{ mean, p50, p95, p99, max float64 }

// sampleDistribution is each series' distribution of raw samples over
// (start, end]: *_over_time of the whole range at its end, which rollup
// tiers answer (quantiles from their sketches, within 1%).
func sampleDistribution(ctx context.Context, eng *query.Engine, src query.Source, sel string, start, end int64, r *Report) (map[string]distribution, error) {
	out := map[string]distribution{}
	w := fmt.Sprintf("%ds", (end-start)/1000)
	for _, f := range []struct {
		expr string
		set  func(*distribution, float64)
	}{
		{"avg_over_time(%s[%s])", func(d *distribution, v float64) { d.mean = v }},
		{"max_over_time(%s[%s])", func(d *distribution, v float64) { d.max = v }},
		{"quantile_over_time(0.5, %s[%s])", func(d *distribution, v float64) { d.p50 = v }},
		{"quantile_over_time(0.95, %s[%s])", func(d *distribution, v float64) { d.p95 = v }},
		{"quantile_over_time(0.99, %s[%s])", func(d *distribution, v float64) { d.p99 = v }},
	} {
		res, err := eng.Instant(ctx, src, fmt.Sprintf(f.expr, sel, w), end)
		if err != nil {
			return nil, err
		}
		r.Tiers = mergeNames(r.Tiers, res.Tiers)
		for _, s := range res.Series {
			if len(s.Points) == 0 {
				continue // a native histogram's average: not a level to report
			}
			k := s.Labels.String()
			d := out[k]
			f.set(&d, s.Points[0].V)
			out[k] = d
		}
	}
	return out, nil
}

// dailySampleP95 is each series' daily p95 of its raw samples, of the
// days the range holds whole: quantile_over_time over each day, which
// the tiers' sketches answer (within 1%), as the p95 shown.
func dailySampleP95(ctx context.Context, eng *query.Engine, src query.Source, sel string, start, end int64, r *Report) (map[string]map[int64]float64, error) {
	const day = 86400_000
	d0, d1 := (start+day-1)/day, end/day-1
	out := map[string]map[int64]float64{}
	if d1 < d0 {
		return out, nil
	}
	res, err := eng.Range(ctx, src, fmt.Sprintf("quantile_over_time(0.95, %s[1d])", sel), (d0+1)*day, (d1+1)*day, day)
	if err != nil {
		return nil, err
	}
	r.Tiers = mergeNames(r.Tiers, res.Tiers)
	for _, s := range res.Series {
		m := map[int64]float64{}
		for _, p := range s.Points {
			if !math.IsNaN(p.V) {
				m[p.T/day-1] = p.V // the window ending at midnight is the day before
			}
		}
		out[s.Labels.String()] = m
	}
	return out, nil
}

// fiveMinuteDistribution is each series' distribution of its 5-minute
// averages over the range, evaluated in pieces of at most 11,000 steps,
// and their daily p95 over the days the range holds whole.
func fiveMinuteDistribution(ctx context.Context, eng *query.Engine, src query.Source, expr string, selector bool, start, end int64, r *Report) (map[string]distribution, map[string]map[int64]float64, error) {
	// A selector's 5-minute averages; an expression's values every 5
	// minutes (rate(x[5m]) is a 5-minute average already).
	q := expr
	if selector {
		q = fmt.Sprintf("avg_over_time(%s[5m])", expr)
	}
	const step, day = 300_000, 86400_000
	first := (start + step - 1) / step * step
	vals := map[string][]float64{}
	byDay := map[string]map[int64][]float64{}
	for from := first; from <= end; from += 10_000 * step {
		to := min(end, from+9_999*step)
		res, err := eng.Range(ctx, src, q, from, to, step)
		if err != nil {
			return nil, nil, err
		}
		r.Tiers = mergeNames(r.Tiers, res.Tiers)
		for _, s := range res.Series {
			k := s.Labels.String()
			if byDay[k] == nil {
				byDay[k] = map[int64][]float64{}
			}
			for _, p := range s.Points {
				if !math.IsNaN(p.V) {
					vals[k] = append(vals[k], p.V)
					// An average over (T-5m, T] belongs to the day it starts in.
					if d := (p.T - step) / day; d*day >= start && (d+1)*day <= end {
						byDay[k][d] = append(byDay[k][d], p.V)
					}
				}
			}
		}
	}
	out := map[string]distribution{}
	daily := map[string]map[int64]float64{}
	for k, vs := range vals {
		sort.Float64s(vs)
		var sum float64
		for _, v := range vs {
			sum += v
		}
		out[k] = distribution{sum / float64(len(vs)), quantile(vs, 0.5), quantile(vs, 0.95), quantile(vs, 0.99), vs[len(vs)-1]}
		daily[k] = map[int64]float64{}
		for d, dv := range byDay[k] {
			sort.Float64s(dv)
			daily[k][d] = quantile(dv, 0.95)
		}
	}
	return out, daily, nil
}

func mergeNames(a, b []string) []string {
	for _, x := range b {
		if !slices.Contains(a, x) {
			a = append(a, x)
		}
	}
	return a
}
