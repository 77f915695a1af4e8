package query

import (
	"math"
	"sort"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/parser/posrange"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/headroomdb/headroom/storage/series"
)

// Native histograms in the evaluator. They travel beside the floats, so
// that float paths stay as they are: a loaded series has hpts as well as
// pts, a vecSeries an optional h (h[i] set: the value at step i is that
// histogram, not v[i]), a result Series its Histograms. Arithmetic on
// them is Prometheus's own (model/histogram's FloatHistogram), and so
// are histogram_quantile's and histogram_fraction's interpolations
// (promql.HistogramQuantile, HistogramFraction), which other engines are
// meant to reuse.

// HistogramSource is a Source that says whether it holds native
// histograms at all: when it does not, the steps a rollup tier answers
// are not read again for them.
type HistogramSource interface {
	HasHistograms() bool
}

// HistogramQuerier is a Querier that can read native histograms alone,
// skipping float samples (and series without histograms).
type HistogramQuerier interface {
	HistogramsOnly()
}

// histogramsOnly returns an evaluator whose selections read histograms
// only.
func (ev *evaluator) histogramsOnly() *evaluator {
	c := *ev
	c.histOnly = true
	c.fold = nil
	return &c
}

// mayHoldHistograms is false when the source says it holds no native
// histograms.
func (ev *evaluator) mayHoldHistograms() bool {
	hs, ok := ev.src.(HistogramSource)
	return !ok || hs.HasHistograms()
}

// FloatHistogram is Prometheus's histogram value, as results carry it.
type FloatHistogram = histogram.FloatHistogram

// HPoint is one native histogram sample of a result.
type HPoint struct {
	T int64
	H *FloatHistogram
}

// floatHistogram converts a stored histogram into the evaluator's value.
// Its counts are taken as they are: a Querier's histograms are the
// caller's, and the evaluator changes no histogram in place (it copies
// before Prometheus's in-place arithmetic, as Prometheus's engine does).
func floatHistogram(h *series.Histogram) *FloatHistogram {
	fh := floatHistogramSpans(h, nil, nil)
	fh.PositiveSpans, fh.NegativeSpans = spansOf(h.PositiveSpans), spansOf(h.NegativeSpans)
	return fh
}

// floatHistogramSpans is floatHistogram with its spans given, converted
// already.
func floatHistogramSpans(h *series.Histogram, pos, neg []histogram.Span) *FloatHistogram {
	return &FloatHistogram{
		CounterResetHint: histogram.CounterResetHint(h.CounterReset),
		Schema:           h.Schema,
		ZeroThreshold:    h.ZeroThreshold,
		ZeroCount:        h.ZeroCount,
		Count:            h.Count,
		Sum:              h.Sum,
		PositiveSpans:    pos,
		NegativeSpans:    neg,
		PositiveBuckets:  h.PositiveBuckets,
		NegativeBuckets:  h.NegativeBuckets,
		CustomValues:     h.CustomValues,
	}
}

func spansOf(ss []series.Span) []histogram.Span {
	return mapSpans(ss, func(s series.Span) histogram.Span { return histogram.Span{Offset: s.Offset, Length: s.Length} })
}

// mapSpans converts spans between the storage's and Prometheus's types
// (nil stays nil: an empty side).
func mapSpans[A, B any](in []A, f func(A) B) []B {
	if len(in) == 0 {
		return nil
	}
	out := make([]B, len(in))
	for i, x := range in {
		out[i] = f(x)
	}
	return out
}

// SeriesHistogram converts a query's histogram back into the storage's
// vocabulary (recording rules, tests).
func SeriesHistogram(h *FloatHistogram) *series.Histogram {
	conv := func(ss []histogram.Span) []series.Span {
		return mapSpans(ss, func(s histogram.Span) series.Span { return series.Span{Offset: s.Offset, Length: s.Length} })
	}
	return &series.Histogram{CounterReset: uint8(h.CounterResetHint), Float: true, Schema: h.Schema, ZeroThreshold: h.ZeroThreshold,
		ZeroCount: h.ZeroCount, Count: h.Count, Sum: h.Sum, PositiveSpans: conv(h.PositiveSpans), NegativeSpans: conv(h.NegativeSpans),
		PositiveBuckets: append([]float64(nil), h.PositiveBuckets...), NegativeBuckets: append([]float64(nil), h.NegativeBuckets...),
		CustomValues: append([]float64(nil), h.CustomValues...)}
}

// isStaleHist: a histogram stale marker, whose sum is the stale NaN.
func isStaleHist(h *FloatHistogram) bool { return series.IsStaleNaN(h.Sum) }

// hpointsOf converts a series' stored histograms in [mint, maxt],
// stale markers kept when keepStale.
func hpointsOf(hs []series.HistSample, mint, maxt int64, keepStale bool) []HPoint {
	var out []HPoint
	// The samples of a chunk share its spans: they are converted once.
	var lastPos, lastNeg *series.Span
	var pos, neg []histogram.Span
	for _, x := range hs {
		if x.T < mint || x.T > maxt {
			continue
		}
		if !keepStale && series.IsStaleNaN(x.H.Sum) {
			continue
		}
		if p := firstSpan(x.H.PositiveSpans); p == nil || p != lastPos || len(pos) != len(x.H.PositiveSpans) {
			lastPos, pos = p, spansOf(x.H.PositiveSpans)
		}
		if n := firstSpan(x.H.NegativeSpans); n == nil || n != lastNeg || len(neg) != len(x.H.NegativeSpans) {
			lastNeg, neg = n, spansOf(x.H.NegativeSpans)
		}
		out = append(out, HPoint{T: x.T, H: floatHistogramSpans(x.H, pos, neg)})
	}
	return out
}

func firstSpan(ss []series.Span) *series.Span {
	if len(ss) == 0 {
		return nil
	}
	return &ss[0]
}

// hist returns the histogram at step i, or nil.
func (s *vecSeries) hist(i int) *FloatHistogram {
	if s.h == nil {
		return nil
	}
	return s.h[i]
}

// setHist makes step i's value h (nil: a float).
func (s *vecSeries) setHist(i int, h *FloatHistogram) {
	if h == nil {
		if s.h != nil {
			s.h[i] = nil
		}
		return
	}
	if s.h == nil {
		s.h = make([]*FloatHistogram, len(s.v))
	}
	s.h[i] = h
}

// floatsOnly returns v without its histogram values, for the functions
// and operators that take floats only (Prometheus ignores histograms
// there), and whether it had any.
func floatsOnly(v vectorValue) (vectorValue, bool) {
	has := false
	for _, s := range v.series {
		if s.h != nil {
			has = true
			break
		}
	}
	if !has {
		return v, false
	}
	out := vectorValue{series: make([]*vecSeries, 0, len(v.series))}
	for _, s := range v.series {
		if s.h == nil {
			out.series = append(out.series, s)
			continue
		}
		c := *s
		c.ok = append([]bool(nil), s.ok...)
		c.h = nil
		any := false
		for i, h := range s.h {
			if h != nil {
				c.ok[i] = false
			}
			any = any || c.ok[i]
		}
		if any {
			out.series = append(out.series, &c)
		}
	}
	return out, true
}

// hwindow returns the indexes [lo, hi) of the histogram points in (from, to].
func hwindow(pts []HPoint, from, to int64) (int, int) {
	lo := sort.Search(len(pts), func(k int) bool { return pts[k].T > from })
	hi := sort.Search(len(pts), func(k int) bool { return pts[k].T > to })
	return lo, hi
}

// instantSeries is one series of an instant selector: at each step the
// newest sample, float or histogram, in (t - lookback, t], unless it is
// a stale marker; nil when no step has one.
func (ev *evaluator) instantSeries(ls series.Labels, pts []Point, hpts []HPoint, off int64, at *int64) *vecSeries {
	s := ev.newSeries(ls)
	s.t = make([]int64, len(s.v))
	any := false
	j, k := -1, -1 // the newest float and histogram at or before t; t only grows
	for i := range s.v {
		t := ev.ts(i) - off
		if at != nil {
			t = *at - off
		}
		for j+1 < len(pts) && pts[j+1].T <= t {
			j++
		}
		for k+1 < len(hpts) && hpts[k+1].T <= t {
			k++
		}
		useHist := k >= 0 && (j < 0 || hpts[k].T > pts[j].T)
		switch {
		case useHist:
			if hpts[k].T <= t-ev.lookback || isStaleHist(hpts[k].H) {
				continue
			}
			s.setHist(i, hpts[k].H)
			s.ok[i], s.t[i], any = true, hpts[k].T, true
		case j >= 0:
			if pts[j].T <= t-ev.lookback || series.IsStaleNaN(pts[j].V) {
				continue
			}
			s.v[i], s.ok[i], s.t[i], any = pts[j].V, true, pts[j].T, true
		}
	}
	if !any {
		return nil
	}
	return s
}

// histCall is what a histogram range function needs to annotate: the
// series' metric name and the position of its argument.
type histCall struct {
	ev   *evaluator
	name string
	pos  posrange.PositionRange
}

// histRangeFunc computes a range function over a window that holds
// histograms hp (at least one) and maybe floats fp; isHist says which
// of f and h is the answer.
type histRangeFunc func(c *histCall, hp []HPoint, fp []Point, t, w int64) (f float64, h *FloatHistogram, isHist, ok bool)

// histRangeFuncs are the range functions Prometheus defines over
// histograms; the others ignore them.
var histRangeFuncs = map[string]histRangeFunc{
	"rate": func(c *histCall, hp []HPoint, fp []Point, t, w int64) (float64, *FloatHistogram, bool, bool) {
		return c.extrapolated(hp, fp, t, w, true, true)
	},
	"increase": func(c *histCall, hp []HPoint, fp []Point, t, w int64) (float64, *FloatHistogram, bool, bool) {
		return c.extrapolated(hp, fp, t, w, true, false)
	},
	"delta": func(c *histCall, hp []HPoint, fp []Point, t, w int64) (float64, *FloatHistogram, bool, bool) {
		return c.extrapolated(hp, fp, t, w, false, false)
	},
	"irate": func(c *histCall, hp []HPoint, fp []Point, _, _ int64) (float64, *FloatHistogram, bool, bool) {
		return c.instant(hp, fp, true)
	},
	"idelta": func(c *histCall, hp []HPoint, fp []Point, _, _ int64) (float64, *FloatHistogram, bool, bool) {
		return c.instant(hp, fp, false)
	},
	"sum_over_time": func(c *histCall, hp []HPoint, fp []Point, _, _ int64) (float64, *FloatHistogram, bool, bool) {
		h, ok := c.sum(hp, fp, false)
		return 0, h, true, ok
	},
	"avg_over_time": func(c *histCall, hp []HPoint, fp []Point, _, _ int64) (float64, *FloatHistogram, bool, bool) {
		h, ok := c.sum(hp, fp, true)
		return 0, h, true, ok
	},
	"resets": func(_ *histCall, hp []HPoint, fp []Point, _, _ int64) (float64, *FloatHistogram, bool, bool) {
		n := 0
		eachMerged(hp, fp, func(prevF, curF float64, prevH, curH *FloatHistogram) {
			switch {
			case prevH != nil && curH != nil:
				if curH.DetectReset(prevH) {
					n++
				}
			case prevH == nil && curH == nil:
				if curF < prevF {
					n++
				}
			default: // a float became a histogram, or back
				n++
			}
		})
		return float64(n), nil, false, true
	},
	"changes": func(_ *histCall, hp []HPoint, fp []Point, _, _ int64) (float64, *FloatHistogram, bool, bool) {
		n := 0
		eachMerged(hp, fp, func(prevF, curF float64, prevH, curH *FloatHistogram) {
			switch {
			case (prevH == nil) != (curH == nil):
				n++ // a float became a histogram, or back
			case prevH != nil:
				if !curH.Equals(prevH) {
					n++
				}
			case curF != prevF && !(math.IsNaN(curF) && math.IsNaN(prevF)):
				n++
			}
		})
		return float64(n), nil, false, true
	},
	"ts_of_last_over_time": func(_ *histCall, hp []HPoint, fp []Point, _, _ int64) (float64, *FloatHistogram, bool, bool) {
		t := hp[len(hp)-1].T
		if len(fp) > 0 {
			t = max(t, fp[len(fp)-1].T)
		}
		return float64(t) / 1000, nil, false, true
	},
	"ts_of_first_over_time": func(_ *histCall, hp []HPoint, fp []Point, _, _ int64) (float64, *FloatHistogram, bool, bool) {
		t := hp[0].T
		if len(fp) > 0 {
			t = min(t, fp[0].T)
		}
		return float64(t) / 1000, nil, false, true
	},
	"count_over_time": func(_ *histCall, hp []HPoint, fp []Point, _, _ int64) (float64, *FloatHistogram, bool, bool) {
		return float64(len(hp) + len(fp)), nil, false, true
	},
	"present_over_time": func(*histCall, []HPoint, []Point, int64, int64) (float64, *FloatHistogram, bool, bool) {
		return 1, nil, false, true
	},
	"last_over_time": func(_ *histCall, hp []HPoint, fp []Point, _, _ int64) (float64, *FloatHistogram, bool, bool) {
		if len(fp) > 0 && fp[len(fp)-1].T > hp[len(hp)-1].T {
			return fp[len(fp)-1].V, nil, false, true
		}
		return 0, hp[len(hp)-1].H, true, true
	},
	"first_over_time": func(_ *histCall, hp []HPoint, fp []Point, _, _ int64) (float64, *FloatHistogram, bool, bool) {
		if len(fp) > 0 && fp[0].T < hp[0].T {
			return fp[0].V, nil, false, true
		}
		return 0, hp[0].H, true, true
	},
}

func (c *histCall) warn(err error) { c.ev.annotate(err) }

// mixed annotates a window of floats and histograms, which the function
// cannot combine.
func (c *histCall) mixed(fp []Point) bool {
	if len(fp) > 0 {
		c.warn(annotations.NewMixedFloatsHistogramsWarning(c.name, c.pos))
		return true
	}
	return false
}

// sum adds up (or averages) a window's histograms, or reports why it
// cannot.
func (c *histCall) sum(hp []HPoint, fp []Point, mean bool) (*FloatHistogram, bool) {
	if c.mixed(fp) {
		return nil, false
	}
	s := histSum{mean: mean}
	for _, x := range hp {
		if err := s.add(x.H); err != nil {
			c.warn(annotations.NewMixedExponentialCustomHistogramsWarning(c.name, c.pos))
			return nil, false
		}
	}
	h, err := s.result(mean)
	if err != nil {
		c.warn(annotations.NewMixedExponentialCustomHistogramsWarning(c.name, c.pos))
		return nil, false
	}
	if s.reconciled {
		c.warn(annotations.NewMismatchedCustomBucketsHistogramsInfo(c.pos, annotations.HistogramAgg))
	}
	return h.Compact(0), true
}

// histSum adds histograms up with Kahan's compensation (1 + 1e100 + 1 -
// 1e100 is 2), and, for a mean, turns to a running mean when the sum
// would overflow: the mean of huge histograms is then still finite.
type histSum struct {
	sum, c *FloatHistogram // c: the compensation (nil until needed)
	n      float64
	mean   bool // for a mean: may turn to a running mean
	// reconciled: custom bucket bounds of two histograms differed and
	// were merged (Prometheus's info says so).
	reconciled bool
	// running: sum holds the running mean of the n so far.
	running bool
}

func (s *histSum) add(h *FloatHistogram) error {
	s.n++
	if s.sum == nil {
		s.sum = h.Copy()
		return nil
	}
	if !s.running && (!s.mean || !nearOverflow(s.sum) && !nearOverflow(h)) {
		// Far from overflow (or a sum, which may overflow): in place.
		c, _, rec, err := s.sum.KahanAdd(h, s.c)
		s.c, s.reconciled = c, s.reconciled || rec
		return err
	}
	if !s.running {
		next := s.sum.Copy()
		var c *FloatHistogram
		if s.c != nil {
			c = s.c.Copy()
		}
		c, _, rec, err := next.KahanAdd(h, c)
		if err != nil {
			return err
		}
		s.reconciled = s.reconciled || rec
		if !s.mean || !next.HasOverflow() {
			s.sum, s.c = next, c
			return nil
		}
		// From here on a mean: of the n-1 so far, then each new one
		// weighed in.
		s.running = true
		s.sum.Div(s.n - 1)
		if s.c != nil {
			s.c.Div(s.n - 1)
		}
	}
	q := (s.n - 1) / s.n
	if s.c != nil {
		s.c.Mul(q)
	}
	c, _, rec, err := s.sum.Mul(q).KahanAdd(h.Copy().Div(s.n), s.c)
	s.c, s.reconciled = c, s.reconciled || rec
	return err
}

// nearOverflow says whether adding h to a histogram could overflow:
// a value of a magnitude beyond 1e300 (the sum of two such stays finite
// up to 1.7e308, and a mean adds one at a time).
func nearOverflow(h *FloatHistogram) bool {
	big := func(x float64) bool { return math.Abs(x) > 1e300 }
	if big(h.Count) || big(h.Sum) || big(h.ZeroCount) {
		return true
	}
	for _, b := range h.PositiveBuckets {
		if big(b) {
			return true
		}
	}
	for _, b := range h.NegativeBuckets {
		if big(b) {
			return true
		}
	}
	return false
}

// result is the sum, or with mean the mean, of what was added.
func (s *histSum) result(mean bool) (*FloatHistogram, error) {
	h := s.sum
	if s.running {
		// The running mean: the sum would overflow.
		if s.c != nil {
			_, _, _, err := h.Add(s.c)
			return h, err
		}
		return h, nil
	}
	if mean {
		h.Div(s.n)
		if s.c != nil {
			s.c.Div(s.n)
		}
	}
	if s.c != nil {
		_, _, _, err := h.Add(s.c)
		return h, err
	}
	return h, nil
}

// merge adds what o added up (the same kind of sum) to s.
func (s *histSum) merge(o *histSum) error {
	if !s.running && !o.running {
		oh := o.sum
		if o.c != nil {
			oh = oh.Copy()
			if _, _, _, err := oh.Add(o.c); err != nil {
				return err
			}
		}
		c, _, rec, err := s.sum.KahanAdd(oh, s.c)
		s.c, s.n, s.reconciled = c, s.n+o.n, s.reconciled || rec || o.reconciled
		return err
	}
	a, err := s.result(true)
	if err != nil {
		return err
	}
	b, err := o.result(true)
	if err != nil {
		return err
	}
	n := s.n + o.n
	_, _, _, err = a.Mul(s.n / n).Add(b.Copy().Mul(o.n / n))
	s.sum, s.c, s.n, s.running = a, nil, n, true
	return err
}

// eachMerged calls f for each sample after the first of a window of
// histograms and floats in time order, with the one before it.
func eachMerged(hp []HPoint, fp []Point, f func(prevF, curF float64, prevH, curH *FloatHistogram)) {
	i, j := 0, 0
	first := true
	var pf float64
	var ph *FloatHistogram
	for i < len(fp) || j < len(hp) {
		var cf float64
		var ch *FloatHistogram
		if j < len(hp) && (i >= len(fp) || hp[j].T < fp[i].T) {
			ch = hp[j].H
			j++
		} else {
			cf = fp[i].V
			i++
		}
		if !first {
			f(pf, cf, ph, ch)
		}
		first = false
		pf, ph = cf, ch
	}
}

// increase is the histograms' change over a window: the last minus the
// first, at the coarsest schema among them, and for counters each reset's
// pre-reset histogram added back, as Prometheus's rate reads it.
func (c *histCall) increase(hp []HPoint, counter bool) (*FloatHistogram, bool) {
	first, last := hp[0].H, hp[len(hp)-1].H
	if counter && (first.CounterResetHint == histogram.GaugeType || last.CounterResetHint == histogram.GaugeType) {
		c.warn(annotations.NewNativeHistogramNotCounterWarning(c.name, c.pos))
	}
	prev := first
	custom := prev.UsesCustomBuckets()
	// A reset right after the first sample: its layout does not matter,
	// the increase starts from nothing.
	if counter && hp[1].H.DetectReset(prev) {
		prev = &FloatHistogram{Schema: hp[1].H.Schema, CustomValues: hp[1].H.CustomValues}
		custom = hp[1].H.UsesCustomBuckets()
	}
	schema := min(prev.Schema, last.Schema)
	for _, x := range hp[1 : len(hp)-1] {
		if !counter {
			continue
		}
		if x.H.CounterResetHint == histogram.GaugeType {
			c.warn(annotations.NewNativeHistogramNotCounterWarning(c.name, c.pos))
		}
		schema = min(schema, x.H.Schema)
		if x.H.UsesCustomBuckets() != custom {
			c.warn(annotations.NewMixedExponentialCustomHistogramsWarning(c.name, c.pos))
			return nil, false
		}
	}
	if last.UsesCustomBuckets() != custom {
		c.warn(annotations.NewMixedExponentialCustomHistogramsWarning(c.name, c.pos))
		return nil, false
	}
	h, err := last.CopyToSchema(schema)
	if err != nil {
		c.warn(annotations.NewMixedExponentialCustomHistogramsWarning(c.name, c.pos))
		return nil, false
	}
	_, _, rec, err := h.Sub(prev)
	if err != nil {
		c.warn(annotations.NewMixedExponentialCustomHistogramsWarning(c.name, c.pos))
		return nil, false
	}
	if rec {
		c.warn(annotations.NewMismatchedCustomBucketsHistogramsInfo(c.pos, annotations.HistogramSub))
	}
	if counter {
		for _, x := range hp[1:] {
			if x.H.DetectReset(prev) {
				if _, _, _, err := h.Add(prev); err != nil {
					c.warn(annotations.NewMixedExponentialCustomHistogramsWarning(c.name, c.pos))
					return nil, false
				}
			}
			prev = x.H
		}
	} else if first.CounterResetHint != histogram.GaugeType || last.CounterResetHint != histogram.GaugeType {
		c.warn(annotations.NewNativeHistogramNotGaugeWarning(c.name, c.pos))
	}
	h.CounterResetHint = histogram.GaugeType
	return h.Compact(0), true
}

// extrapolated is rate, increase or delta over histograms, extrapolated
// to the window as floats are (extrapolationFactor, on the counts).
func (c *histCall) extrapolated(hp []HPoint, fp []Point, t, w int64, counter, perSecond bool) (float64, *FloatHistogram, bool, bool) {
	if c.mixed(fp) || len(hp) < 2 {
		return 0, nil, true, false
	}
	h, ok := c.increase(hp, counter)
	if !ok {
		return 0, nil, true, false
	}
	first, last := hp[0], hp[len(hp)-1]
	h.Mul(extrapolationFactor(first.T, last.T, first.H.Count, len(hp), h.Count, t, w, counter))
	if perSecond {
		h.Div(float64(w) / 1000)
	}
	return 0, h, true, true
}

// instant is irate or idelta over histograms: the last two samples.
func (c *histCall) instant(hp []HPoint, fp []Point, perSecond bool) (float64, *FloatHistogram, bool, bool) {
	if len(hp)+len(fp) < 2 {
		return 0, nil, true, false
	}
	if len(hp) < 2 || (len(fp) > 0 && fp[len(fp)-1].T > hp[len(hp)-2].T) {
		c.warn(annotations.NewMixedFloatsHistogramsWarning(c.name, c.pos))
		return 0, nil, true, false
	}
	a, b := hp[len(hp)-2], hp[len(hp)-1]
	gauge := a.H.CounterResetHint == histogram.GaugeType || b.H.CounterResetHint == histogram.GaugeType
	if perSecond && gauge {
		c.warn(annotations.NewNativeHistogramNotCounterWarning(c.name, c.pos))
	}
	if !perSecond && !(a.H.CounterResetHint == histogram.GaugeType && b.H.CounterResetHint == histogram.GaugeType) {
		c.warn(annotations.NewNativeHistogramNotGaugeWarning(c.name, c.pos))
	}
	h := b.H.Copy()
	if !perSecond || !b.H.DetectReset(a.H) {
		_, _, rec, err := h.Sub(a.H)
		if err != nil {
			c.warn(annotations.NewMixedExponentialCustomHistogramsWarning(c.name, c.pos))
			return 0, nil, true, false
		}
		if rec {
			c.warn(annotations.NewMismatchedCustomBucketsHistogramsInfo(c.pos, annotations.HistogramSub))
		}
	}
	h.CounterResetHint = histogram.GaugeType
	h = h.Compact(0)
	if perSecond {
		h.Div(float64(b.T-a.T) / 1000)
	}
	return 0, h, true, true
}

// withNative adds to out (the classic buckets' answers) f of each native
// histogram value of v, its series' name dropped as a function drops it.
//
// A native answer and a classic one for the same series at a step (a
// histogram exposed both ways, under one name) leave the step without
// an answer, with Prometheus's warning.
func (ev *evaluator) withNative(out, v vectorValue, pos posrange.PositionRange, f func(i int, name string, h *FloatHistogram) (float64, annotations.Annotations)) vectorValue {
	classic := map[string]*vecSeries{}
	for _, c := range out.series {
		classic[dropName(c.labels).String()] = c
	}
	for _, s := range v.series {
		if s.h == nil {
			continue
		}
		var o *vecSeries
		name := s.labels.Get(series.MetricName)
		for i, h := range s.h {
			if h == nil || !s.ok[i] {
				continue
			}
			r, annos := f(i, name, h)
			for _, a := range annos {
				ev.annotate(a)
			}
			if o == nil {
				o = ev.newNameless(s)
			}
			o.v[i], o.ok[i] = r, true
		}
		if o == nil {
			continue
		}
		c, both := classic[dropName(o.labels).String()]
		if !both {
			out.series = append(out.series, o)
			continue
		}
		for i, ok := range o.ok {
			switch {
			case !ok:
			case c.ok[i]:
				c.ok[i] = false
				ev.annotate(annotations.NewMixedClassicNativeHistogramsWarning(s.labels.Get(series.MetricName), pos))
			default:
				c.v[i], c.ok[i] = o.v[i], true
			}
		}
	}
	return out
}

// histFuncs are the functions of one native histogram; floats have no
// answer.
var histFuncs = map[string]func(h *FloatHistogram) float64{
	"histogram_count": func(h *FloatHistogram) float64 { return h.Count },
	"histogram_sum":   func(h *FloatHistogram) float64 { return h.Sum },
	"histogram_avg":   func(h *FloatHistogram) float64 { return h.Sum / h.Count },
	"histogram_stddev": func(h *FloatHistogram) float64 {
		return math.Sqrt(histVariance(h))
	},
	"histogram_stdvar": histVariance,
}

// histVariance estimates the variance of a histogram's observations
// from its buckets, each observation taken at its bucket's middle: the
// arithmetic one for custom bounds, the geometric one for exponential
// buckets (their natural middle), zero in the zero bucket. The mean is
// the histogram's own, sum / count.
func histVariance(h *FloatHistogram) float64 {
	mean := h.Sum / h.Count
	var v, c float64
	it := h.AllBucketIterator()
	for it.Next() {
		b := it.At()
		if b.Count == 0 {
			continue
		}
		var mid float64
		switch {
		case h.UsesCustomBuckets():
			mid = (b.Upper + b.Lower) / 2
		case b.Lower <= 0 && b.Upper >= 0:
			mid = 0
		default:
			mid = math.Sqrt(b.Upper * b.Lower)
			if b.Upper < 0 {
				mid = -mid
			}
		}
		d := mid - mean
		v, c = neumaierAdd(v, c, b.Count*d*d)
	}
	return (v + c) / h.Count
}

// callHist evaluates one of histFuncs.
func (ev *evaluator) callHist(e *parser.Call, f func(*FloatHistogram) float64) (value, error) {
	if len(e.Args) != 1 {
		return nil, argCount(e.Func.Name, 1, len(e.Args))
	}
	v, err := ev.vectorArgAll(e, 0)
	if err != nil {
		return nil, err
	}
	return ev.withNative(vectorValue{}, v, e.Args[0].PositionRange(), func(_ int, _ string, h *FloatHistogram) (float64, annotations.Annotations) {
		return f(h), nil
	}), nil
}

// histOp applies op where a side is a histogram (lh or rh set), as
// Prometheus defines it: histogram + and - histogram, histogram * or /
// number, number * histogram, and == or != between histograms (keep:
// the comparison holds; the value is then the left side's). Other
// combinations have no result, with Prometheus's info.
func (ev *evaluator) histOp(op string, lv float64, lh *FloatHistogram, rv float64, rh *FloatHistogram, pos posrange.PositionRange) (float64, *FloatHistogram, bool) {
	typ := func(h *FloatHistogram) string {
		if h == nil {
			return "float"
		}
		return "histogram"
	}
	incompatible := func() (float64, *FloatHistogram, bool) {
		ev.annotate(annotations.NewIncompatibleTypesInBinOpInfo(typ(lh), op, typ(rh), pos))
		return 0, nil, false
	}
	switch {
	case lh != nil && rh != nil:
		switch op {
		case "+", "-":
			res := lh.Copy()
			var err error
			var rec bool
			operation := annotations.HistogramAdd
			if op == "+" {
				_, _, rec, err = res.Add(rh)
			} else {
				_, _, rec, err = res.Sub(rh)
				res.CounterResetHint = histogram.GaugeType
				operation = annotations.HistogramSub
			}
			if err != nil {
				ev.annotate(annotations.NewIncompatibleBucketLayoutInBinOpWarning(op, pos))
				return 0, nil, false
			}
			if rec {
				ev.annotate(annotations.NewMismatchedCustomBucketsHistogramsInfo(pos, operation))
			}
			return 0, res.Compact(0), true
		case "==":
			return 0, lh, lh.Equals(rh)
		case "!=":
			return 0, lh, !lh.Equals(rh)
		}
		return incompatible()
	case lh != nil:
		switch op {
		case "*":
			return 0, lh.Copy().Mul(rv).Compact(0), true
		case "/":
			return 0, lh.Copy().Div(rv).Compact(0), true
		case "</": // the buckets below rv
			return 0, lh.Copy().TrimBuckets(rv, true), true
		case ">/":
			return 0, lh.Copy().TrimBuckets(rv, false), true
		}
		return incompatible()
	case rh != nil:
		if op == "*" {
			return 0, rh.Copy().Mul(lv).Compact(0), true
		}
		return incompatible()
	default: // trimming floats
		return incompatible()
	}
}

// isTrim: the operators that trim a histogram's buckets, which floats
// do not have.
func isTrim(op string) bool { return op == "</" || op == ">/" }

// histComparable says whether a comparison of these sides has an answer
// (false for bool) rather than none: == and != between two histograms.
func (ev *evaluator) histComparable(op string, lh, rh *FloatHistogram) bool {
	return lh != nil && rh != nil && (op == "==" || op == "!=")
}

// hlerp is the histogram at t on the line through a and b; a counter
// that reset between them starts from nothing.
//
// The result's reset hint is unknown: it is no sample's, and a hint
// carried over would count a reset twice.
func hlerp(a, b HPoint, t int64, counter bool) (*FloatHistogram, error) {
	if a.H.UsesCustomBuckets() != b.H.UsesCustomBuckets() {
		return nil, histogram.ErrHistogramsIncompatibleSchema
	}
	frac := float64(t-a.T) / float64(b.T-a.T)
	if counter && b.H.DetectReset(a.H) {
		h := b.H.Copy().Mul(frac)
		h.CounterResetHint = histogram.UnknownCounterReset
		return h, nil
	}
	d := b.H.Copy()
	if _, _, _, err := d.Sub(a.H); err != nil {
		return nil, err
	}
	_, _, _, err := d.Mul(frac).Add(a.H)
	d.CounterResetHint = histogram.UnknownCounterReset
	return d, err
}

// extendedHistRate is extendedRate over histograms: the difference of
// the window's edge histograms, counter resets inside added back.
func (c *histCall) extendedHistRate(pts []HPoint, start, end, lookback int64, smoothed, counter, perSecond bool, w int64) (*FloatHistogram, bool) {
	to := end
	if smoothed {
		to += lookback
	}
	lo, hi := hwindow(pts, start-lookback, to)
	f := pts[lo:hi]
	at := func(i int) int64 { return f[i].T }
	first, last, ok := extendedEdges(len(f), at, start, end, smoothed)
	if !ok {
		return nil, false
	}
	left, right := f[first].H, f[last].H
	gauges := 0
	for _, p := range f[first : last+1] {
		if p.H.CounterResetHint == histogram.GaugeType {
			gauges++
		}
	}
	switch {
	case counter && gauges > 0:
		c.warn(annotations.NewNativeHistogramNotCounterWarning(c.name, c.pos))
	case !counter && gauges < last+1-first:
		c.warn(annotations.NewNativeHistogramNotGaugeWarning(c.name, c.pos))
	}
	var err error
	if smoothed && f[first].T < start {
		if left, err = hlerp(f[first], f[first+1], start, counter); err != nil {
			return nil, c.incompatible()
		}
	}
	if f[last].T > end && last > 0 {
		if !smoothed {
			right = f[last-1].H
		} else if right, err = hlerp(f[last-1], f[last], end, counter); err != nil {
			return nil, c.incompatible()
		}
	}
	r := right.Copy()
	if _, _, _, err := r.Sub(left); err != nil {
		return nil, c.incompatible()
	}
	if counter {
		// Against an interpolated edge, a sample's own hint of reset says
		// nothing (the interpolation started from it already): counts
		// decide, as they do for floats.
		interp := smoothed && f[first].T < start
		first, last = insideEdges(first, last, at, start, end)
		prev := left
		for _, p := range f[first : last+1] {
			if resetFrom(p.H, prev, interp) {
				if _, _, _, err := r.Add(prev); err != nil {
					return nil, c.incompatible()
				}
			}
			prev, interp = p.H, false
		}
		// The right edge may be the last sample itself: no reset from
		// itself.
		if right != prev && resetFrom(right, prev, interp) {
			if _, _, _, err := r.Add(prev); err != nil {
				return nil, c.incompatible()
			}
		}
	}
	r.CounterResetHint = histogram.GaugeType
	r = r.Compact(0)
	if perSecond {
		r.Div(float64(w) / 1000)
	}
	return r, true
}

func (c *histCall) incompatible() bool {
	c.warn(annotations.NewMixedExponentialCustomHistogramsWarning(c.name, c.pos))
	return false
}

// anchoredMixedCount is anchoredCount over a window that holds
// histograms: changes or resets from the last sample at or before the
// start, a change of type counting as both.
func anchoredMixedCount(pts []Point, hpts []HPoint, start, end, lookback int64, resets bool) (float64, bool) {
	lo, hi := window(pts, start-lookback, end)
	hlo, hhi := hwindow(hpts, start-lookback, end)
	fp, hp := pts[lo:hi], hpts[hlo:hhi]
	// The anchor: the newest sample of either kind at or before start.
	fa := sort.Search(len(fp), func(i int) bool { return fp[i].T > start }) - 1
	ha := sort.Search(len(hp), func(i int) bool { return hp[i].T > start }) - 1
	switch {
	case fa >= 0 && (ha < 0 || fp[fa].T > hp[ha].T):
		fp, hp = fp[fa:], hp[ha+1:]
	case ha >= 0:
		fp, hp = fp[fa+1:], hp[ha:]
	}
	if len(fp)+len(hp) < 2 {
		return 0, false
	}
	n := 0
	eachMerged(hp, fp, func(prevF, curF float64, prevH, curH *FloatHistogram) {
		switch {
		case (prevH == nil) != (curH == nil):
			n++
		case prevH != nil:
			if resets && curH.DetectReset(prevH) || !resets && !curH.Equals(prevH) {
				n++
			}
		case resets:
			if curF < prevF {
				n++
			}
		case curF != prevF && !(math.IsNaN(curF) && math.IsNaN(prevF)):
			n++
		}
	})
	return float64(n), true
}

// smoothedHist is the smoothed selector's value at t for a series with
// histograms: the sample at t, else interpolated between the samples
// around it, else the last one before it. Floats around it, or
// exponential and custom buckets to interpolate between, leave no value
// and say why (warn).
func smoothedHist(pts []Point, hpts []HPoint, t, lookback int64) (h *FloatHistogram, ok bool, warn func(name string, pos posrange.PositionRange) error) {
	lo, hi := hwindow(hpts, t-lookback, t+lookback)
	f := hpts[lo:hi]
	k := sort.Search(len(f), func(j int) bool { return f[j].T >= t })
	flo, fhi := window(pts, t-lookback, t+lookback)
	if fhi > flo {
		return nil, false, annotations.NewMixedFloatsHistogramsWarning
	}
	switch {
	case k < len(f) && f[k].T == t:
		return f[k].H, true, nil
	case k > 0 && k < len(f):
		// Counters (any histogram not marked a gauge) interpolate across
		// a reset from nothing.
		counter := f[k-1].H.CounterResetHint != histogram.GaugeType || f[k].H.CounterResetHint != histogram.GaugeType
		h, err := hlerp(f[k-1], f[k], t, counter)
		if err != nil {
			return nil, false, annotations.NewMixedExponentialCustomHistogramsWarning
		}
		return h, true, nil
	case k > 0:
		return f[k-1].H, true, nil
	}
	return nil, false, nil
}

// HistogramBucket is one bucket of a histogram value as Prometheus's API
// shows it: Boundaries 0 for (Lower, Upper], 1 for [Lower, Upper), 2
// for (Lower, Upper), 3 for [Lower, Upper].
type HistogramBucket struct {
	Boundaries          int
	Lower, Upper, Count float64
}

// HistogramBuckets lists h's buckets that hold something, in order.
func HistogramBuckets(h *FloatHistogram) []HistogramBucket {
	var out []HistogramBucket
	it := h.AllBucketIterator()
	for it.Next() {
		b := it.At()
		if b.Count == 0 {
			continue
		}
		rule := 2
		switch {
		case b.LowerInclusive && b.UpperInclusive:
			rule = 3
		case b.LowerInclusive:
			rule = 1
		case b.UpperInclusive:
			rule = 0
		}
		out = append(out, HistogramBucket{rule, b.Lower, b.Upper, b.Count})
	}
	return out
}

// resetFrom says whether cur reset from prev; byCounts ignores cur's hint.
func resetFrom(cur, prev *FloatHistogram, byCounts bool) bool {
	if byCounts && cur.CounterResetHint != histogram.UnknownCounterReset {
		c := *cur
		c.CounterResetHint = histogram.UnknownCounterReset
		return c.DetectReset(prev)
	}
	return cur.DetectReset(prev)
}
