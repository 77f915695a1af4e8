// Package forecast owns the capacity forecast: from a series' daily
// level (its daily p95, say), when it will first reach a threshold, with
// an 80% interval, or why no such date can be given. It is pure code on
// numbers: the standard library only, no storage, no PromQL, no I/O.
//
// The method (docs/forecast.md):
//
//  1. The current regime: the days since the last change of level or of
//     growth, found by binary segmentation of the days into straight
//     lines, each split kept only if it pays for its parameters (BIC).
//     Growth that stopped, or a step, starts a new regime: the forecast
//     follows the present, not the whole window.
//  2. A robust trend over the regime: Theil-Sen (the median of the
//     slopes between every two days, an outlier moves it little), with
//     its 80% interval from the ranks of those slopes (Kendall's).
//  3. Weekly seasonality, when the regime has four weeks and the
//     weekday explains a good part of what the trend leaves.
//  4. The crossing: the first day the level (trend, weekday, and the
//     day-to-day noise as the regime's residuals show it) reaches the
//     threshold, as a distribution over the trend's uncertainty and the
//     noise; its median is the date, its 10th and 90th percentiles the
//     interval.
//  5. Refusals: too few days, a regime too short, growth not
//     distinguishable from noise, or a crossing further away than the
//     regime's length allows extrapolating.
package forecast

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

// Kind is what a forecast says.
type Kind int

const (
	// NoReliableTrend: no date can be given (Why says why).
	NoReliableTrend Kind = iota
	// NotWithinHorizon: the level is not expected to reach the
	// threshold within the horizon.
	NotWithinHorizon
	// Crosses: the level is expected to reach the threshold: Day, and
	// the 80% interval Lo to Hi.
	Crosses
	// AlreadyAbove: the last day's level is at or above the threshold.
	AlreadyAbove
)

func (k Kind) String() string {
	switch k {
	case NotWithinHorizon:
		return "not within the horizon"
	case Crosses:
		return "crosses"
	case AlreadyAbove:
		return "already above"
	}
	return "no reliable trend"
}

// Input is a series of daily levels and what to forecast.
type Input struct {
	// Levels holds one level a day, oldest first; NaN: no level that day.
	Levels []float64
	// Weekday0 is the weekday of Levels[0].
	Weekday0 time.Weekday
	// Threshold is the level whose crossing is forecast.
	Threshold float64
	// Horizon is how many days after the last level to look (365 if 0).
	Horizon int
}

// Forecast is the answer.
type Forecast struct {
	Kind Kind
	// Why explains NoReliableTrend and NotWithinHorizon.
	Why string
	// Days after the last level's day: the median crossing and its 80%
	// interval (Hi is +Inf when the 90th percentile lies beyond the
	// horizon). Set for Crosses.
	Day, Lo, Hi float64
	// The trend of the regime fitted, per day, with its 80% interval.
	Slope, SlopeLo, SlopeHi float64
	// Level is the fitted level on the last day (trend and weekday);
	// Intercept the trend line's at Levels[0] (without the weekday): the
	// line is Intercept + Slope x days.
	Level, Intercept float64
	// RegimeStart indexes Levels: the first day of the regime fitted.
	RegimeStart int
	// Seasonal: a weekly pattern was found and used.
	Seasonal bool
	// Noise is the robust spread of the days around the fit (1.4826 x
	// the median absolute residual: a standard deviation for normal
	// noise).
	Noise float64
}

// Tuning. minDays: fewer days give no trend. minRegime: fewer days
// since a change give none either (a step's last days may still be a
// regime of their own, down to minTail, so that a step just seen is not
// taken for growth). seasonDays and seasonShare: when a weekly pattern
// is looked for and kept. maxExtrapolate: a crossing further away than
// this many times the regime's length is not given (a trend of two
// weeks says little about next year).
const (
	minDays        = 7
	minRegime      = 7
	minTail        = 3
	seasonDays     = 28
	seasonShare    = 0.4
	maxExtrapolate = 3.0
	slopeQuantiles = 15
	pairsCap       = 60  // points a Theil-Sen fit uses at most (evenly spaced)
	bicPenalty     = 2.0 // times BIC's ln(n) per parameter: a split must pay well
)

// Run computes the forecast.
func Run(in Input) Forecast {
	horizon := in.Horizon
	if horizon <= 0 {
		horizon = 365
	}
	var xs, ys []float64
	for i, v := range in.Levels {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			xs, ys = append(xs, float64(i)), append(ys, v)
		}
	}
	n := len(xs)
	if n < minDays {
		return Forecast{Kind: NoReliableTrend, Why: fmt.Sprintf("%d days with data; a trend needs %d", n, minDays)}
	}
	last := float64(len(in.Levels) - 1)
	if ys[n-1] >= in.Threshold {
		return Forecast{Kind: AlreadyAbove, Level: ys[n-1], RegimeStart: int(xs[0])}
	}
	start := regimeStart(xs, ys)
	rx, ry := xs[start:], ys[start:]
	f := Forecast{RegimeStart: int(rx[0])}
	span := rx[len(rx)-1] - rx[0] + 1
	if len(rx) < minRegime {
		f.Kind = NoReliableTrend
		f.Why = fmt.Sprintf("the level changed %d days ago; a trend needs %d days since", int(last-rx[0]+1), minRegime)
		return f
	}
	a, slopes := theilSen(rx, ry)
	b := slopes.at(0.5)
	f.Slope, f.SlopeLo, f.SlopeHi = b, slopes.at(0.1), slopes.at(0.9)
	// Residuals, the weekly pattern, and the noise left.
	res := make([]float64, len(rx))
	for i := range rx {
		res[i] = ry[i] - (a + b*rx[i])
	}
	var season [7]float64
	if span >= seasonDays {
		season, f.Seasonal = weekly(rx, res, in.Weekday0)
	}
	dow := func(x float64) int { return (int(in.Weekday0) + int(x)) % 7 }
	noise := make([]float64, len(rx))
	for i := range rx {
		noise[i] = res[i] - season[dow(rx[i])]
	}
	slices.Sort(noise)
	f.Noise = 1.4826 * medianAbs(noise)
	f.Level = a + b*last + season[dow(last)]
	f.Intercept = a

	// The crossing's distribution: the first day past the last on which
	// the level (trend, weekday, noise) reaches the threshold, over the
	// trend's uncertainty (lines through the regime's centre at slopes
	// spread as Theil-Sen's) and the noise (the residuals, each day on
	// its own).
	cx := (rx[0] + rx[len(rx)-1]) / 2
	cy := a + b*cx
	cdf := func(slopeAt func(p float64) float64) []float64 {
		out := make([]float64, horizon+1)
		for k := range slopeQuantiles {
			bk := slopeAt((float64(k) + 0.5) / slopeQuantiles)
			survive := 1.0
			for d := 1; d <= horizon; d++ {
				x := last + float64(d)
				need := in.Threshold - (cy + bk*(x-cx) + season[dow(x)])
				survive *= below(noise, need)
				out[d] += (1 - survive) / slopeQuantiles
			}
		}
		return out
	}
	cross := cdf(slopes.at)
	first := func(c []float64, p float64) float64 {
		for d := 1; d < len(c); d++ {
			if c[d] >= p {
				return float64(d)
			}
		}
		return math.Inf(1)
	}
	f.Day, f.Lo, f.Hi = first(cross, 0.5), first(cross, 0.1), first(cross, 0.9)
	switch {
	case math.IsInf(f.Day, 1):
		f.Kind = NotWithinHorizon
		if b <= 0 {
			f.Why = fmt.Sprintf("the level is flat or falling (%s a day)", num(b))
		} else {
			f.Why = fmt.Sprintf("at %s a day the level stays below the threshold for the %d days looked at", num(b), horizon)
		}
		f.Day, f.Lo, f.Hi = 0, 0, 0
		return f
	case f.SlopeLo <= 0:
		// Growth as likely as none: unless the noise alone reaches the
		// threshold (a flat level close to it), no date.
		flat := cdf(func(float64) float64 { return 0 })
		if math.IsInf(first(flat, 0.5), 1) {
			f.Kind = NoReliableTrend
			f.Why = fmt.Sprintf("the growth (%s to %s a day, 80%%) is not distinguishable from the day-to-day noise", num(f.SlopeLo), num(f.SlopeHi))
			f.Day, f.Lo, f.Hi = 0, 0, 0
			return f
		}
	case f.Day > maxExtrapolate*span:
		f.Kind = NoReliableTrend
		f.Why = fmt.Sprintf("the crossing would be in %d days, more than %g times the %d days the trend is fitted on", int(f.Day), maxExtrapolate, int(span))
		f.Day, f.Lo, f.Hi = 0, 0, 0
		return f
	}
	f.Kind = Crosses
	return f
}

// regimeStart returns the index of the first point of the current
// regime: binary segmentation of the points into straight lines, from
// the end (only the latest regime matters), each split kept when it
// lowers the Bayesian information criterion by more than its cost.
func regimeStart(xs, ys []float64) int {
	start := 0
	for {
		m := len(xs) - start
		if m < 2*minRegime {
			return start
		}
		p := newPrefix(xs[start:], ys[start:])
		whole := p.sse(0, m)
		best, bestK := math.Inf(1), -1
		for k := minRegime; k <= m-minTail; k++ {
			if s := p.sse(0, k) + p.sse(k, m); s < best {
				best, bestK = s, k
			}
		}
		if bestK < 0 {
			return start
		}
		// Floor the errors: a perfect fit has none, and ln 0 is -Inf.
		floor := 1e-9 * (p.yy/float64(m) + 1)
		one := float64(m)*math.Log(whole/float64(m)+floor) + bicPenalty*3*math.Log(float64(m))
		two := float64(m)*math.Log(best/float64(m)+floor) + bicPenalty*6*math.Log(float64(m))
		if two >= one {
			return start
		}
		start += bestK
	}
}

// prefix holds running sums for least-squares fits of any run of points.
type prefix struct {
	x, y, xx, xy, yyp []float64
	yy                float64
}

func newPrefix(xs, ys []float64) *prefix {
	p := &prefix{x: make([]float64, len(xs)+1), y: make([]float64, len(xs)+1), xx: make([]float64, len(xs)+1),
		xy: make([]float64, len(xs)+1), yyp: make([]float64, len(xs)+1)}
	// Centred on the first point, so that sums of squares of day numbers
	// in the tens of thousands keep their precision.
	x0, y0 := xs[0], ys[0]
	for i := range xs {
		x, y := xs[i]-x0, ys[i]-y0
		p.x[i+1], p.y[i+1] = p.x[i]+x, p.y[i]+y
		p.xx[i+1], p.xy[i+1], p.yyp[i+1] = p.xx[i]+x*x, p.xy[i]+x*y, p.yyp[i]+y*y
	}
	p.yy = p.yyp[len(xs)]
	return p
}

// sse is the least-squares line's sum of squared errors over points
// [i, j).
func (p *prefix) sse(i, j int) float64 {
	n := float64(j - i)
	sx, sy := p.x[j]-p.x[i], p.y[j]-p.y[i]
	sxx, sxy, syy := p.xx[j]-p.xx[i], p.xy[j]-p.xy[i], p.yyp[j]-p.yyp[i]
	vx := sxx - sx*sx/n
	vy := syy - sy*sy/n
	if vx <= 0 {
		return math.Max(vy, 0)
	}
	cxy := sxy - sx*sy/n
	return math.Max(vy-cxy*cxy/vx, 0)
}

// slopeDist is the sorted slopes between pairs of points, and how many
// points they came from (for the ranks of the interval).
type slopeDist struct {
	s []float64
	n int
}

// at returns the slope at quantile q of Theil-Sen's estimate: the median
// for q = 0.5, otherwise the rank Kendall's statistic gives for a
// two-sided interval of level 2|q-0.5|.
func (d slopeDist) at(q float64) float64 {
	if len(d.s) == 0 {
		return 0
	}
	N := float64(len(d.s))
	n := float64(d.n)
	sd := math.Sqrt(n * (n - 1) * (2*n + 5) / 18)
	z := math.Sqrt2 * math.Erfinv(2*q-1)
	r := (N - 1 + z*sd) / 2
	r = math.Max(0, math.Min(N-1, r))
	lo := int(math.Floor(r))
	hi := min(lo+1, len(d.s)-1)
	return d.s[lo] + (r-float64(lo))*(d.s[hi]-d.s[lo])
}

// theilSen returns the intercept and the distribution of slopes of the
// points (at most pairsCap of them, evenly spaced, are paired).
func theilSen(xs, ys []float64) (float64, slopeDist) {
	if len(xs) > pairsCap {
		var sx, sy []float64
		for i := range pairsCap {
			k := i * (len(xs) - 1) / (pairsCap - 1)
			sx, sy = append(sx, xs[k]), append(sy, ys[k])
		}
		_, d := theilSen(sx, sy)
		b := d.at(0.5)
		return intercept(xs, ys, b), d
	}
	var s []float64
	for i := range xs {
		for j := i + 1; j < len(xs); j++ {
			if xs[j] != xs[i] {
				s = append(s, (ys[j]-ys[i])/(xs[j]-xs[i]))
			}
		}
	}
	sort.Float64s(s)
	d := slopeDist{s, len(xs)}
	return intercept(xs, ys, d.at(0.5)), d
}

func intercept(xs, ys []float64, b float64) float64 {
	r := make([]float64, len(xs))
	for i := range xs {
		r[i] = ys[i] - b*xs[i]
	}
	sort.Float64s(r)
	return median(r)
}

// weekly returns each weekday's median residual and whether
// the pattern explains at least seasonShare of the residuals' spread.
func weekly(xs, res []float64, wd0 time.Weekday) ([7]float64, bool) {
	var by [7][]float64
	for i, x := range xs {
		d := (int(wd0) + int(x)) % 7
		by[d] = append(by[d], res[i])
	}
	// Offsets from the trend line, not centred: Theil-Sen's line passes
	// through the typical days (five weekdays, say), and the pattern is
	// how the others differ from it.
	var s [7]float64
	for d := range by {
		if len(by[d]) < 2 {
			return [7]float64{}, false
		}
		sort.Float64s(by[d])
		s[d] = median(by[d])
	}
	before := make([]float64, len(res))
	after := make([]float64, len(res))
	for i, x := range xs {
		before[i] = res[i]
		after[i] = res[i] - s[(int(wd0)+int(x))%7]
	}
	// Mean absolute values: a median would miss a pattern of two days in
	// seven (weekends), which leaves most residuals unchanged.
	b, a := meanAbs(before), meanAbs(after)
	if b == 0 || 1-(a*a)/(b*b) < seasonShare {
		return [7]float64{}, false
	}
	return s, true
}

func meanAbs(vs []float64) float64 {
	var s float64
	for _, v := range vs {
		s += math.Abs(v)
	}
	return s / float64(len(vs))
}

// below is the share of sorted values under v.
func below(sorted []float64, v float64) float64 {
	return float64(sort.SearchFloat64s(sorted, v)) / float64(len(sorted))
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// medianAbs is the median of |v| of values sorted or not.
func medianAbs(vs []float64) float64 {
	a := make([]float64, len(vs))
	for i, v := range vs {
		a[i] = math.Abs(v)
	}
	sort.Float64s(a)
	return median(a)
}

// num formats a rate for a reason: three significant digits.
func num(v float64) string { return fmt.Sprintf("%.3g", v) }
