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
	"time"

	"github.com/headroomdb/headroom/query"
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
	// and right-sizing tools use; a selector).
	PercentileOf string
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
	// The daily p95 the trend is fitted to, from FirstDay (NaN: a day
	// without points), and the trend: TrendIntercept + TrendPerDay * x,
	// x in days since the Unix epoch.
	FirstDay       time.Time
	DailyP95       []float64
	TrendIntercept float64
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
	case "samples", "5m-avg":
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
		Threshold: o.Threshold, HasThreshold: o.HasThreshold, Horizon: o.Horizon, Tiers: res.Tiers, PercentileOf: o.PercentileOf}
	var dist map[string]distribution
	switch o.PercentileOf {
	case "samples":
		if dist, err = sampleDistribution(ctx, eng, src, o.Query, start, end, r); err != nil {
			return nil, err
		}
	case "5m-avg":
		if dist, err = fiveMinuteDistribution(ctx, eng, src, o.Query, start, end, r); err != nil {
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
		g, ok := analyse(s, o, r.End, shift)
		if !ok {
			continue
		}
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

func analyse(s query.Series, o Options, end time.Time, shift int64) (Group, bool) {
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
		d := (p.T - shift) / 86400_000
		byDay[d] = append(byDay[d], p.V)
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
	sorted := append([]float64(nil), vals...)
	sort.Float64s(sorted)
	g.P50, g.P95, g.P99 = quantile(sorted, 0.5), quantile(sorted, 0.95), quantile(sorted, 0.99)
	g.Max = sorted[len(sorted)-1]
	if g.Mean != 0 {
		g.PeakToAverage = g.Max / g.Mean
	}
	g.BusiestHour = argmax(hourSum[:], hourN[:])
	g.BusiestWeekday = time.Weekday(argmax(wdSum[:], wdN[:]))

	// The trend: least squares over each day's p95, x in days.
	days := make([]int64, 0, len(byDay))
	for d := range byDay {
		days = append(days, d)
	}
	sort.Slice(days, func(i, j int) bool { return days[i] < days[j] })
	g.Days = len(days)
	xs, ys := make([]float64, len(days)), make([]float64, len(days))
	counts := make([]int, 0, len(days))
	for i, d := range days {
		v := byDay[d]
		sort.Float64s(v)
		xs[i], ys[i] = float64(d)+0.5, quantile(v, 0.95)
		counts = append(counts, len(v))
	}
	// A day cut by the range (its first and last) has a p95 of a part of
	// the day, biased by which hours it holds: not in the fit. Less than
	// 90% of the usual points marks one (a missed scrape or two does not).
	sort.Ints(counts)
	full := counts[len(counts)/2]
	var fx, fy []float64
	for i, d := range days {
		if 10*len(byDay[d]) >= 9*full {
			fx, fy = append(fx, xs[i]), append(fy, ys[i])
		}
	}
	a, b, r2 := leastSquares(fx, fy)
	g.TrendPerDay, g.TrendR2, g.TrendIntercept = b, r2, a
	if len(days) > 0 {
		g.FirstDay = time.UnixMilli(days[0] * 86400_000).UTC()
		g.DailyP95 = make([]float64, days[len(days)-1]-days[0]+1)
		for i := range g.DailyP95 {
			g.DailyP95[i] = math.NaN()
		}
		for i, d := range days {
			g.DailyP95[d-days[0]] = ys[i]
		}
	}
	if !o.HasThreshold || len(days) < 2 {
		return g, true // no threshold, or no trend from one day
	}
	endDay := float64(end.UnixMilli()) / 86400_000
	now := a + b*endDay
	switch {
	case now >= o.Threshold:
		g.AlreadyAboveThreshold, g.DaysUntilCrossing, g.Crossing, g.CrossingInHorizon = true, 0, end, true
	case b > 0:
		dx := (o.Threshold - now) / b
		g.DaysUntilCrossing = dx
		g.Crossing = end.Add(time.Duration(dx * float64(24*time.Hour)))
		g.CrossingInHorizon = dx*float64(24*time.Hour) <= float64(o.Horizon)
		if !g.CrossingInHorizon {
			g.DaysUntilCrossing = math.Inf(1)
		}
	}
	return g, true
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

// leastSquares fits y = a + b x and returns a, b and R².
func leastSquares(xs, ys []float64) (a, b, r2 float64) {
	n := float64(len(xs))
	if n == 0 {
		return 0, 0, 0
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= n
	my /= n
	var sxx, sxy, syy float64
	for i := range xs {
		dx, dy := xs[i]-mx, ys[i]-my
		sxx += dx * dx
		sxy += dx * dy
		syy += dy * dy
	}
	if sxx == 0 {
		return my, 0, 0
	}
	b = sxy / sxx
	a = my - b*mx
	if syy > 0 {
		r2 = sxy * sxy / (sxx * syy)
	}
	return a, b, r2
}

// errBad marks an empty selection as the caller's mistake (a bad query),
// for the APIs' error codes.
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

// fiveMinuteDistribution is each series' distribution of its 5-minute
// averages over the range, evaluated in pieces of at most 11,000 steps.
func fiveMinuteDistribution(ctx context.Context, eng *query.Engine, src query.Source, sel string, start, end int64, r *Report) (map[string]distribution, error) {
	const step = 300_000
	first := (start + step - 1) / step * step
	vals := map[string][]float64{}
	for from := first; from <= end; from += 10_000 * step {
		to := min(end, from+9_999*step)
		res, err := eng.Range(ctx, src, fmt.Sprintf("avg_over_time(%s[5m])", sel), from, to, step)
		if err != nil {
			return nil, err
		}
		r.Tiers = mergeNames(r.Tiers, res.Tiers)
		for _, s := range res.Series {
			k := s.Labels.String()
			for _, p := range s.Points {
				if !math.IsNaN(p.V) {
					vals[k] = append(vals[k], p.V)
				}
			}
		}
	}
	out := map[string]distribution{}
	for k, vs := range vals {
		sort.Float64s(vs)
		var sum float64
		for _, v := range vs {
			sum += v
		}
		out[k] = distribution{sum / float64(len(vs)), quantile(vs, 0.5), quantile(vs, 0.95), quantile(vs, 0.99), vs[len(vs)-1]}
	}
	return out, nil
}

func mergeNames(a, b []string) []string {
	for _, x := range b {
		if !slices.Contains(a, x) {
			a = append(a, x)
		}
	}
	return a
}
