package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/headroomdb/headroom/query/forecast"
	"github.com/headroomdb/headroom/storage/series"
)

// The capacity forecast's back-test (issue 17): cut a series' history at
// T, forecast from the days before when a level will first be reached,
// and compare with the day it truly was (or, for a level never reached,
// count the false alarms); the same cases through predict_linear (least
// squares over the window's samples, as PromQL's) and through the
// report's first forecaster (least squares over the daily p95s).
//
// Cases: generated series with known answers (linear growth, growth
// with a weekly cycle, growth with outliers, growth that stopped, a
// step, a flat level) and the real series of ../shared/datasets long
// enough to cut (the application servers' 45 days).

// fcCase is one question: levels before the cut (daily p95s), the
// samples before it (for predict_linear), the level asked about, the
// true crossing (days after the cut; +Inf: not within the horizon).
type fcCase struct {
	family  string
	crosses bool // the level is reached within the horizon
	days    []float64
	samples []series.Sample // before the cut
	cutMs   int64           // the cut: the end of the last day
	level   float64
	truth   float64 // days after the cut's day, when crosses
	horizon int
}

// fcAnswer is a method's answer to a case: crosses (within the horizon)
// at day, with an interval when the method gives one.
type fcAnswer struct {
	crosses  bool
	day      float64
	lo, hi   float64
	interval bool
}

// dailyP95 returns the daily p95 of samples from day0 (ms of its start)
// for n days (NaN: no sample that day).
func dailyP95(ss []series.Sample, day0 int64, n int) []float64 {
	by := make([][]float64, n)
	for _, s := range ss {
		d := int((s.T - day0 - 1) / 86400_000)
		if d >= 0 && d < n && !math.IsNaN(s.V) {
			by[d] = append(by[d], s.V)
		}
	}
	out := make([]float64, n)
	for d := range by {
		if len(by[d]) == 0 {
			out[d] = math.NaN()
			continue
		}
		sort.Float64s(by[d])
		out[d] = fcQuantile(by[d], 0.95)
	}
	return out
}

func fcQuantile(sorted []float64, q float64) float64 {
	r := q * float64(len(sorted)-1)
	lo := int(math.Floor(r))
	hi := min(lo+1, len(sorted)-1)
	return sorted[lo] + (r-float64(lo))*(sorted[hi]-sorted[lo])
}

// genSeries makes days of samples every 30 minutes: level(day) plus a
// daily cycle and noise, spikes with probability spike.
func genSeries(r *rand.Rand, days int, level func(d float64) float64, noise, spike float64) []series.Sample {
	var out []series.Sample
	for k := 1; k <= days*48; k++ {
		t := int64(k) * 1800_000
		d := float64(t) / 86400_000
		v := level(d) + 4*math.Sin(2*math.Pi*d) + r.NormFloat64()*noise
		if r.Float64() < spike {
			v *= 2 + r.Float64()
		}
		out = append(out, series.Sample{T: t, V: v})
	}
	return out
}

// truthAfter is the first day after cut (1-based) whose level reaches L,
// or +Inf.
func truthAfter(levels []float64, cut int, l float64) float64 {
	for d := cut; d < len(levels); d++ {
		if levels[d] >= l {
			return float64(d - cut + 1)
		}
	}
	return math.Inf(1)
}

// generatedCases builds the families, n series each.
func generatedCases(n int) []fcCase {
	r := rand.New(rand.NewPCG(17, 17))
	const window, after = 60, 120
	var out []fcCase
	add := func(family string, ss []series.Sample, levels []float64, l float64) {
		c := fcCase{family: family, days: levels[:window], cutMs: int64(window) * 86400_000, level: l, horizon: after}
		for _, s := range ss {
			if s.T <= c.cutMs {
				c.samples = append(c.samples, s)
			}
		}
		c.truth = truthAfter(levels, window, l)
		c.crosses = !math.IsInf(c.truth, 1)
		out = append(out, c)
	}
	maxOf := func(v []float64) float64 {
		m := math.Inf(-1)
		for _, x := range v {
			if x > m {
				m = x
			}
		}
		return m
	}
	for i := 0; i < n; i++ {
		base := 40 + r.Float64()*20
		slope := 0.1 + r.Float64()*0.6
		wk := 0.0
		for _, fam := range []string{"linear", "weekly", "outliers"} {
			spike := 0.0
			switch fam {
			case "weekly":
				wk = 6
			case "outliers":
				spike = 0.01
			}
			w := wk
			ss := genSeries(r, window+after, func(d float64) float64 {
				day := int(d)
				if w != 0 && (day%7 == 5 || day%7 == 6) {
					return base + slope*d - w
				}
				return base + slope*d
			}, 3, spike)
			levels := dailyP95(ss, 0, window+after)
			pre := maxOf(levels[:window])
			for _, lead := range []int{7, 21, 45} {
				l := maxOf(levels[window : window+lead])
				if l > pre {
					add(fam, ss, levels, l)
				}
			}
		}
		// Growth that stopped some days before the cut.
		for _, ago := range []float64{10, 20, 30} {
			stop := float64(window) - ago
			ss := genSeries(r, window+after, func(d float64) float64 { return base + slope*math.Min(d, stop) }, 3, 0)
			levels := dailyP95(ss, 0, window+after)
			add("stopped", ss, levels, maxOf(levels)*1.05+2)
		}
		// A step up some days before the cut, flat on both sides.
		for _, ago := range []float64{3, 10, 20} {
			at := float64(window) - ago
			ss := genSeries(r, window+after, func(d float64) float64 {
				if d >= at {
					return base + 20
				}
				return base
			}, 3, 0)
			levels := dailyP95(ss, 0, window+after)
			add("step", ss, levels, maxOf(levels)*1.05+2)
		}
		ss := genSeries(r, window+after, func(float64) float64 { return base }, 3, 0.002)
		levels := dailyP95(ss, 0, window+after)
		add("flat", ss, levels, maxOf(levels[:window])*1.2)
	}
	return out
}

// datasetCases cuts the real series of at least 30 days at days 21, 28
// and 35: levels reached after the cut above every level before it (a
// real crossing), and a level 20% above the series' highest (never
// reached).
func datasetCases(ds []dataset) []fcCase {
	var out []fcCase
	for _, d := range ds {
		for _, s := range d.series {
			if len(s.samples) < 2 {
				continue
			}
			t0 := s.samples[0].T
			day0 := t0 - t0%86400_000
			span := int((s.samples[len(s.samples)-1].T - day0) / 86400_000)
			if span < 30 {
				continue
			}
			levels := dailyP95(s.samples, day0, span)
			for _, cut := range []int{21, 28, 35} {
				if cut+7 > span {
					continue
				}
				c := fcCase{family: "real " + d.name, days: levels[:cut], cutMs: day0 + int64(cut)*86400_000, horizon: span - cut}
				for _, x := range s.samples {
					if x.T <= c.cutMs {
						c.samples = append(c.samples, x)
					}
				}
				pre := math.Inf(-1)
				allMax := math.Inf(-1)
				for i, v := range levels {
					if math.IsNaN(v) {
						continue
					}
					if i < cut {
						pre = math.Max(pre, v)
					}
					allMax = math.Max(allMax, v)
				}
				if math.IsInf(pre, -1) {
					continue
				}
				// A level just above the series' highest, never reached:
				// a method that follows noise raises an alarm.
				n := c
				n.family += ", never reached"
				n.level = allMax + 0.02*math.Abs(allMax) + 1e-9
				n.truth = math.Inf(1)
				out = append(out, n)
				if pre == allMax {
					continue
				}
				// Levels reached after the cut: "trend" when the whole
				// series grows (Theil-Sen's 80% interval above zero and a
				// rise over its span larger than its day-to-day spread),
				// else "noise" (a level reached by a bump).
				fam := c.family + ", noise"
				if realTrend(levels) {
					fam = c.family + ", trend"
				}
				seen := map[float64]bool{}
				for _, lead := range []int{3, 7, 14} {
					if cut+lead > span {
						continue
					}
					l := math.Inf(-1)
					for _, v := range levels[cut : cut+lead] {
						if !math.IsNaN(v) {
							l = math.Max(l, v)
						}
					}
					// A real crossing: clearly above the days before.
					if !(l > pre+0.02*math.Abs(pre)) || seen[l] {
						continue
					}
					seen[l] = true
					x := c
					x.family = fam
					x.level = l
					x.truth = truthAfter(levels, cut, l)
					x.crosses = true
					out = append(out, x)
				}
			}
		}
	}
	return out
}

// realTrend says whether daily levels grow over their whole span: a
// forecast of all of them finds a rising regime from the first day.
func realTrend(levels []float64) bool {
	f := forecast.Run(forecast.Input{Levels: levels, Threshold: math.Inf(1), Horizon: 1})
	return f.RegimeStart == 0 && f.SlopeLo > 0 && f.Slope*float64(len(levels)) > 2*f.Noise
}

// predictLinear is least squares over the samples before the cut, as
// PromQL's predict_linear over the window: the day its line reaches the
// level.
func predictLinear(c fcCase) fcAnswer {
	var xs, ys []float64
	for _, s := range c.samples {
		if !math.IsNaN(s.V) {
			xs, ys = append(xs, float64(s.T-c.cutMs)/86400_000), append(ys, s.V)
		}
	}
	return lineCrossing(xs, ys, c.level, c.horizon)
}

// dailyLeastSquares is the report's first forecaster: least squares over
// the daily p95s, the day its line reaches the level.
func dailyLeastSquares(c fcCase) fcAnswer {
	var xs, ys []float64
	for i, v := range c.days {
		if !math.IsNaN(v) {
			xs, ys = append(xs, float64(i)+0.5-float64(len(c.days))), append(ys, v)
		}
	}
	return lineCrossing(xs, ys, c.level, c.horizon)
}

// lineCrossing fits a least-squares line to the points (x in days from
// the cut) and says when it reaches level.
func lineCrossing(xs, ys []float64, level float64, horizon int) fcAnswer {
	var sx, sy, sxx, sxy float64
	n := float64(len(xs))
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	if n < 2 {
		return fcAnswer{}
	}
	b := (n*sxy - sx*sy) / (n*sxx - sx*sx)
	a := (sy - b*sx) / n
	if a >= level {
		return fcAnswer{crosses: true, day: 0}
	}
	if b <= 0 {
		return fcAnswer{}
	}
	d := (level - a) / b
	return fcAnswer{crosses: d <= float64(horizon), day: d}
}

func headroomForecast(c fcCase) fcAnswer {
	f := forecast.Run(forecast.Input{Levels: c.days, Weekday0: time.Thursday, Threshold: c.level, Horizon: c.horizon})
	switch f.Kind {
	case forecast.Crosses:
		return fcAnswer{crosses: true, day: f.Day, lo: f.Lo, hi: f.Hi, interval: true}
	case forecast.AlreadyAbove:
		return fcAnswer{crosses: true, day: 0, interval: true}
	}
	return fcAnswer{}
}

// fcScore is a method's figures over a set of cases.
type fcScore struct {
	trendCases, within, within25, early, covered int
	errs                                         []float64
	noCross, falseAlarms                         int
}

func scoreCases(cs []fcCase, m func(fcCase) fcAnswer) fcScore {
	var s fcScore
	for _, c := range cs {
		a := m(c)
		if !c.crosses {
			s.noCross++
			if a.crosses {
				s.falseAlarms++
			}
			continue
		}
		s.trendCases++
		if !a.crosses {
			continue
		}
		s.within++
		e := math.Abs(a.day-c.truth) / c.truth
		s.errs = append(s.errs, e)
		if e <= 0.25 {
			s.within25++
		}
		if a.day < c.truth {
			s.early++
		}
		if a.interval && c.truth >= a.lo && c.truth <= a.hi {
			s.covered++
		}
	}
	return s
}

func (s fcScore) medianErr() float64 {
	if len(s.errs) == 0 {
		return math.NaN()
	}
	e := slices.Clone(s.errs)
	sort.Float64s(e)
	return e[len(e)/2]
}

// benchForecast runs the back-test and records each method's figures.
func benchForecast(datasetsDir string) {
	start := time.Now()
	gen := generatedCases(30)
	var ds []dataset
	for _, load := range []func(string) (dataset, error){loadASD, loadMS} {
		if d, err := load(datasetsDir); err == nil {
			ds = append(ds, d)
		} else {
			fmt.Printf("  forecast: dataset skipped: %v\n", err)
		}
	}
	real := datasetCases(ds)
	all := append(slices.Clone(gen), real...)
	methods := []struct {
		name string
		f    func(fcCase) fcAnswer
	}{{"headroom", headroomForecast}, {"predict_linear", predictLinear}, {"daily least squares (the report before)", dailyLeastSquares}}
	sets := []struct {
		name string
		cs   []fcCase
	}{{"generated", gen}, {"real", real}, {"all", all}}
	scores := map[string]fcScore{}
	for _, set := range sets {
		for _, m := range methods {
			s := scoreCases(set.cs, m.f)
			scores[set.name+"/"+m.name] = s
			pfx := fmt.Sprintf("%s cases, %s", set.name, m.name)
			record("forecast", pfx+": crossings forecast within the horizon", float64(s.within), fmt.Sprintf("of %d", s.trendCases), "", nil)
			record("forecast", pfx+": median error, % of the true lead", 100*s.medianErr(), "%", "", nil)
			record("forecast", pfx+": within 25% of the lead", float64(s.within25), "cases", "", nil)
			record("forecast", pfx+": early", float64(s.early), fmt.Sprintf("of %d", s.within), "", nil)
			record("forecast", pfx+": false alarms (a level never reached)", float64(s.falseAlarms), fmt.Sprintf("of %d", s.noCross), "", nil)
			if m.name == "headroom" {
				record("forecast", pfx+": 80% interval covers the truth", 100*float64(s.covered)/math.Max(1, float64(s.within)), "%", "70-90%", boolp(s.within > 0 && float64(s.covered) >= 0.7*float64(s.within) && float64(s.covered) <= 0.9*float64(s.within)))
			}
		}
	}
	h, p := scores["all/headroom"], scores["all/predict_linear"]
	record("forecast", "median error, headroom / predict_linear", h.medianErr()/p.medianErr(), "x", "<= 0.7", boolp(h.medianErr() <= 0.7*p.medianErr()))
	record("forecast", "false alarms, headroom / predict_linear", float64(h.falseAlarms)/math.Max(1, float64(p.falseAlarms)), "x", "<= 0.5", boolp(2*h.falseAlarms <= p.falseAlarms))
	// Flat series: "not within the horizon".
	flat, ok := 0, 0
	for _, c := range gen {
		if c.family != "flat" {
			continue
		}
		flat++
		if f := forecast.Run(forecast.Input{Levels: c.days, Weekday0: time.Thursday, Threshold: c.level, Horizon: c.horizon}); f.Kind == forecast.NotWithinHorizon {
			ok++
		}
	}
	record("forecast", "flat series: not within the horizon", 100*float64(ok)/math.Max(1, float64(flat)), "%", ">= 95%", boolp(ok*100 >= 95*flat))
	// By family, for the reader of RESULTS.md.
	fams := map[string][]fcCase{}
	for _, c := range all {
		fams[c.family] = append(fams[c.family], c)
	}
	names := make([]string, 0, len(fams))
	for f := range fams {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, f := range names {
		for _, m := range methods[:2] {
			s := scoreCases(fams[f], m.f)
			record("forecast", fmt.Sprintf("%s, %s: crossings within / median error %% / false alarms", f, m.name),
				float64(s.within), fmt.Sprintf("of %d, %.0f%%, %d of %d", s.trendCases, 100*s.medianErr(), s.falseAlarms, s.noCross), "", nil)
		}
	}
	record("forecast", "back-test time", time.Since(start).Seconds(), "s", "", nil)
}
