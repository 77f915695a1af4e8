package query

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/headroomdb/headroom/storage/series"
)

// neumaierAdd adds x to the compensated sum (s, c): Neumaier's variant of
// Kahan summation, which Prometheus uses so that sums of many samples of
// different magnitudes do not drift. An infinite sum drops the
// compensation, which would otherwise turn into NaN.
func neumaierAdd(s, c, x float64) (float64, float64) {
	t := s + x
	switch {
	case math.IsInf(t, 0):
		c = 0
	case math.Abs(s) >= math.Abs(x):
		c += (s - t) + x
	default:
		c += (x - t) + s
	}
	return t, c
}

// avgPoints is the mean of a window: a compensated sum divided once,
// unless the sum overflows, when it goes on as an incremental mean (as
// Prometheus does) so that huge values still average to a finite number.
func avgPoints(p []Point) float64 {
	// The usual case first: no infinity on the way (once the sum is
	// infinite it stays so, or becomes NaN), so a finite result means
	// the loop below would have computed exactly this.
	var s, c float64
	for _, x := range p {
		t := s + x.V
		if math.Abs(s) >= math.Abs(x.V) {
			c += (s - t) + x.V
		} else {
			c += (x.V - t) + s
		}
		s = t
	}
	if r := (s + c) / float64(len(p)); !math.IsInf(r, 0) && !math.IsNaN(r) {
		return r
	}
	s, c = 0, 0
	for i, x := range p {
		ns, nc := neumaierAdd(s, c, x.V)
		if i == 0 || !math.IsInf(ns, 0) {
			s, c = ns, nc
			continue
		}
		mean, mc := s/float64(i), c/float64(i)
		for j, y := range p[i:] {
			n := float64(i + j + 1)
			if math.IsInf(mean, 0) {
				if math.IsInf(y.V, 0) && (mean > 0) == (y.V > 0) {
					continue // the mean stays that infinity
				}
				if !math.IsInf(y.V, 0) && !math.IsNaN(y.V) {
					continue // a finite value cannot move an infinite mean
				}
			}
			mean, mc = neumaierAdd(mean, mc, y.V/n-(mean+mc)/n)
		}
		return mean + mc
	}
	return (s + c) / float64(len(p))
}

// rangeFunc computes a function of one window's points (at least one)
// evaluated at time t with window length w (ms); ok false: no value.
type rangeFunc func(pts []Point, t, w int64, arg, arg2 float64) (float64, bool)

var rangeFuncs = map[string]rangeFunc{
	"rate": func(p []Point, t, w int64, _, _ float64) (float64, bool) {
		return extrapolatedRate(p, t, w, true, true)
	},
	"increase": func(p []Point, t, w int64, _, _ float64) (float64, bool) {
		return extrapolatedRate(p, t, w, true, false)
	},
	"delta": func(p []Point, t, w int64, _, _ float64) (float64, bool) {
		return extrapolatedRate(p, t, w, false, false)
	},
	"irate":         func(p []Point, _, _ int64, _, _ float64) (float64, bool) { return instantRate(p, true) },
	"idelta":        func(p []Point, _, _ int64, _, _ float64) (float64, bool) { return instantRate(p, false) },
	"avg_over_time": func(p []Point, _, _ int64, _, _ float64) (float64, bool) { return avgPoints(p), true },
	"sum_over_time": func(p []Point, _, _ int64, _, _ float64) (float64, bool) {
		var s, c float64
		for _, x := range p {
			s, c = neumaierAdd(s, c, x.V)
		}
		return s + c, true
	},
	"min_over_time": func(p []Point, _, _ int64, _, _ float64) (float64, bool) {
		m := p[0].V
		for _, x := range p[1:] {
			if x.V < m || math.IsNaN(m) {
				m = x.V
			}
		}
		return m, true
	},
	"max_over_time": func(p []Point, _, _ int64, _, _ float64) (float64, bool) {
		m := p[0].V
		for _, x := range p[1:] {
			if x.V > m || math.IsNaN(m) {
				m = x.V
			}
		}
		return m, true
	},
	"count_over_time": func(p []Point, _, _ int64, _, _ float64) (float64, bool) { return float64(len(p)), true },
	"last_over_time":  func(p []Point, _, _ int64, _, _ float64) (float64, bool) { return p[len(p)-1].V, true },
	"first_over_time": func(p []Point, _, _ int64, _, _ float64) (float64, bool) { return p[0].V, true },
	// The median of the deviations from the median (an experimental
	// function in Prometheus 3); a NaN sample makes it NaN.
	"mad_over_time": func(p []Point, _, _ int64, _, _ float64) (float64, bool) {
		vs := make([]float64, len(p))
		for i, x := range p {
			if math.IsNaN(x.V) {
				return math.NaN(), true
			}
			vs[i] = x.V
		}
		m := quantile(0.5, vs)
		for i := range vs {
			vs[i] = math.Abs(vs[i] - m)
		}
		return quantile(0.5, vs), true
	},
	// Prometheus 3's timestamps of a window's extremes (the latest of
	// equal ones), of its last and of its first sample, in seconds.
	"ts_of_max_over_time": func(p []Point, _, _ int64, _, _ float64) (float64, bool) {
		return tsOfExtreme(p, func(cur, m float64) bool { return cur >= m || math.IsNaN(m) }), true
	},
	"ts_of_min_over_time": func(p []Point, _, _ int64, _, _ float64) (float64, bool) {
		return tsOfExtreme(p, func(cur, m float64) bool { return cur <= m || math.IsNaN(m) }), true
	},
	"ts_of_last_over_time":  func(p []Point, _, _ int64, _, _ float64) (float64, bool) { return float64(p[len(p)-1].T) / 1000, true },
	"ts_of_first_over_time": func(p []Point, _, _ int64, _, _ float64) (float64, bool) { return float64(p[0].T) / 1000, true },
	// Holt's linear smoothing: sf weighs the newest sample, tf the
	// newest trend (both checked to be in (0, 1) beforehand).
	"double_exponential_smoothing": func(p []Point, _, _ int64, sf, tf float64) (float64, bool) {
		if len(p) < 2 {
			return 0, false
		}
		s0, s1, b := 0.0, p[0].V, p[1].V-p[0].V
		for i := 1; i < len(p); i++ {
			if i > 1 {
				b = tf*(s1-s0) + (1-tf)*b
			}
			s0, s1 = s1, sf*p[i].V+(1-sf)*(s1+b)
		}
		return s1, true
	},
	// The area under the samples over the window (value x seconds): by
	// the left points (strategy 0), the right points (1) or trapezoids
	// (2, the default); a NaN counts as 0.
	"integral": func(p []Point, _, _ int64, strategy, _ float64) (float64, bool) {
		return integral(p, int(strategy)), true
	},
	"present_over_time": func(p []Point, _, _ int64, _, _ float64) (float64, bool) { return 1, true },
	"stddev_over_time":  func(p []Point, _, _ int64, _, _ float64) (float64, bool) { return math.Sqrt(variance(p)), true },
	"stdvar_over_time":  func(p []Point, _, _ int64, _, _ float64) (float64, bool) { return variance(p), true },
	"quantile_over_time": func(p []Point, _, _ int64, q, _ float64) (float64, bool) {
		vs := make([]float64, len(p))
		for i, x := range p {
			vs[i] = x.V
		}
		return quantile(q, vs), true
	},
	"changes": func(p []Point, _, _ int64, _, _ float64) (float64, bool) {
		n := 0
		for i := 1; i < len(p); i++ {
			if p[i].V != p[i-1].V && !(math.IsNaN(p[i].V) && math.IsNaN(p[i-1].V)) {
				n++
			}
		}
		return float64(n), true
	},
	"resets": func(p []Point, _, _ int64, _, _ float64) (float64, bool) {
		n := 0
		for i := 1; i < len(p); i++ {
			if p[i].V < p[i-1].V {
				n++
			}
		}
		return float64(n), true
	},
	"deriv": func(p []Point, _, _ int64, _, _ float64) (float64, bool) {
		if len(p) < 2 {
			return 0, false
		}
		slope, _ := linearRegression(p, p[0].T)
		return slope, true
	},
	"predict_linear": func(p []Point, t, _ int64, dur, _ float64) (float64, bool) {
		if len(p) < 2 {
			return 0, false
		}
		slope, icept := linearRegression(p, t)
		return slope*dur + icept, true
	},
}

func integral(p []Point, strategy int) float64 {
	zero := func(v float64) float64 {
		if math.IsNaN(v) {
			return 0
		}
		return v
	}
	var sum, c float64
	for i := 1; i < len(p); i++ {
		prev, cur := zero(p[i-1].V), zero(p[i].V)
		var v, cv float64
		switch strategy {
		case 0:
			v = prev
		case 1:
			v = cur
		default:
			if prev != 0 || cur != 0 {
				v, cv = neumaierAdd(prev, 0, cur)
				if math.IsInf(v, 0) && !math.IsInf(cur, 0) && !math.IsInf(prev, 0) {
					v, cv = neumaierAdd(prev/2, 0, cur/2) // finite halves do not overflow
				} else {
					v, cv = v/2, cv/2
				}
			}
		}
		if v != 0 || cv != 0 {
			dt := float64(p[i].T-p[i-1].T) / 1000
			sum, c = neumaierAdd(sum, c+cv*dt, v*dt)
		}
	}
	if math.IsInf(sum, 0) {
		return sum
	}
	return sum + c
}

// tsOfExtreme is the time, in seconds, of the sample that better says is
// the window's extreme so far.
func tsOfExtreme(p []Point, better func(cur, m float64) bool) float64 {
	m, t := p[0].V, p[0].T
	for _, x := range p[1:] {
		if better(x.V, m) {
			m, t = x.V, x.T
		}
	}
	return float64(t) / 1000
}

// extrapolatedRate is Prometheus's rate/increase/delta: the change over
// the window's samples, corrected for counter resets, extrapolated to the
// window's edges unless the series starts or ends well inside it (or, for
// counters, would go below zero).
func extrapolatedRate(p []Point, t, w int64, counter, perSecond bool) (float64, bool) {
	if len(p) < 2 {
		return 0, false
	}
	first, last := p[0], p[len(p)-1]
	result := last.V - first.V
	if counter {
		prev := first.V
		for _, x := range p[1:] {
			if x.V < prev {
				result += prev
			}
			prev = x.V
		}
	}
	return extrapolate(first, last, len(p), result, t, w, counter, perSecond), true
}

// extrapolate is Prometheus's extrapolation of the change result between
// the first and last of n samples to the window (t-w, t]: rollups give
// the same inputs for a run of buckets as the samples do.
func extrapolate(first, last Point, n int, result float64, t, w int64, counter, perSecond bool) float64 {
	sampled, toStart, toEnd := extrapolationSpan(first.T, last.T, first.V, n, result, t, w, counter)
	result *= (sampled + toStart + toEnd) / sampled
	if perSecond {
		result /= float64(w) / 1000
	}
	return result
}

// extrapolationFactor is what extrapolate multiplies a change by (not
// per second): histograms scale their buckets by it.
func extrapolationFactor(firstT, lastT int64, firstV float64, n int, result float64, t, w int64, counter bool) float64 {
	sampled, toStart, toEnd := extrapolationSpan(firstT, lastT, firstV, n, result, t, w, counter)
	return (sampled + toStart + toEnd) / sampled
}

// extrapolationSpan returns the seconds the samples span and how far the
// change extends before and after them.
func extrapolationSpan(firstT, lastT int64, firstV float64, n int, result float64, t, w int64, counter bool) (sampled, toStart, toEnd float64) {
	rangeStart, rangeEnd := float64(t-w)/1000, float64(t)/1000
	sampled = float64(lastT-firstT) / 1000
	avgGap := sampled / float64(n-1)
	toStart = float64(firstT)/1000 - rangeStart
	toEnd = rangeEnd - float64(lastT)/1000
	// A series that starts or ends well inside the window (no sample
	// where the spacing says one should be) is extrapolated by half a
	// gap only. Then, as Prometheus 3 does (in this order), a counter is
	// not extrapolated below zero.
	threshold := avgGap * 1.1
	if toStart >= threshold {
		toStart = avgGap / 2
	}
	if counter && result > 0 && firstV >= 0 {
		if toZero := sampled * (firstV / result); toZero < toStart {
			toStart = toZero
		}
	}
	if toEnd >= threshold {
		toEnd = avgGap / 2
	}
	return sampled, toStart, toEnd
}

// instantRate is irate/idelta: from the last two samples.
func instantRate(p []Point, perSecond bool) (float64, bool) {
	if len(p) < 2 {
		return 0, false
	}
	a, b := p[len(p)-2], p[len(p)-1]
	d := b.V - a.V
	if perSecond {
		if b.V < a.V {
			d = b.V // counter reset
		}
		dt := float64(b.T-a.T) / 1000
		if dt == 0 {
			return 0, false
		}
		return d / dt, true
	}
	return d, true
}

func variance(p []Point) float64 {
	var mean, m2 float64
	for i, x := range p {
		d := x.V - mean
		mean += d / float64(i+1)
		m2 += d * (x.V - mean)
	}
	return m2 / float64(len(p))
}

// linearRegression fits v = slope*(t-t0) + intercept by least squares, t
// in seconds.
func linearRegression(p []Point, t0 int64) (slope, intercept float64) {
	var n, sumX, sumY, sumXY, sumX2 float64
	constY := true
	for i, x := range p {
		if i > 0 && x.V != p[0].V {
			constY = false
		}
		dx := float64(x.T-t0) / 1000
		n++
		sumX += dx
		sumY += x.V
		sumXY += dx * x.V
		sumX2 += dx * dx
	}
	if constY {
		if math.IsInf(p[0].V, 0) {
			return math.NaN(), math.NaN()
		}
		return 0, p[0].V
	}
	cov := sumXY - sumX*sumY/n
	varX := sumX2 - sumX*sumX/n
	slope = cov / varX
	intercept = sumY/n - slope*sumX/n
	return slope, intercept
}

// quantile is Prometheus's: linear interpolation between the closest
// ranks; q outside [0, 1] gives ∓Inf.
func quantile(q float64, vs []float64) float64 {
	if len(vs) == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	if q < 0 {
		return math.Inf(-1)
	}
	if q > 1 {
		return math.Inf(1)
	}
	sort.Float64s(vs)
	rank := q * float64(len(vs)-1)
	lo := math.Max(0, math.Floor(rank))
	hi := math.Min(float64(len(vs)-1), lo+1)
	w := rank - lo
	if w == 0 {
		return vs[int(lo)] // an infinity next to it must not make NaN
	}
	return vs[int(lo)]*(1-w) + vs[int(hi)]*w
}

// keepsName lists the functions whose result keeps the metric name.
var keepsName = map[string]bool{"info": true, "last_over_time": true, "first_over_time": true, "sort": true, "sort_desc": true, "sort_by_label": true, "sort_by_label_desc": true, "label_replace": true, "label_join": true}

func (ev *evaluator) call(e *parser.Call) (value, error) {
	name := e.Func.Name
	if f, ok := rangeFuncs[name]; ok {
		return ev.callRange(e, f)
	}
	if f, ok := histFuncs[name]; ok {
		return ev.callHist(e, f)
	}
	if f, ok := mathFuncs[name]; ok {
		if len(e.Args) != 1 {
			return nil, argCount(name, 1, len(e.Args))
		}
		v, err := ev.vectorArg(e, 0)
		if err != nil {
			return nil, err
		}
		return ev.mapVector(v, func(x float64) float64 { return f(x) }, true), nil
	}
	if f, ok := dateFuncs[name]; ok {
		var v vectorValue
		switch len(e.Args) {
		case 0:
			s := ev.newSeries(series.Labels{})
			for i := range s.v {
				s.v[i], s.ok[i] = float64(ev.ts(i))/1000, true
			}
			v.series = []*vecSeries{s}
		case 1:
			var err error
			if v, err = ev.vectorArg(e, 0); err != nil {
				return nil, err
			}
		default:
			return nil, argCount(name, 1, len(e.Args))
		}
		return ev.mapVector(v, func(x float64) float64 {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return math.NaN()
			}
			return f(time.Unix(int64(x), 0).UTC())
		}, true), nil
	}
	// The query's own times, as Prometheus 3's step(), start() and end()
	// give them (an instant query has no step). range() needs a parser
	// that knows it.
	queryScalar := func(f func() float64) (value, error) {
		if len(e.Args) != 0 {
			return nil, argCount(name, 0, len(e.Args))
		}
		s := make(scalarValue, ev.steps())
		for i := range s {
			s[i] = f()
		}
		return s, nil
	}
	switch name {
	case "step":
		// The query's, also inside a subquery (0 for an instant query).
		return queryScalar(func() float64 { return float64(ev.queryStep) / 1000 })
	case "start":
		return queryScalar(func() float64 { return float64(ev.queryStart) / 1000 })
	case "end":
		return queryScalar(func() float64 { return float64(ev.queryEnd) / 1000 })
	case "range":
		return queryScalar(func() float64 { return float64(ev.queryEnd-ev.queryStart) / 1000 })
	case "min_of", "max_of":
		a, err := ev.scalarArg(e, 0, 2)
		if err != nil {
			return nil, err
		}
		b, err := ev.scalarArg(e, 1, 2)
		if err != nil {
			return nil, err
		}
		out := make(scalarValue, len(a))
		for i := range a {
			if name == "min_of" {
				out[i] = math.Min(a[i], b[i])
			} else {
				out[i] = math.Max(a[i], b[i])
			}
		}
		return out, nil
	case "pi":
		if len(e.Args) != 0 {
			return nil, argCount(name, 0, len(e.Args))
		}
		s := make(scalarValue, ev.steps())
		for i := range s {
			s[i] = math.Pi
		}
		return s, nil
	case "time":
		s := make(scalarValue, ev.steps())
		for i := range s {
			s[i] = float64(ev.ts(i)) / 1000
		}
		return s, nil
	case "vector":
		sv, err := ev.scalarArg(e, 0, 1)
		if err != nil {
			return nil, err
		}
		s := ev.newSeries(series.Labels{})
		for i := range s.v {
			s.v[i], s.ok[i] = sv[i], true
		}
		return vectorValue{series: []*vecSeries{s}}, nil
	case "scalar":
		v, err := ev.vectorArg(e, 0)
		if err != nil {
			return nil, err
		}
		out := make(scalarValue, ev.steps())
		for i := range out {
			out[i] = math.NaN()
			n := 0
			for _, s := range v.series {
				if s.ok[i] {
					out[i] = s.v[i]
					n++
				}
			}
			if n != 1 {
				out[i] = math.NaN()
			}
		}
		return out, nil
	case "timestamp":
		v, err := ev.vectorArgAll(e, 0)
		if err != nil {
			return nil, err
		}
		out := vectorValue{}
		for _, s := range v.series {
			o := ev.newNameless(s)
			for i := range s.v {
				if s.ok[i] {
					t := ev.ts(i)
					if s.t != nil {
						t = s.t[i]
					}
					o.v[i], o.ok[i] = float64(t)/1000, true
				}
			}
			out.series = append(out.series, o)
		}
		return out, nil
	case "clamp", "clamp_min", "clamp_max":
		want := map[string]int{"clamp": 3, "clamp_min": 2, "clamp_max": 2}[name]
		if len(e.Args) != want {
			return nil, argCount(name, want, len(e.Args))
		}
		v, err := ev.vectorArg(e, 0)
		if err != nil {
			return nil, err
		}
		a, err := ev.scalarArg(e, 1, want)
		if err != nil {
			return nil, err
		}
		b := a
		if name == "clamp" {
			if b, err = ev.scalarArg(e, 2, want); err != nil {
				return nil, err
			}
		}
		out := vectorValue{}
		for _, s := range v.series {
			o := ev.newNameless(s)
			for i := range s.v {
				if !s.ok[i] {
					continue
				}
				x := s.v[i]
				switch name {
				case "clamp":
					if a[i] > b[i] {
						continue // an empty result, as Prometheus
					}
					x = math.Max(a[i], math.Min(b[i], x))
				case "clamp_min":
					x = math.Max(a[i], x)
				case "clamp_max":
					x = math.Min(a[i], x)
				}
				o.v[i], o.ok[i] = x, true
			}
			out.series = append(out.series, o)
		}
		return out, nil
	case "round":
		v, err := ev.vectorArg(e, 0)
		if err != nil {
			return nil, err
		}
		to := make(scalarValue, ev.steps())
		for i := range to {
			to[i] = 1
		}
		if len(e.Args) == 2 {
			if to, err = ev.scalarArg(e, 1, 2); err != nil {
				return nil, err
			}
		}
		out := vectorValue{}
		for _, s := range v.series {
			o := ev.newNameless(s)
			for i := range s.v {
				if s.ok[i] {
					inv := 1 / to[i]
					o.v[i], o.ok[i] = math.Floor(s.v[i]*inv+0.5)/inv, true
				}
			}
			out.series = append(out.series, o)
		}
		return out, nil
	case "sort", "sort_desc":
		ev.sortInRange(e)
		v, err := ev.vectorArg(e, 0)
		if err != nil {
			return nil, err
		}
		desc := name == "sort_desc"
		sort.SliceStable(v.series, func(i, j int) bool {
			a, b := v.series[i].v[0], v.series[j].v[0]
			if math.IsNaN(a) {
				return false // NaN last either way
			}
			if math.IsNaN(b) {
				return true
			}
			if desc {
				return a > b
			}
			return a < b
		})
		return v, nil
	case "sort_by_label", "sort_by_label_desc":
		// Prometheus 3 (an experimental function): by the labels' values
		// in natural order, then by the whole label set.
		ev.sortInRange(e)
		v, err := ev.vectorArgAll(e, 0)
		if err != nil {
			return nil, err
		}
		names, err := ev.stringArgs(e, 1)
		if err != nil {
			return nil, err
		}
		sign := 1
		if name == "sort_by_label_desc" {
			sign = -1
		}
		slices.SortStableFunc(v.series, func(a, b *vecSeries) int {
			for _, n := range names {
				if c := naturalCompare(a.labels.Get(n), b.labels.Get(n)); c != 0 {
					return sign * c
				}
			}
			return sign * series.Compare(a.labels, b.labels)
		})
		return v, nil
	case "info":
		return ev.info(e)
	case "label_replace":
		return ev.labelReplace(e)
	case "label_join":
		return ev.labelJoin(e)
	case "absent":
		v, err := ev.vectorArgAll(e, 0)
		if err != nil {
			return nil, err
		}
		return ev.absent(absentLabels(e.Args[0]), v), nil
	case "absent_over_time":
		if len(e.Args) != 1 {
			return nil, argCount(name, 1, len(e.Args))
		}
		present, err := ev.callRange(&parser.Call{Func: parser.Functions["present_over_time"], Args: e.Args}, rangeFuncs["present_over_time"])
		if err != nil {
			return nil, err
		}
		return ev.absent(absentLabels(e.Args[0]), present.(vectorValue)), nil
	case "histogram_quantile":
		return ev.histogramQuantile(e)
	case "histogram_fraction":
		return ev.histogramFraction(e)
	case "histogram_quantiles":
		return ev.histogramQuantiles(e)
	}
	return nil, fmt.Errorf("%w: unknown function with name %q", ErrBadQuery, name)
}

// sortInRange warns, as Prometheus does, that sorting a range query's
// answer does nothing: matrices come ordered by labels.
func (ev *evaluator) sortInRange(e *parser.Call) {
	if ev.start != ev.end {
		ev.annotate(annotations.NewSortInRangeQueryWarning(e.PositionRange()))
	}
}

func argCount(name string, want, got int) error {
	return fmt.Errorf("%w: expected %d argument(s) in call to %q, got %d", ErrBadQuery, want, name, got)
}

// callRange applies a range function to its range-vector argument.
func (ev *evaluator) callRange(e *parser.Call, f rangeFunc) (value, error) {
	fold := ev.fold
	ev.fold = nil
	argIdx := 0
	if e.Func.Name == "quantile_over_time" {
		argIdx = 1
	}
	re, ok, err := ev.rollupOf(e.Args[argIdx])
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: expected type range vector in call to function %q, got instant vector", ErrBadQuery, e.Func.Name)
	}
	if re.anchored || re.smoothed {
		return ev.extendedRange(e, re)
	}
	// The scalar arguments, in order (the parser checked their types).
	var param, param2 scalarValue
	for i := range e.Args {
		if i == argIdx {
			continue
		}
		v, err := ev.scalarArg(e, i, len(e.Args))
		if err != nil {
			return nil, err
		}
		if param == nil {
			param = v
		} else {
			param2 = v
		}
	}
	switch e.Func.Name {
	case "integral":
		if param == nil {
			param = ev.constant(2)
		}
		for i, s := range param {
			if math.IsNaN(s) || math.Trunc(s) != s || s < 0 || s > 2 {
				ev.annotate(annotations.NewInvalidIntegralStrategyWarning(s, e.Args[1].PositionRange()))
				param[i] = 2
			}
		}
	case "quantile_over_time":
		ev.checkQuantile(param, e.Args[0].PositionRange())
	case "double_exponential_smoothing":
		for i := range param {
			if !(param[i] > 0 && param[i] < 1) {
				return nil, fmt.Errorf("%w: invalid smoothing factor. Expected: 0 < sf < 1, got: %f", ErrExec, param[i])
			}
			if !(param2[i] > 0 && param2[i] < 1) {
				return nil, fmt.Errorf("%w: invalid trend factor. Expected: 0 < tf < 1, got: %f", ErrExec, param2[i])
			}
		}
	}
	out := vectorValue{}
	predictAtStep := e.Func.Name == "predict_linear"
	// apply computes the function over one series' points at every step.
	hf := histRangeFuncs[e.Func.Name]
	apply := func(m *matrixArg, ls series.Labels, pts []Point, hpts []HPoint) *vecSeries {
		var hc *histCall
		if len(hpts) > 0 {
			hc = &histCall{ev: ev, name: ls.Get(series.MetricName), pos: e.Args[argIdx].PositionRange()}
		}
		dropped := false
		if !keepsName[e.Func.Name] {
			ls, dropped = ev.nameless(ls)
		}
		o := ev.newSeries(ls)
		o.dropName = dropped
		any := false
		lo, hi, hlo, hhi := 0, 0, 0, 0
		end := len(o.v)
		if m.toStep > 0 {
			end = m.toStep
		}
		for i := m.fromStep; i < end; i++ {
			t := m.evalTime(ev, i)
			// Windows only move forward: advance the bounds instead of
			// searching for them.
			for lo < len(pts) && pts[lo].T <= t-m.window {
				lo++
			}
			for hi < len(pts) && pts[hi].T <= t {
				hi++
			}
			if hc != nil {
				for hlo < len(hpts) && hpts[hlo].T <= t-m.window {
					hlo++
				}
				for hhi < len(hpts) && hpts[hhi].T <= t {
					hhi++
				}
				if hhi > hlo {
					if hf == nil {
						// Prometheus's other range functions skip
						// histograms, saying so when floats remain.
						if hi > lo {
							ev.annotate(annotations.NewHistogramIgnoredInMixedRangeInfo(hc.name, hc.pos))
						}
					} else {
						if f, h, isHist, ok := hf(hc, hpts[hlo:hhi], pts[lo:hi], t, m.window); ok {
							o.v[i], o.ok[i], any = f, true, true
							if isHist {
								o.setHist(i, h)
							}
						}
						continue
					}
				}
			}
			if hi <= lo {
				continue
			}
			var p, p2 float64
			if param != nil {
				p = param[i]
			}
			if param2 != nil {
				p2 = param2[i]
			}
			ft := t
			if predictAtStep {
				// Prometheus predicts from the evaluation time, whatever
				// @ or offset chose the window (functions.test:435).
				ft = ev.ts(i)
			}
			if v, ok := f(pts[lo:hi], ft, m.window, p, p2); ok {
				o.v[i], o.ok[i], any = v, true, true
			}
		}
		if !any {
			return nil
		}
		return o
	}
	if !re.subquery() && re.at == nil {
		// A plain range selector: series straight from storage into a
		// reused buffer, in parallel when the source can split the
		// selection.
		me, w, off := re.sel, re.window, re.off
		m := &matrixArg{window: w, off: off}
		first, last := ev.evalTimes(off, nil)
		if fold != nil {
			fold.used = true // the series go into it
		}
		// From a rollup tier where one answers as raw data would; the
		// steps after its watermark from raw.
		var fromTier []*vecSeries
		if tier, split, ok := ev.planTier(e.Func.Name, w, off); ok {
			ms, err := matchersOf(me)
			if err != nil {
				return nil, err
			}
			if fromTier, err = ev.tierSeries(e.Func.Name, tier, ms, w, off, split, param, fold); err != nil {
				return nil, err
			}
			tierSteps := int((split+off-ev.start)/ev.step) + 1
			// The steps a tier answered take their histograms from the
			// tier's histogram buckets where those answer fn, else from
			// raw samples (reading nothing else); fn that ignores
			// histograms reads none.
			hts, histTier := ev.src.(HistRollupSource)
			switch {
			case !ev.mayHoldHistograms() || histRangeFuncs[e.Func.Name] == nil:
			case histTier && histTierFuncs[e.Func.Name]:
				hres, err := ev.tierHistSeries(e.Func.Name, hts, tier, ms, w, off, split, fold, e.Args[argIdx].PositionRange())
				if err != nil {
					return nil, err
				}
				fromTier = mergeTiers(fromTier, hres, 0)
			default:
				hm := &matrixArg{window: w, off: off, toStep: min(tierSteps, ev.steps())}
				hres, err := ev.histogramsOnly().parallelEach(me, first-w+1, min(split, last), false, func(k int, ls series.Labels, pts []Point, hpts []HPoint) *vecSeries {
					o := apply(hm, ls, nil, hpts)
					if fold != nil && o != nil {
						fold.add(k, o)
						return nil
					}
					return o
				})
				if err != nil {
					return nil, err
				}
				fromTier = mergeTiers(fromTier, hres, 0)
			}
			if split >= last {
				out.series = fromTier
				return out, ev.checkCtx()
			}
			m.fromStep = tierSteps
			first = ev.ts(m.fromStep) - off
		}
		res, err := ev.parallelEach(me, first-w+1, last, false, func(k int, ls series.Labels, pts []Point, hpts []HPoint) *vecSeries {
			o := apply(m, ls, pts, hpts)
			if fold != nil && o != nil {
				fold.add(k, o) // steps from m.fromStep: none the tier gave
				return nil
			}
			return o
		})
		if err != nil {
			return nil, err
		}
		out.series = mergeTiers(fromTier, res, m.fromStep)
		return out, ev.checkCtx()
	}
	if re.subquery() && re.at == nil {
		res, ok, err := ev.subquerySelector(re, apply)
		if err != nil || ok {
			out.series = res
			return out, err
		}
	}
	m, err := ev.rangeSeries(re)
	if err != nil {
		return nil, err
	}
	for _, s := range m.series {
		if o := apply(m, s.labels, s.pts, s.hpts); o != nil {
			o.dropName = o.dropName || s.dropName
			out.series = append(out.series, o)
		}
	}
	return out, ev.checkCtx()
}

// subquerySelector evaluates a range function over a subquery whose
// inner expression is a vector selector under relabelling functions only
// (the dashboard idiom `max_over_time(label_replace(x, ...)[1h:10s])`):
// each series' subquery points come straight from its samples, in
// parallel shards, instead of materialising the inner vector at every
// subquery step. ok is false when the expression has another shape, or
// when relabelling makes two series one (the general path then gives
// Prometheus's answer or error).
func (ev *evaluator) subquerySelector(re *rangeArg, apply func(*matrixArg, series.Labels, []Point, []HPoint) *vecSeries) (res []*vecSeries, ok bool, err error) {
	me, relabel, err := ev.relabelChain(re.sub)
	if me == nil || err != nil {
		return nil, false, err
	}
	// The inner selector's own modifiers would move its samples off
	// the subquery's grid: the general path handles them.
	if me.OriginalOffset != 0 || me.OriginalOffsetExpr != nil || me.Timestamp != nil || me.StartOrEnd != 0 {
		return nil, false, nil
	}
	w, off, sub := re.window, re.off, re.step
	first, last := ev.evalTimes(off, nil)
	start, end, err := ev.subqueryGrid(re, first-w, last)
	if err != nil || start > end {
		return nil, err == nil, err
	}
	m := &matrixArg{window: w, off: off}
	scratch := make([][]Point, ev.shards())
	inner := make([][]series.Labels, ev.shards())
	relabelErrs := make([]error, ev.shards())
	sawHist := make([]bool, ev.shards())
	res, err = ev.parallelEach(me, start-ev.lookback+1, end, true, func(k int, ls series.Labels, pts []Point, hpts []HPoint) *vecSeries {
		if len(hpts) > 0 {
			sawHist[k] = true // the general path reads histograms
			return nil
		}
		// The inner selector at each subquery step: the newest sample in
		// (t - lookback, t], unless it is a stale marker.
		sp := slices.Grow(scratch[k][:0], int((end-start)/sub)+1)
		j := -1
		for t := start; t <= end; t += sub {
			for j+1 < len(pts) && pts[j+1].T <= t {
				j++
			}
			if j >= 0 && pts[j].T > t-ev.lookback && !series.IsStaleNaN(pts[j].V) {
				sp = append(sp, Point{T: t, V: pts[j].V})
			}
		}
		scratch[k] = sp
		if len(sp) == 0 {
			return nil
		}
		for _, f := range relabel {
			var err error
			if ls, err = f(ls); err != nil {
				if relabelErrs[k] == nil {
					relabelErrs[k] = err
				}
				return nil
			}
		}
		inner[k] = append(inner[k], ls)
		return apply(m, ls, sp, nil)
	})
	if slices.Contains(sawHist, true) {
		return nil, false, err
	}
	if err == nil {
		err = errors.Join(relabelErrs...)
	}
	if err != nil {
		return nil, false, err
	}
	if len(relabel) > 0 {
		seen := map[string]struct{}{}
		for _, part := range inner {
			for _, ls := range part {
				key := ls.String()
				if _, dup := seen[key]; dup {
					return nil, false, nil
				}
				seen[key] = struct{}{}
			}
		}
	}
	return res, true, ev.checkCtx()
}

// relabelChain splits e into a vector selector and the relabelling
// functions (innermost first) applied to it; me is nil when e is not of
// that shape.
func (ev *evaluator) relabelChain(e parser.Expr) (me *parser.VectorSelector, fs []relabeler, err error) {
	switch e := unwrap(e).(type) {
	case *parser.VectorSelector:
		return e, nil, nil
	case *parser.Call:
		if (e.Func.Name != "label_replace" && e.Func.Name != "label_join") || len(e.Args) == 0 {
			return nil, nil, nil
		}
		me, fs, err := ev.relabelChain(e.Args[0])
		if me == nil || err != nil {
			return nil, nil, err
		}
		f, err := ev.relabelFunc(e)
		if err != nil {
			return nil, nil, err
		}
		return me, append(fs, f), nil
	}
	return nil, nil, nil
}

// vectorArg evaluates argument i as an instant vector of floats: the
// functions that take numbers skip histograms, as Prometheus's do
// (vectorArgAll keeps them).
func (ev *evaluator) vectorArg(e *parser.Call, i int) (vectorValue, error) {
	v, err := ev.vectorArgAll(e, i)
	v, _ = floatsOnly(v)
	return v, err
}

// vectorArgAll evaluates argument i as an instant vector, histograms kept.
func (ev *evaluator) vectorArgAll(e *parser.Call, i int) (vectorValue, error) {
	if i >= len(e.Args) {
		return vectorValue{}, argCount(e.Func.Name, i+1, len(e.Args))
	}
	v, err := ev.eval(e.Args[i])
	if err != nil {
		return vectorValue{}, err
	}
	vv, ok := v.(vectorValue)
	if !ok {
		return vectorValue{}, fmt.Errorf("%w: expected type instant vector in call to function %q, got %s", ErrBadQuery, e.Func.Name, typeName(v))
	}
	return vv, nil
}

func (ev *evaluator) scalarArg(e *parser.Call, i, want int) (scalarValue, error) {
	if i >= len(e.Args) {
		return nil, argCount(e.Func.Name, want, len(e.Args))
	}
	v, err := ev.eval(e.Args[i])
	if err != nil {
		return nil, err
	}
	s, ok := v.(scalarValue)
	if !ok {
		return nil, fmt.Errorf("%w: expected type scalar in call to function %q, got %s", ErrBadQuery, e.Func.Name, typeName(v))
	}
	return s, nil
}

func typeName(v value) string {
	switch v.(type) {
	case scalarValue:
		return "scalar"
	case vectorValue:
		return "instant vector"
	case stringValue:
		return "string"
	}
	return "range vector"
}

func (ev *evaluator) mapVector(v vectorValue, f func(float64) float64, drop bool) vectorValue {
	out := vectorValue{}
	for _, s := range v.series {
		ls, dropped := s.labels, s.dropName
		if drop {
			var d bool
			ls, d = ev.nameless(ls)
			dropped = dropped || d
		}
		o := &vecSeries{labels: ls, v: make([]float64, len(s.v)), ok: append([]bool(nil), s.ok...), dropName: dropped}
		for i := range s.v {
			if s.ok[i] {
				o.v[i] = f(s.v[i])
			}
		}
		out.series = append(out.series, o)
	}
	return out
}

// newNameless is a series for a function's result over s, without its
// metric name (now or at the end).
func (ev *evaluator) newNameless(s *vecSeries) *vecSeries {
	ls, dropped := ev.nameless(s.labels)
	o := ev.newSeries(ls)
	o.dropName = dropped || s.dropName
	return o
}

func dropName(ls series.Labels) series.Labels {
	for i, l := range ls {
		if isMetadataLabel(l.Name) {
			out := make(series.Labels, 0, len(ls)-1)
			out = append(out, ls[:i]...)
			for _, l := range ls[i+1:] {
				if !isMetadataLabel(l.Name) {
					out = append(out, l)
				}
			}
			return out
		}
	}
	return ls
}

// isMetadataLabel says whether a label names the metric rather than the
// series: __name__, and Prometheus 3's __type__ and __unit__, which go
// with it wherever the name is dropped (and are not matched on).
func isMetadataLabel(n string) bool {
	return n == series.MetricName || n == "__type__" || n == "__unit__"
}

var mathFuncs = map[string]func(float64) float64{
	"abs": math.Abs, "ceil": math.Ceil, "floor": math.Floor, "exp": math.Exp, "sqrt": math.Sqrt,
	"ln": math.Log, "log2": math.Log2, "log10": math.Log10,
	"sin": math.Sin, "cos": math.Cos, "tan": math.Tan, "asin": math.Asin, "acos": math.Acos, "atan": math.Atan,
	"sinh": math.Sinh, "cosh": math.Cosh, "tanh": math.Tanh, "asinh": math.Asinh, "acosh": math.Acosh, "atanh": math.Atanh,
	// One factor, not a multiplication then a division: 1e308 stays
	// finite, as in Prometheus.
	"deg": func(x float64) float64 { return x * (180 / math.Pi) },
	"rad": func(x float64) float64 { return x * (math.Pi / 180) },
	"sgn": func(x float64) float64 {
		switch {
		case x > 0:
			return 1
		case x < 0:
			return -1
		}
		return x // 0, -0 and NaN stay
	},
}

var dateFuncs = map[string]func(time.Time) float64{
	"minute":       func(t time.Time) float64 { return float64(t.Minute()) },
	"hour":         func(t time.Time) float64 { return float64(t.Hour()) },
	"day_of_week":  func(t time.Time) float64 { return float64(t.Weekday()) },
	"day_of_month": func(t time.Time) float64 { return float64(t.Day()) },
	"day_of_year":  func(t time.Time) float64 { return float64(t.YearDay()) },
	"days_in_month": func(t time.Time) float64 {
		return float64(32 - time.Date(t.Year(), t.Month(), 32, 0, 0, 0, 0, time.UTC).Day())
	},
	"month": func(t time.Time) float64 { return float64(t.Month()) },
	"year":  func(t time.Time) float64 { return float64(t.Year()) },
}

// absent is 1, labelled ls, at the steps where v has no series.
func (ev *evaluator) absent(ls series.Labels, v vectorValue) vectorValue {
	s := ev.newSeries(ls)
	for i := range s.v {
		s.v[i], s.ok[i] = 1, true
		for _, x := range v.series {
			if x.ok[i] {
				s.ok[i] = false
				break
			}
		}
	}
	return vectorValue{series: []*vecSeries{s}}
}

// absentLabels are the labels absent() reports: the equality matchers of
// a selector argument (other than __name__).
func absentLabels(e parser.Expr) series.Labels {
	e = unwrap(e)
	if r, ok := e.(*parser.MatrixSelector); ok {
		e = r.VectorSelector
	}
	me, ok := e.(*parser.VectorSelector)
	ls := series.Labels{}
	if !ok {
		return ls
	}
	// In matcher order, as Prometheus: the first equality on a label
	// sets it; any other matcher on it (a second equality, a regexp, a
	// negation) removes it, as the answer could not say which one.
	vals := map[string]string{}
	has := map[string]bool{}
	for _, f := range me.LabelMatchers {
		if isMetadataLabel(f.Name) {
			continue
		}
		if f.Type.String() == "=" && !has[f.Name] {
			vals[f.Name], has[f.Name] = f.Value, true
		} else {
			delete(vals, f.Name)
		}
	}
	for n, v := range vals {
		if v != "" {
			ls = append(ls, series.Label{Name: n, Value: v})
		}
	}
	ls.Sort()
	return ls
}

// stringArgs returns e's string arguments from the one at index from on.
func (ev *evaluator) stringArgs(e *parser.Call, from int) ([]string, error) {
	var out []string
	for i := from; i < len(e.Args); i++ {
		s, err := ev.stringArg(e, i, len(e.Args))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (ev *evaluator) stringArg(e *parser.Call, i, want int) (string, error) {
	if i >= len(e.Args) {
		return "", argCount(e.Func.Name, want, len(e.Args))
	}
	s, ok := unwrap(e.Args[i]).(*parser.StringLiteral)
	if !ok {
		return "", fmt.Errorf("%w: expected type string as argument %d of %q", ErrBadQuery, i+1, e.Func.Name)
	}
	return s.Val, nil
}

func (ev *evaluator) labelReplace(e *parser.Call) (value, error) {
	return ev.relabel(e)
}

func (ev *evaluator) labelJoin(e *parser.Call) (value, error) {
	return ev.relabel(e)
}

// relabel evaluates label_replace or label_join.
func (ev *evaluator) relabel(e *parser.Call) (value, error) {
	if len(e.Args) < 1 {
		return nil, argCount(e.Func.Name, 3, len(e.Args))
	}
	v, err := ev.vectorArgAll(e, 0)
	if err != nil {
		return nil, err
	}
	f, err := ev.relabelFunc(e)
	if err != nil {
		return nil, err
	}
	// A name set explicitly stays (label_replace(rate(x[5m]),
	// "__name__", ...)).
	setsName := false
	if len(e.Args) > 1 {
		if dst, ok := unwrap(e.Args[1]).(*parser.StringLiteral); ok && dst.Val == series.MetricName {
			setsName = true
		}
	}
	for i, s := range v.series {
		if s.labels, err = f(s.labels); err != nil {
			return nil, err
		}
		if setsName {
			s.dropName = false
		}
		if i%256 == 255 {
			if err := ev.checkCtx(); err != nil {
				return nil, err
			}
		}
	}
	return v, ev.checkDuplicates(&v)
}

// relabelFunc returns what label_replace or label_join (e) does to one
// series' labels; the first argument, the vector, is not evaluated.
func (ev *evaluator) relabelFunc(e *parser.Call) (relabeler, error) {
	if e.Func.Name == "label_replace" {
		if len(e.Args) != 5 {
			return nil, argCount(e.Func.Name, 5, len(e.Args))
		}
		var a [4]string
		for i := range a {
			var err error
			if a[i], err = ev.stringArg(e, i+1, 5); err != nil {
				return nil, err
			}
		}
		dst, repl, src, expr := a[0], a[1], a[2], a[3]
		re, err := regexp.Compile("^(?s:" + expr + ")$")
		if err != nil {
			return nil, fmt.Errorf("%w: invalid regular expression in label_replace(): %s", ErrBadQuery, expr)
		}
		if !series.ValidLabelName(dst) {
			return nil, fmt.Errorf("%w: invalid destination label name in label_replace(): %s", ErrBadQuery, dst)
		}
		// Each $ of the template may copy the whole source value.
		refs := strings.Count(repl, "$")
		return func(ls series.Labels) (series.Labels, error) {
			val := ls.Get(src)
			if m := re.FindStringSubmatchIndex(val); m != nil {
				if err := ev.newLabelBytes(e.Func.Name, dst, len(repl)+refs*len(val)); err != nil {
					return nil, err
				}
				return setLabel(ls, dst, string(re.ExpandString(nil, repl, val, m))), nil
			}
			return ls, nil
		}, nil
	}
	if len(e.Args) < 3 {
		return nil, argCount(e.Func.Name, 3, len(e.Args))
	}
	dst, err := ev.stringArg(e, 1, 3)
	if err != nil {
		return nil, err
	}
	sep, err := ev.stringArg(e, 2, 3)
	if err != nil {
		return nil, err
	}
	srcs, err := ev.stringArgs(e, 3)
	if err != nil {
		return nil, err
	}
	if !series.ValidLabelName(dst) {
		return nil, fmt.Errorf("%w: invalid destination label name in label_join(): %s", ErrBadQuery, dst)
	}
	return func(ls series.Labels) (series.Labels, error) {
		vals := make([]string, len(srcs))
		n := len(sep) * len(srcs)
		for i, src := range srcs {
			vals[i] = ls.Get(src)
			n += len(vals[i])
		}
		if err := ev.newLabelBytes(e.Func.Name, dst, n); err != nil {
			return nil, err
		}
		return setLabel(ls, dst, strings.Join(vals, sep)), nil
	}, nil
}

// relabeler is what label_replace or label_join does to one series'
// labels.
type relabeler func(series.Labels) (series.Labels, error)

// maxNewLabelBytes bounds a label value that a query makes: the doubling
// of a value by nested label_replace calls must stop long before it
// takes the server's memory (stored values are at most a few KiB).
const maxNewLabelBytes = 1 << 20

// newLabelBytes checks a label value of up to n bytes that fn is about to
// make, against maxNewLabelBytes and against the query's memory budget
// (64 bytes count as a sample, as a sample and its share of the answer).
func (ev *evaluator) newLabelBytes(fn, name string, n int) error {
	if n > maxNewLabelBytes {
		return fmt.Errorf("%w: %s(): the new value of label %q could be %d bytes; the limit is %d", ErrTooLarge, fn, name, n, maxNewLabelBytes)
	}
	if ev.counts.samples.Add(int64(n/64)) > int64(ev.max) {
		return fmt.Errorf("%w: query processing would load too many samples into memory (more than %d; the labels %s() makes count 64 bytes a sample)", ErrTooLarge, ev.max, fn)
	}
	return nil
}

// setLabel returns ls with name set to value (removed when empty).
func setLabel(ls series.Labels, name, value string) series.Labels {
	out := make(series.Labels, 0, len(ls)+1)
	for _, l := range ls {
		if l.Name != name {
			out = append(out, l)
		}
	}
	if value != "" {
		out = append(out, series.Label{Name: name, Value: value})
	}
	out.Sort()
	return out
}

// checkDuplicates refuses a result with two series of the same labels at
// the same step (Prometheus: "vector cannot contain metrics with the same
// labelset"), and makes one series of those that never share a step, as
// Prometheus's range results do (http_requests and http_errors negated
// are one series {job="api"}: operators.test:997).
func (ev *evaluator) checkDuplicates(v *vectorValue) error {
	if len(v.series) < 2 {
		return nil
	}
	// Every binary operation and most functions come here: the in-memory
	// hash, not the on-disk FNV one.
	seen := make(map[uint64][]*vecSeries, len(v.series))
	out := v.series[:0]
	for _, s := range v.series {
		h := s.labels.MemHash()
		var same *vecSeries
		for _, o := range seen[h] {
			if o.labels.Equal(s.labels) { // else a hash collision
				same = o
				break
			}
		}
		if same == nil {
			seen[h] = append(seen[h], s)
			out = append(out, s)
			continue
		}
		for i := range s.ok {
			if s.ok[i] && same.ok[i] {
				return fmt.Errorf("%w: vector cannot contain metrics with the same labelset", ErrExec)
			}
		}
		for i := range s.ok {
			if s.ok[i] {
				same.v[i], same.ok[i] = s.v[i], true
			}
		}
	}
	clear(v.series[len(out):])
	v.series = out
	return nil
}

// naturalCompare orders strings as people read them: runs of digits by
// their number ("host2" before "host10"), the rest byte by byte.
func naturalCompare(a, b string) int {
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	for len(a) > 0 && len(b) > 0 {
		if digit(a[0]) && digit(b[0]) {
			i, j := 0, 0
			for i < len(a) && digit(a[i]) {
				i++
			}
			for j < len(b) && digit(b[j]) {
				j++
			}
			x, y := strings.TrimLeft(a[:i], "0"), strings.TrimLeft(b[:j], "0")
			if len(x) != len(y) {
				return cmp.Compare(len(x), len(y))
			}
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
			a, b = a[i:], b[j:]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}
