package query

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/headroomdb/headroom/storage/series"
)

// Prometheus 3's extended range selectors. An anchored window x[5m]
// anchored starts at the last sample at or before its start (looking back
// up to the lookback delta), so an increase over consecutive windows adds
// up to the increase over their union; a smoothed one interpolates the
// values at both edges from the samples around them.

// Functions each modifier can be used with: the others would see samples
// outside the window.
var (
	anchoredFuncs = []string{"changes", "delta", "increase", "rate", "resets"}
	smoothedFuncs = []string{"delta", "increase", "rate"}
)

// extendedRange evaluates a range function over an anchored or smoothed
// range selector.
func (ev *evaluator) extendedRange(e *parser.Call, re *rangeArg) (value, error) {
	name := e.Func.Name
	mod, allowed := "anchored", anchoredFuncs
	if re.smoothed {
		mod, allowed = "smoothed", smoothedFuncs
	}
	if !slices.Contains(allowed, name) {
		return nil, fmt.Errorf("%w: %s modifier can only be used with: %s - not with %s", ErrExec, mod, strings.Join(allowed, ", "), name)
	}
	m, err := ev.rangeSeries(re)
	if err != nil {
		return nil, err
	}
	out := vectorValue{}
	for _, s := range m.series {
		ls, dropped := ev.nameless(s.labels)
		o := ev.newSeries(ls)
		o.dropName = dropped || s.dropName
		any := false
		hc := &histCall{ev: ev, name: s.labels.Get(series.MetricName), pos: e.Args[0].PositionRange()}
		for i := range o.v {
			end := m.evalTime(ev, i)
			start := end - re.window
			var v float64
			var ok bool
			if len(s.hpts) > 0 {
				switch name {
				case "rate", "increase", "delta":
					if len(s.pts) > 0 {
						hc.warn(annotations.NewMixedFloatsHistogramsWarning(hc.name, hc.pos))
						continue
					}
					if h, ok := hc.extendedHistRate(s.hpts, start, end, ev.lookback, re.smoothed, name != "delta", name == "rate", re.window); ok {
						o.ok[i], any = true, true
						o.setHist(i, h)
					}
				default:
					if v, ok = anchoredMixedCount(s.pts, s.hpts, start, end, ev.lookback, name == "resets"); ok {
						o.v[i], o.ok[i], any = v, true, true
					}
				}
				continue
			}
			switch name {
			case "rate", "increase", "delta":
				v, ok = extendedRate(s.pts, start, end, ev.lookback, re.smoothed, name != "delta", name == "rate", re.window)
			default:
				v, ok = anchoredCount(s.pts, start, end, ev.lookback, name == "resets")
			}
			if ok {
				o.v[i], o.ok[i], any = v, true, true
			}
		}
		if any {
			out.series = append(out.series, o)
		}
		if err := ev.checkCtx(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// extendedSpan returns the points an extended window (start, end] sees:
// back to the lookback delta before its start, and as far after its end
// when smoothed.
func extendedSpan(pts []Point, start, end, lookback int64, smoothed bool) []Point {
	to := end
	if smoothed {
		to += lookback
	}
	lo, hi := window(pts, start-lookback, to)
	return pts[lo:hi]
}

// interpolate is the value at t on the line through a and b; a counter
// that reset between them starts from 0.
func interpolate(a, b Point, t int64, counter bool) float64 {
	y1, y2 := a.V, b.V
	if counter && y2 < y1 {
		y1 = 0
	}
	return y1 + (y2-y1)*float64(t-a.T)/float64(b.T-a.T)
}

// edgeLeft is the value at a window's start: its first sample's, or,
// when smoothed and that sample lies before the start, interpolated
// towards the next.
func edgeLeft(f []Point, first int, start int64, smoothed, counter bool) float64 {
	if f[first].T >= start || !smoothed {
		return f[first].V
	}
	return interpolate(f[first], f[first+1], start, counter)
}

// edgeRight is the value at a window's end: its last sample's if that is
// inside, else the one before it, or, when smoothed, interpolated between
// the two.
func edgeRight(f []Point, last int, end int64, smoothed, counter bool) float64 {
	if f[last].T <= end || last == 0 {
		return f[last].V
	}
	if !smoothed {
		return f[last-1].V
	}
	return interpolate(f[last-1], f[last], end, counter)
}

// extendedEdges returns the indexes of an extended window's edge samples
// among n (at(i) their times): first, the last at or before its start
// (else the first), and last, its last (smoothed: the first at or after
// its end); ok is false when the window has no value.
func extendedEdges(n int, at func(int) int64, start, end int64, smoothed bool) (first, last int, ok bool) {
	if n == 0 {
		return 0, 0, false
	}
	last = n - 1
	first = max(0, sort.Search(last, func(i int) bool { return at(i) > start })-1)
	if smoothed {
		last = sort.Search(last, func(i int) bool { return at(i) >= end })
	}
	if at(last) <= start || (smoothed && at(first) > end) {
		return 0, 0, false
	}
	return first, last, true
}

// insideEdges narrows the edges to the samples strictly inside the
// window: those between the edge values.
func insideEdges(first, last int, at func(int) int64, start, end int64) (int, int) {
	if at(first) <= start {
		first++
	}
	if at(last) >= end {
		last--
	}
	return first, last
}

// extendedRate is rate, increase or delta over an anchored or smoothed
// window: the difference of its edge values, no extrapolation, with
// counter resets inside it added back.
func extendedRate(pts []Point, start, end, lookback int64, smoothed, counter, perSecond bool, w int64) (float64, bool) {
	f := extendedSpan(pts, start, end, lookback, smoothed)
	at := func(i int) int64 { return f[i].T }
	first, last, ok := extendedEdges(len(f), at, start, end, smoothed)
	if !ok {
		return 0, false
	}
	left := edgeLeft(f, first, start, smoothed, counter)
	right := edgeRight(f, last, end, smoothed, counter)
	r := right - left
	if counter {
		first, last = insideEdges(first, last, at, start, end)
		prev := left
		for _, p := range f[first : last+1] {
			if p.V < prev {
				r += prev
			}
			prev = p.V
		}
		if right < prev {
			r += prev
		}
	}
	if perSecond {
		r /= float64(w) / 1000
	}
	return r, true
}

// anchoredCount is changes or resets over an anchored window: from its
// last sample at or before the start, if any sample follows it.
func anchoredCount(pts []Point, start, end, lookback int64, resets bool) (float64, bool) {
	f := extendedSpan(pts, start, end, lookback, false)
	anchor := sort.Search(len(f), func(i int) bool { return f[i].T > start }) - 1
	if anchor+1 >= len(f) {
		return 0, false
	}
	f = f[max(anchor, 0):]
	n := 0
	for i := 1; i < len(f); i++ {
		if resets {
			if f[i].V < f[i-1].V {
				n++
			}
		} else if f[i].V != f[i-1].V && !(math.IsNaN(f[i].V) && math.IsNaN(f[i-1].V)) {
			n++
		}
	}
	return float64(n), true
}

// extendedWindow is the range vector an anchored or smoothed selector
// gives at one instant: its samples inside (start, end) framed by the
// edge values at start and end.
func extendedWindow(pts []Point, start, end, lookback int64, smoothed bool) []Point {
	f := extendedSpan(pts, start, end, lookback, smoothed)
	at := func(i int) int64 { return f[i].T }
	first, last, ok := extendedEdges(len(f), at, start, end, false)
	if !ok {
		return nil
	}
	if smoothed {
		last = sort.Search(len(f)-1, func(i int) bool { return f[i].T >= end })
	}
	left := edgeLeft(f, first, start, smoothed, false)
	right := edgeRight(f, last, end, smoothed, false)
	first, last = insideEdges(first, last, at, start, end)
	out := make([]Point, 0, max(last-first+1, 0)+2)
	out = append(out, Point{T: start, V: left})
	if first <= last {
		out = append(out, f[first:last+1]...)
	}
	return append(out, Point{T: end, V: right})
}

// smoothedSelector evaluates `x smoothed`: at each step the sample at that
// instant, else the value interpolated between the samples around it
// (within the lookback delta either side), else the last one before it.
func (ev *evaluator) smoothedSelector(vs *parser.VectorSelector, off int64, at *int64) (value, error) {
	first, last := ev.evalTimes(off, at)
	res, err := ev.parallelEach(vs, first-ev.lookback+1, last+ev.lookback, false, func(_ int, ls series.Labels, pts []Point, hpts []HPoint) *vecSeries {
		s := ev.newSeries(ls)
		any := false
		for i := range s.v {
			t := ev.ts(i) - off
			if at != nil {
				t = *at - off
			}
			if len(hpts) > 0 {
				h, ok, warn := smoothedHist(pts, hpts, t, ev.lookback)
				if ok {
					s.setHist(i, h)
					s.ok[i], any = true, true
					continue
				}
				if warn != nil {
					ev.annotate(warn(ls.Get(series.MetricName), vs.PositionRange()))
				}
				if k, _ := hwindow(hpts, t-ev.lookback, t+ev.lookback); k < len(hpts) && hpts[k].T <= t+ev.lookback {
					continue // histograms around t that give no value
				}
			}
			lo, hi := window(pts, t-ev.lookback, t+ev.lookback)
			f := pts[lo:hi]
			k := sort.Search(len(f), func(j int) bool { return f[j].T >= t })
			switch {
			case k < len(f) && f[k].T == t:
				s.v[i] = f[k].V
			case k > 0 && k < len(f):
				s.v[i] = interpolate(f[k-1], f[k], t, false)
			case k > 0:
				s.v[i] = f[k-1].V
			default:
				continue
			}
			s.ok[i], any = true, true
		}
		if !any {
			return nil
		}
		return s
	})
	return vectorValue{series: res}, err
}
