package query

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/headroomdb/headroom/storage/series"
)

type value interface{}

// scalarValue has a value at every step.
type scalarValue []float64

type stringValue string

// vecSeries is one series of an instant vector evaluated at every step:
// ok[i] says whether it has a value at step i.
type vecSeries struct {
	labels series.Labels
	v      []float64
	ok     []bool
	t      []int64 // the samples' own times (vector selectors only), for timestamp()
}

type vectorValue struct{ series []*vecSeries }

// rangeValue is a range vector evaluated at a single instant (the result
// of an instant query for `x[5m]`).
type rangeValue []Series

func (v vectorValue) matrix(start, step int64) []Series {
	var out []Series
	for _, s := range v.series {
		n := 0
		for _, ok := range s.ok {
			if ok {
				n++
			}
		}
		pts := make([]Point, 0, n)
		for i, ok := range s.ok {
			if ok {
				pts = append(pts, Point{T: start + int64(i)*step, V: s.v[i]})
			}
		}
		if len(pts) > 0 {
			out = append(out, Series{Labels: s.labels, Points: pts})
		}
	}
	sort.Slice(out, func(i, j int) bool { return series.Compare(out[i].Labels, out[j].Labels) < 0 })
	return out
}

func (ev *evaluator) newSeries(ls series.Labels) *vecSeries {
	n := ev.steps()
	return &vecSeries{labels: ls, v: make([]float64, n), ok: make([]bool, n)}
}

func (ev *evaluator) eval(e metricsql.Expr) (value, error) {
	if err := ev.checkCtx(); err != nil {
		return nil, err
	}
	switch e := e.(type) {
	case *metricsql.NumberExpr:
		s := make(scalarValue, ev.steps())
		for i := range s {
			s[i] = e.N
		}
		return s, nil
	case *metricsql.DurationExpr:
		// A duration where a number is expected (predict_linear(x[1h],
		// 1h)): its seconds, as Prometheus 3 reads it.
		s := make(scalarValue, ev.steps())
		for i := range s {
			s[i] = float64(e.Duration(ev.step)) / 1000
		}
		return s, nil
	case *metricsql.StringExpr:
		return stringValue(e.S), nil
	case *metricsql.MetricExpr:
		return ev.instantSelector(e, 0, nil)
	case *metricsql.RollupExpr:
		if e.Window == nil && e.Step == nil {
			me, ok := e.Expr.(*metricsql.MetricExpr)
			if !ok {
				return nil, fmt.Errorf("%w: offset and @ apply to selectors and subqueries, not to %q", ErrBadQuery, e.Expr.AppendString(nil))
			}
			off, at, err := ev.modifiers(e)
			if err != nil {
				return nil, err
			}
			return ev.instantSelector(me, off, at)
		}
		// A bare range vector: only an instant query may return one.
		if ev.steps() != 1 {
			return nil, fmt.Errorf("%w: invalid expression type \"range vector\" for range query, must be Scalar or instant Vector", ErrBadQuery)
		}
		m, err := ev.rangeSeries(e)
		if err != nil {
			return nil, err
		}
		var out rangeValue
		for _, s := range m.series {
			lo, hi := window(s.pts, m.evalTime(ev, 0)-m.window, m.evalTime(ev, 0))
			if hi > lo {
				out = append(out, Series{Labels: s.labels, Points: append([]Point(nil), s.pts[lo:hi]...)})
			}
		}
		sort.Slice(out, func(i, j int) bool { return series.Compare(out[i].Labels, out[j].Labels) < 0 })
		return out, nil
	case *metricsql.FuncExpr:
		v, err := ev.call(e)
		if err != nil {
			return nil, err
		}
		// Dropping __name__ can make two series one label set: Prometheus
		// refuses that rather than merge them.
		if vv, ok := v.(vectorValue); ok && !keepsName[e.Name] {
			if err := ev.checkDuplicates(&vv, e); err != nil {
				return nil, err
			}
			return vv, nil
		}
		return v, nil
	case *metricsql.AggrFuncExpr:
		return ev.aggregate(e)
	case *metricsql.BinaryOpExpr:
		v, err := ev.binary(e)
		if err != nil {
			return nil, err
		}
		// Arithmetic and bool comparisons drop __name__ too, and `or`
		// joins series that may have the same labels (-a or -b); a
		// filtering comparison only keeps series its side had.
		if vv, ok := v.(vectorValue); ok && (!isComparison(e.Op) || e.Bool) {
			if err := ev.checkDuplicates(&vv, e); err != nil {
				return nil, err
			}
			return vv, nil
		}
		return v, nil
	}
	return nil, fmt.Errorf("%w: unsupported expression %q", ErrBadQuery, e.AppendString(nil))
}

// modifiers returns a selector's offset and @ time (nil: none).
func (ev *evaluator) modifiers(e *metricsql.RollupExpr) (int64, *int64, error) {
	var off int64
	if e.Offset != nil {
		off = e.Offset.Duration(ev.step)
	}
	if e.At == nil {
		return off, nil, nil
	}
	v, err := ev.eval(e.At)
	if err != nil {
		return 0, nil, err
	}
	s, ok := v.(scalarValue)
	if !ok {
		return 0, nil, fmt.Errorf("%w: @ modifier must be a number, start() or end()", ErrBadQuery)
	}
	at := int64(math.Round(s[0] * 1000))
	return off, &at, nil
}

// loaded is one series' samples as read from storage.
type loaded struct {
	labels series.Labels
	pts    []Point
}

// load reads the series me selects with samples in [mint, maxt]. Stale
// markers are kept when keepStale (instant vectors end at them) and
// dropped otherwise (range vectors skip them, as Prometheus does).
func (ev *evaluator) load(me *metricsql.MetricExpr, mint, maxt int64, keepStale bool) ([]loaded, error) {
	var out []loaded
	err := ev.each(me, mint, maxt, keepStale, false, func(ls series.Labels, pts []Point) error {
		out = append(out, loaded{labels: ls, pts: pts})
		return nil
	})
	return out, err
}

// each calls f with every selected series that has samples in [mint,
// maxt], in storage order. With reuse, pts is one buffer reused from
// series to series (f must not keep it): a range function over many
// series then needs memory for one series at a time.
func (ev *evaluator) each(me *metricsql.MetricExpr, mint, maxt int64, keepStale, reuse bool, f func(series.Labels, []Point) error) error {
	return ev.eachShard(me, mint, maxt, keepStale, reuse, 0, 1, f)
}

// errNoShards: the source cannot split a selection.
var errNoShards = errors.New("source cannot split a selection")

// eachShard is each over the shard-th of shards parts of the selection.
func (ev *evaluator) eachShard(me *metricsql.MetricExpr, mint, maxt int64, keepStale, reuse bool, shard, shards int, f func(series.Labels, []Point) error) error {
	ms, err := matchersOf(me)
	if err != nil {
		return err
	}
	q, err := ev.src.Querier(mint, maxt)
	if err != nil {
		return err
	}
	defer q.Close()
	ev.markTier(-1)
	for old := ev.counts.rawFrom.Load(); mint < old && !ev.counts.rawFrom.CompareAndSwap(old, mint); old = ev.counts.rawFrom.Load() {
	}
	if r, ok := q.(BufferReuser); ok {
		r.ReuseBuffers() // every series is read out before the next
	}
	var set SeriesSet
	if shards == 1 {
		set, err = q.Series(ms...)
	} else if sq, ok := q.(ShardedQuerier); ok {
		set, err = sq.SeriesShard(shard, shards, ms...)
	} else {
		return errNoShards
	}
	if err != nil {
		return err
	}
	var buf []Point
	if reuse {
		// A day of a 10 s series is 140 KB of points: a scan keeps its
		// buffer for the next query instead of growing a new one.
		if b, ok := pointBufs.Get().(*[]Point); ok {
			buf = *b
		}
		defer func() { pointBufs.Put(&buf) }()
	}
	for set.Next() {
		if ev.counts.series.Add(1) > int64(ev.maxSeries) {
			return fmt.Errorf("%w: query selects more than %d series", ErrTooLarge, ev.maxSeries)
		}
		ls, it := set.At()
		pts := buf[:0]
		if !reuse {
			pts = nil
		}
		if sa, ok := it.(series.SampleAppender); ok {
			// One call per series, then the range (samples are in time
			// order: two searches) and stale filters in place.
			n := len(pts)
			pts = sa.AppendSamples(pts)
			got := pts[n:]
			lo := sort.Search(len(got), func(k int) bool { return got[k].T >= mint })
			hi := sort.Search(len(got), func(k int) bool { return got[k].T > maxt })
			if lo > 0 || hi < len(got) {
				pts = append(pts[:n], got[lo:hi]...)
			}
			if !keepStale {
				pts = dropStale(pts)
			}
		} else {
			for it.Next() {
				t, v := it.At()
				if t < mint || t > maxt {
					continue
				}
				if !keepStale && series.IsStaleNaN(v) {
					continue
				}
				pts = append(pts, Point{T: t, V: v})
			}
		}
		if err := it.Err(); err != nil {
			return err
		}
		if reuse {
			buf = pts
		}
		if ev.counts.samples.Add(int64(len(pts))) > int64(ev.max) {
			return fmt.Errorf("%w: query processing would load too many samples into memory (more than %d)", ErrTooLarge, ev.max)
		}
		if len(pts) > 0 {
			if err := f(ls.Copy(), pts); err != nil {
				return err
			}
		}
		if err := ev.checkCtx(); err != nil {
			return err
		}
	}
	return set.Err()
}

// dropStale removes stale markers in place; most series have none, and
// are only read.
func dropStale(pts []Point) []Point {
	for i, p := range pts {
		if series.IsStaleNaN(p.V) {
			kept := pts[:i]
			for _, p := range pts[i+1:] {
				if !series.IsStaleNaN(p.V) {
					kept = append(kept, p)
				}
			}
			return kept
		}
	}
	return pts
}

var pointBufs sync.Pool

func matchersOf(me *metricsql.MetricExpr) ([]*series.Matcher, error) {
	if len(me.LabelFilterss) != 1 {
		return nil, fmt.Errorf("%w: or-separated label filters are MetricsQL syntax, not PromQL", ErrBadQuery)
	}
	var ms []*series.Matcher
	for _, f := range me.LabelFilterss[0] {
		t := series.MatchEqual
		switch {
		case f.IsRegexp && f.IsNegative:
			t = series.MatchNotRegexp
		case f.IsRegexp:
			t = series.MatchRegexp
		case f.IsNegative:
			t = series.MatchNotEqual
		}
		m, err := series.NewMatcher(t, f.Label, f.Value)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadQuery, err)
		}
		ms = append(ms, m)
	}
	for _, m := range ms {
		if !m.Matches("") {
			return ms, nil
		}
	}
	return nil, fmt.Errorf("%w: vector selector must contain at least one non-empty matcher", ErrBadQuery)
}

// evalTimes returns the first and last time a selector is evaluated at.
func (ev *evaluator) evalTimes(off int64, at *int64) (int64, int64) {
	if at != nil {
		return *at - off, *at - off
	}
	return ev.start - off, ev.end - off
}

// instantSelector evaluates a vector selector: at each step t, the newest
// sample in (t - lookback, t], unless it is a stale marker.
func (ev *evaluator) instantSelector(me *metricsql.MetricExpr, off int64, at *int64) (value, error) {
	first, last := ev.evalTimes(off, at)
	res, err := ev.parallelEach(me, first-ev.lookback+1, last, true, func(_ int, ls series.Labels, pts []Point) *vecSeries {
		s := ev.newSeries(ls)
		s.t = make([]int64, len(s.v))
		any := false
		j := -1 // the newest point at or before t; t only grows
		for i := range s.v {
			t := ev.ts(i) - off
			if at != nil {
				t = *at - off
			}
			for j+1 < len(pts) && pts[j+1].T <= t {
				j++
			}
			if j < 0 || pts[j].T <= t-ev.lookback || series.IsStaleNaN(pts[j].V) {
				continue
			}
			s.v[i], s.ok[i], s.t[i], any = pts[j].V, true, pts[j].T, true
		}
		if !any {
			return nil
		}
		return s
	})
	return vectorValue{series: res}, err
}

// parallelEach calls f for every selected series, reading the selection
// in ev.shards() shards in parallel (each with its own Querier and reused
// buffer; one shard when the source cannot split), and returns the
// non-nil results in shard order. f must not keep pts; calls for one
// shard are sequential, so f may keep scratch space per shard.
func (ev *evaluator) parallelEach(me *metricsql.MetricExpr, mint, maxt int64, keepStale bool, f func(shard int, ls series.Labels, pts []Point) *vecSeries) ([]*vecSeries, error) {
	shards := ev.shards()
	parts := make([][]*vecSeries, shards)
	errs := make([]error, shards)
	run := func(k, n int) {
		errs[k] = ev.eachShard(me, mint, maxt, keepStale, true, k, n, func(ls series.Labels, pts []Point) error {
			if o := f(k, ls, pts); o != nil {
				parts[k] = append(parts[k], o)
			}
			return nil
		})
	}
	if shards > 1 {
		var wg sync.WaitGroup
		for k := 0; k < shards; k++ {
			wg.Add(1)
			go func(k int) {
				defer wg.Done()
				defer recoverTo(&errs[k])
				run(k, shards)
			}(k)
		}
		wg.Wait()
		if errors.Is(errs[0], errNoShards) {
			shards, parts, errs = 1, parts[:1], errs[:1]
			parts[0] = nil
			run(0, 1)
		}
	} else {
		run(0, 1)
	}
	var out []*vecSeries
	for k := 0; k < shards; k++ {
		if errs[k] != nil {
			return nil, errs[k]
		}
		out = append(out, parts[k]...)
	}
	return out, ev.checkCtx()
}

func (ev *evaluator) shards() int { return max(ev.workers, 1) }

// recoverTo turns a panic in a query's worker goroutine into its error:
// a panic there would otherwise end the whole server, not one query.
func recoverTo(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: internal error: %v", ErrExec, r)
	}
}

// window returns the indexes [lo, hi) of the points in (from, to].
func window(pts []Point, from, to int64) (int, int) {
	lo := sort.Search(len(pts), func(k int) bool { return pts[k].T > from })
	hi := sort.Search(len(pts), func(k int) bool { return pts[k].T > to })
	return lo, hi
}

// matrixArg is a range vector argument: its series' points and how to
// find each step's window.
type matrixArg struct {
	series []loaded
	window int64 // milliseconds
	off    int64
	at     *int64
	// fromStep: steps before it are answered elsewhere (a rollup tier).
	fromStep int
}

func (m *matrixArg) evalTime(ev *evaluator, i int) int64 {
	if m.at != nil {
		return *m.at - m.off
	}
	return ev.ts(i) - m.off
}

// rangeSeries evaluates a range selector x[5m] or a subquery expr[1h:5m]
// into the points every step's window needs.
func (ev *evaluator) rangeSeries(e *metricsql.RollupExpr) (*matrixArg, error) {
	if e.Window == nil {
		return nil, fmt.Errorf("%w: %q: a range vector needs a range ([5m])", ErrBadQuery, e.AppendString(nil))
	}
	w := e.Window.Duration(ev.step)
	if w <= 0 {
		return nil, fmt.Errorf("%w: range must be positive in %q", ErrBadQuery, e.AppendString(nil))
	}
	off, at, err := ev.modifiers(e)
	if err != nil {
		return nil, err
	}
	m := &matrixArg{window: w, off: off, at: at}
	first, last := ev.evalTimes(off, at)
	if e.Step == nil {
		me, ok := e.Expr.(*metricsql.MetricExpr)
		if !ok {
			return nil, fmt.Errorf("%w: ranges only allowed for vector selectors, not %q", ErrBadQuery, e.Expr.AppendString(nil))
		}
		m.series, err = ev.load(me, first-w+1, last, false)
		return m, err
	}
	innerStart, innerEnd, sub, err := ev.subqueryGrid(e, first-w, last)
	if err != nil || innerStart > innerEnd {
		return m, err
	}
	inner := &evaluator{ctx: ev.ctx, parent: ev.parent, src: ev.src, start: innerStart, end: innerEnd, step: sub, lookback: ev.lookback,
		max: ev.max, maxSeries: ev.maxSeries, workers: ev.workers, counts: ev.counts}
	v, err := inner.eval(e.Expr)
	if err != nil {
		return nil, err
	}
	switch v := v.(type) {
	case vectorValue:
		for _, s := range v.series {
			l := loaded{labels: s.labels}
			for i, ok := range s.ok {
				if ok {
					l.pts = append(l.pts, Point{T: inner.ts(i), V: s.v[i]})
				}
			}
			m.series = append(m.series, l)
		}
	case scalarValue:
		l := loaded{labels: series.Labels{}}
		for i, f := range v {
			l.pts = append(l.pts, Point{T: inner.ts(i), V: f})
		}
		m.series = append(m.series, l)
	default:
		return nil, fmt.Errorf("%w: subquery of %T", ErrBadQuery, v)
	}
	return m, nil
}

// subqueryGrid returns the times a subquery's inner expression is
// evaluated at: multiples of its step in (from, last]; start > end when
// there are none.
func (ev *evaluator) subqueryGrid(e *metricsql.RollupExpr, from, last int64) (start, end, step int64, err error) {
	step = e.Step.Duration(ev.step)
	if step <= 0 {
		return 0, 0, 0, fmt.Errorf("%w: subquery step must be positive in %q", ErrBadQuery, e.AppendString(nil))
	}
	start = from - mod(from, step)
	if start <= from {
		start += step
	}
	if start > last {
		return 1, 0, step, nil
	}
	end = last - mod(last, step)
	if (end-start)/step > 1_000_000 {
		return 0, 0, 0, fmt.Errorf("%w: subquery %q would evaluate more than a million steps", ErrTooLarge, e.AppendString(nil))
	}
	return start, end, step, nil
}

func mod(a, b int64) int64 {
	r := a % b
	if r < 0 {
		r += b
	}
	return r
}
