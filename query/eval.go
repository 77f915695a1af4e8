package query

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/promql/parser"

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
	// h: native histogram values, h[i] set where step i's value is one
	// (nil when the series has none: histogram.go).
	h []*FloatHistogram
	// dropName: a function or operator dropped the metric name, which
	// stays until the end of the evaluation (delayed name removal).
	dropName bool
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
		var hpts []HPoint
		for i, ok := range s.ok {
			if !ok {
				continue
			}
			if h := s.hist(i); h != nil {
				hpts = append(hpts, HPoint{T: start + int64(i)*step, H: h})
				continue
			}
			pts = append(pts, Point{T: start + int64(i)*step, V: s.v[i]})
		}
		if len(pts) > 0 || len(hpts) > 0 {
			if len(pts) == 0 {
				pts = nil
			}
			out = append(out, Series{Labels: s.labels, Points: pts, Histograms: hpts})
		}
	}
	sort.Slice(out, func(i, j int) bool { return series.Compare(out[i].Labels, out[j].Labels) < 0 })
	return out
}

// nameless returns the labels of a result whose metric name a function
// or operator drops: without it, or, with delayed name removal, with it
// until the end of the evaluation (dropped says so).
func (ev *evaluator) nameless(ls series.Labels) (out series.Labels, dropped bool) {
	if ev.delayName {
		return ls, true
	}
	return dropName(ls), false
}

// cleanup removes the names delayed name removal kept, at the end of an
// evaluation, and refuses (or merges, across steps) the series that are
// then one label set.
func (ev *evaluator) cleanup(v value) (value, error) {
	vv, ok := v.(vectorValue)
	if !ok || !ev.delayName {
		return v, nil
	}
	dropped := false
	for _, s := range vv.series {
		if s.dropName {
			s.labels, s.dropName, dropped = dropName(s.labels), false, true
		}
	}
	if !dropped {
		return vv, nil // no label set changed: checked where it was made
	}
	return vv, ev.checkDuplicates(&vv)
}

func (ev *evaluator) newSeries(ls series.Labels) *vecSeries {
	n := ev.steps()
	return &vecSeries{labels: ls, v: make([]float64, n), ok: make([]bool, n)}
}

func (ev *evaluator) eval(e parser.Expr) (value, error) {
	if err := ev.checkCtx(); err != nil {
		return nil, err
	}
	switch e := e.(type) {
	case *parser.ParenExpr:
		return ev.eval(e.Expr)
	case *parser.StepInvariantExpr:
		return ev.eval(e.Expr)
	case *parser.NumberLiteral:
		return ev.constant(e.Val), nil
	case *parser.DurationExpr:
		// Duration arithmetic where a number is expected (step() * 2,
		// predict_linear(x[1h], 1h + 30m)): its seconds.
		secs, err := ev.durationSeconds(e)
		if err != nil {
			return nil, err
		}
		return ev.constant(secs), nil
	case *parser.StringLiteral:
		return stringValue(e.Val), nil
	case *parser.VectorSelector:
		off, at, err := ev.selectorModifiers(e)
		if err != nil {
			return nil, err
		}
		if e.Smoothed {
			return ev.smoothedSelector(e, off, at)
		}
		return ev.instantSelector(e, off, at)
	case *parser.MatrixSelector, *parser.SubqueryExpr:
		// A bare range vector: only an instant query may return one.
		if ev.steps() != 1 {
			return nil, fmt.Errorf("%w: invalid expression type \"range vector\" for range query, must be Scalar or instant Vector", ErrBadQuery)
		}
		r, _, err := ev.rollupOf(e)
		if err != nil {
			return nil, err
		}
		m, err := ev.rangeSeries(r)
		if err != nil {
			return nil, err
		}
		var out rangeValue
		for _, s := range m.series {
			if r.anchored || r.smoothed {
				t := m.evalTime(ev, 0)
				if pts := extendedWindow(s.pts, t-m.window, t, ev.lookback, r.smoothed); len(pts) > 0 {
					out = append(out, Series{Labels: s.labels, Points: pts})
				}
				continue
			}
			t := m.evalTime(ev, 0)
			lo, hi := window(s.pts, t-m.window, t)
			hlo, hhi := hwindow(s.hpts, t-m.window, t)
			if hi > lo || hhi > hlo {
				o := Series{Labels: s.labels}
				if hi > lo {
					o.Points = append([]Point(nil), s.pts[lo:hi]...)
				}
				if hhi > hlo {
					o.Histograms = append([]HPoint(nil), s.hpts[hlo:hhi]...)
				}
				out = append(out, o)
			}
		}
		sort.Slice(out, func(i, j int) bool { return series.Compare(out[i].Labels, out[j].Labels) < 0 })
		return out, nil
	case *parser.UnaryExpr:
		v, err := ev.eval(e.Expr)
		if err != nil || e.Op != parser.SUB {
			return v, err
		}
		switch v := v.(type) {
		case scalarValue:
			out := make(scalarValue, len(v))
			for i, f := range v {
				out[i] = -f
			}
			return out, nil
		case vectorValue:
			// Negation drops the name, as arithmetic does (or flags it);
			// a histogram is multiplied by -1.
			vv := ev.mapVector(v, func(f float64) float64 { return -f }, true)
			for k, s := range v.series {
				for i, h := range s.h {
					if h != nil && s.ok[i] {
						vv.series[k].setHist(i, h.Copy().Mul(-1))
						vv.series[k].ok[i] = true
					}
				}
			}
			if ev.delayName {
				return vv, nil
			}
			return vv, ev.checkDuplicates(&vv)
		}
		return nil, fmt.Errorf("%w: unary expression only allowed on expressions of type scalar or instant vector, got %s", ErrBadQuery, typeName(v))
	case *parser.Call:
		v, err := ev.call(e)
		if err != nil {
			return nil, err
		}
		// Dropping __name__ can make two series one label set: Prometheus
		// refuses that rather than merge them (with delayed name removal,
		// at the end: cleanup).
		if vv, ok := v.(vectorValue); ok && !keepsName[e.Func.Name] && (!ev.delayName || dropsNameAtOnce[e.Func.Name]) {
			if err := ev.checkDuplicates(&vv); err != nil {
				return nil, err
			}
			return vv, nil
		}
		return v, nil
	case *parser.AggregateExpr:
		return ev.aggregate(e)
	case *parser.BinaryExpr:
		v, err := ev.binary(e)
		if err != nil {
			return nil, err
		}
		// Arithmetic and bool comparisons drop __name__ too, and `or`
		// joins series that may have the same labels (-a or -b); a
		// filtering comparison only keeps series its side had.
		if vv, ok := v.(vectorValue); ok && (!e.Op.IsComparisonOperator() || e.ReturnBool) {
			if err := ev.checkDuplicates(&vv); err != nil {
				return nil, err
			}
			return vv, nil
		}
		return v, nil
	}
	return nil, fmt.Errorf("%w: unsupported expression %q", ErrBadQuery, e)
}

// dropsNameAtOnce are the functions whose answers lose the name even with
// delayed name removal (a classic histogram's groups are made without
// it).
var dropsNameAtOnce = map[string]bool{"histogram_quantile": true, "histogram_quantiles": true, "histogram_fraction": true}

// constant is a scalar of the same value at every step.
func (ev *evaluator) constant(f float64) scalarValue {
	s := make(scalarValue, ev.steps())
	for i := range s {
		s[i] = f
	}
	return s
}

// loaded is one series' samples as read from storage.
type loaded struct {
	labels   series.Labels
	pts      []Point
	hpts     []HPoint
	dropName bool // a subquery's series whose name goes at the end
}

// load reads the series me selects with samples in [mint, maxt]. Stale
// markers are kept when keepStale (instant vectors end at them) and
// dropped otherwise (range vectors skip them, as Prometheus does).
func (ev *evaluator) load(vs *parser.VectorSelector, mint, maxt int64, keepStale bool) ([]loaded, error) {
	var out []loaded
	err := ev.each(vs, mint, maxt, keepStale, false, func(ls series.Labels, pts []Point, hpts []HPoint) error {
		out = append(out, loaded{labels: ls, pts: pts, hpts: hpts})
		return nil
	})
	return out, err
}

// each calls f with every selected series that has samples in [mint,
// maxt], in storage order. With reuse, pts is one buffer reused from
// series to series (f must not keep it): a range function over many
// series then needs memory for one series at a time.
// f gets the series' native histograms too (hpts; never reused).
func (ev *evaluator) each(vs *parser.VectorSelector, mint, maxt int64, keepStale, reuse bool, f func(series.Labels, []Point, []HPoint) error) error {
	return ev.eachShard(vs, mint, maxt, keepStale, reuse, 0, 1, f)
}

// errNoShards: the source cannot split a selection.
var errNoShards = errors.New("source cannot split a selection")

// eachShard is each over the shard-th of shards parts of the selection.
func (ev *evaluator) eachShard(vs *parser.VectorSelector, mint, maxt int64, keepStale, reuse bool, shard, shards int, f func(series.Labels, []Point, []HPoint) error) error {
	ms, err := matchersOf(vs)
	if err != nil {
		return err
	}
	q, err := ev.src.Querier(mint, maxt)
	if err != nil {
		return err
	}
	defer q.Close()
	defer ev.noteWarnings(q)
	markRaw := func() {
		ev.markTier(-1)
		for old := ev.counts.rawFrom.Load(); mint < old && !ev.counts.rawFrom.CompareAndSwap(old, mint); old = ev.counts.rawFrom.Load() {
		}
	}
	if !ev.histOnly {
		markRaw()
	}
	if r, ok := q.(BufferReuser); ok {
		r.ReuseBuffers() // every series is read out before the next
	}
	if ev.histOnly {
		hq, ok := q.(HistogramQuerier)
		if !ok {
			return nil
		}
		hq.HistogramsOnly()
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
	hset, _ := set.(series.HistSet)
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
		var hpts []HPoint
		if hset != nil {
			hpts = hpointsOf(hset.Hists(), mint, maxt, keepStale)
		}
		if ev.counts.samples.Add(int64(len(pts)+len(hpts))) > int64(ev.max) {
			return fmt.Errorf("%w: query processing would load too many samples into memory (more than %d)", ErrTooLarge, ev.max)
		}
		if len(pts) > 0 || len(hpts) > 0 {
			if ev.histOnly {
				markRaw() // histograms beside a tier's floats: raw was read
			}
			if err := f(ls.Copy(), pts, hpts); err != nil {
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

// evalTimes returns the first and last time a selector is evaluated at.
func (ev *evaluator) evalTimes(off int64, at *int64) (int64, int64) {
	if at != nil {
		return *at - off, *at - off
	}
	return ev.start - off, ev.end - off
}

// instantSelector evaluates a vector selector: at each step t, the newest
// sample in (t - lookback, t], unless it is a stale marker.
func (ev *evaluator) instantSelector(vs *parser.VectorSelector, off int64, at *int64) (value, error) {
	first, last := ev.evalTimes(off, at)
	res, err := ev.parallelEach(vs, first-ev.lookback+1, last, true, func(_ int, ls series.Labels, pts []Point, hpts []HPoint) *vecSeries {
		return ev.instantSeries(ls, pts, hpts, off, at)
	})
	return vectorValue{series: res}, err
}

// parallelEach calls f for every selected series, reading the selection
// in ev.shards() shards in parallel (each with its own Querier and reused
// buffer; one shard when the source cannot split), and returns the
// non-nil results in shard order. f must not keep pts; calls for one
// shard are sequential, so f may keep scratch space per shard.
func (ev *evaluator) parallelEach(vs *parser.VectorSelector, mint, maxt int64, keepStale bool, f func(shard int, ls series.Labels, pts []Point, hpts []HPoint) *vecSeries) ([]*vecSeries, error) {
	shards := ev.shards()
	parts := make([][]*vecSeries, shards)
	errs := make([]error, shards)
	run := func(k, n int) {
		errs[k] = ev.eachShard(vs, mint, maxt, keepStale, true, k, n, func(ls series.Labels, pts []Point, hpts []HPoint) error {
			if o := f(k, ls, pts, hpts); o != nil {
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
	// fromStep: steps before it are answered elsewhere (a rollup tier);
	// toStep, when set: steps from it on are.
	fromStep, toStep int
}

func (m *matrixArg) evalTime(ev *evaluator, i int) int64 {
	if m.at != nil {
		return *m.at - m.off
	}
	return ev.ts(i) - m.off
}

// rangeSeries evaluates a range selector x[5m] or a subquery expr[1h:5m]
// into the points every step's window needs.
func (ev *evaluator) rangeSeries(r *rangeArg) (*matrixArg, error) {
	m := &matrixArg{window: r.window, off: r.off, at: r.at}
	first, last := ev.evalTimes(r.off, r.at)
	var err error
	if !r.subquery() {
		from, to := first-r.window+1, last
		if r.anchored || r.smoothed {
			// The edges look back, and a smoothed one ahead, as far as
			// an instant vector would.
			from -= ev.lookback
			if r.smoothed {
				to += ev.lookback
			}
		}
		m.series, err = ev.load(r.sel, from, to, false)
		return m, err
	}
	innerStart, innerEnd, err := ev.subqueryGrid(r, first-r.window, last)
	if err != nil || innerStart > innerEnd {
		return m, err
	}
	inner := ev.sub(innerStart, innerEnd, r.step)
	v, err := inner.eval(r.sub)
	if err != nil {
		return nil, err
	}
	switch v := v.(type) {
	case vectorValue:
		for _, s := range v.series {
			l := loaded{labels: s.labels, dropName: s.dropName}
			for i, ok := range s.ok {
				if !ok {
					continue
				}
				if h := s.hist(i); h != nil {
					// A subquery may repeat a sample, or skip the one
					// that reset: its hint of reset (or of none) would be
					// counted again or missed. As Prometheus, the hint is
					// dropped and the counts decide.
					if h.CounterResetHint == histogram.CounterReset || h.CounterResetHint == histogram.NotCounterReset {
						c := *h
						c.CounterResetHint = histogram.UnknownCounterReset
						h = &c
					}
					l.hpts = append(l.hpts, HPoint{T: inner.ts(i), H: h})
					continue
				}
				l.pts = append(l.pts, Point{T: inner.ts(i), V: s.v[i]})
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

// sub returns the evaluator of a subquery's inner expression.
func (ev *evaluator) sub(start, end, step int64) *evaluator {
	inner := *ev
	inner.start, inner.end, inner.step, inner.fold = start, end, step, nil
	inner.tierMode = "" // a forced tier names the outer query's range functions
	return &inner
}

// subqueryGrid returns the times a subquery's inner expression is
// evaluated at: multiples of its step in (from, last]; start > end when
// there are none.
func (ev *evaluator) subqueryGrid(r *rangeArg, from, last int64) (start, end int64, err error) {
	step := r.step
	if step <= 0 {
		return 0, 0, fmt.Errorf("%w: subquery step must be positive in %q", ErrBadQuery, r.node)
	}
	start = from - mod(from, step)
	if start <= from {
		start += step
	}
	if start > last {
		return 1, 0, nil
	}
	end = last - mod(last, step)
	if (end-start)/step > 1_000_000 {
		return 0, 0, fmt.Errorf("%w: subquery %q would evaluate more than a million steps", ErrTooLarge, r.node)
	}
	return start, end, nil
}

func mod(a, b int64) int64 {
	r := a % b
	if r < 0 {
		r += b
	}
	return r
}
