package query

import (
	"math"
	"slices"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/parser/posrange"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/headroomdb/headroom/storage/series"
)

// simpleAggrs are the aggregations computed by folding each input series
// into its group as it comes (foldGroup), instead of gathering every
// step's values first.
var simpleAggrs = map[string]bool{"sum": true, "avg": true, "min": true, "max": true, "count": true, "group": true}

// foldGroup is one group of a simple aggregation being computed.
type foldGroup struct {
	labels series.Labels
	v      []float64
	ok     []bool
	// avg, as Prometheus 3 computes it: v is the sum and c its Kahan
	// compensation, n the values so far; a step whose sum would
	// overflow turns to an incremental mean (inc), v then the mean.
	n, c []float64
	inc  []bool // made at the first overflow
	// Native histogram members of sum and avg (histogram.go): hsum[i]
	// their sum (or mean) at step i. A step with floats too (ok) or
	// histograms that do not add up has no value.
	hsum  []*histSum
	hbad  []bool
	notes histNotes
}

// histNotes says what an aggregation did with histograms, for the
// caller to annotate.
type histNotes struct{ mixed, ignored, incompatible, reconciled bool }

func (n *histNotes) or(o histNotes) {
	n.mixed, n.ignored, n.incompatible = n.mixed || o.mixed, n.ignored || o.ignored, n.incompatible || o.incompatible
	n.reconciled = n.reconciled || o.reconciled
}

func newFoldGroup(name string, ls series.Labels, steps int) *foldGroup {
	g := &foldGroup{labels: ls, v: make([]float64, steps), ok: make([]bool, steps)}
	switch name {
	case "avg":
		g.n, g.c = make([]float64, steps), make([]float64, steps)
	case "sum":
		// Kahan-Neumaier, as Prometheus 3: 2 + 8 + 1e100 - 1e100 is 10.
		g.c = make([]float64, steps)
	}
	return g
}

// avgAdd adds x at step i (its count already counted in n).
func (g *foldGroup) avgAdd(i int, x float64) {
	if g.n[i] == 1 { // the first value is the sum, even an infinite one
		g.v[i], g.c[i] = x, 0
		return
	}
	if g.inc == nil || !g.inc[i] {
		t, c := neumaierAdd(g.v[i], g.c[i], x)
		if !math.IsInf(t, 0) {
			g.v[i], g.c[i] = t, c
			return
		}
		// The sum would overflow: a mean from here on.
		if g.inc == nil {
			g.inc = make([]bool, len(g.v))
		}
		g.inc[i] = true
		g.v[i] /= g.n[i] - 1
		g.c[i] /= g.n[i] - 1
	}
	// An infinite mean stays as it is for a value that cannot change it
	// (an infinity of its sign, or any finite value): the step below
	// would compute Inf - Inf.
	if m := g.v[i]; math.IsInf(m, 0) && (math.IsInf(x, 0) && (m > 0) == (x > 0) || !math.IsInf(x, 0) && !math.IsNaN(x)) {
		return
	}
	// Prometheus 3's aggregation step: the difference to the mean, each
	// side divided by the count so that it cannot overflow.
	cur := g.v[i] + g.c[i]
	g.v[i], g.c[i] = neumaierAdd(g.v[i], g.c[i], x/g.n[i]-cur/g.n[i])
}

// avgMean is step i's mean.
func (g *foldGroup) avgMean(i int) float64 {
	if g.inc != nil && g.inc[i] {
		return g.v[i] + g.c[i]
	}
	return g.v[i]/g.n[i] + g.c[i]/g.n[i]
}

// add folds a member series in, each step in one pass: the arithmetic of
// Prometheus's aggregation, each step's values in member order.
func (g *foldGroup) add(name string, s *vecSeries) {
	if s.h != nil {
		g.addMixed(name, s)
		return
	}
	v, ok := s.v[:len(g.v)], s.ok[:len(g.v)]
	switch name {
	case "sum":
		for i, x := range v {
			if ok[i] {
				g.v[i], g.c[i] = neumaierAdd(g.v[i], g.c[i], x)
				g.ok[i] = true
			}
		}
	case "avg":
		for i, x := range v {
			if ok[i] {
				g.n[i]++
				g.avgAdd(i, x)
				g.ok[i] = true
			}
		}
	case "min":
		for i, x := range v {
			if ok[i] && (!g.ok[i] || x < g.v[i] || math.IsNaN(g.v[i])) {
				g.v[i], g.ok[i] = x, true
			}
		}
	case "max":
		for i, x := range v {
			if ok[i] && (!g.ok[i] || x > g.v[i] || math.IsNaN(g.v[i])) {
				g.v[i], g.ok[i] = x, true
			}
		}
	case "count":
		for i := range v {
			if ok[i] {
				g.v[i]++
				g.ok[i] = true
			}
		}
	case "group":
		for i := range v {
			if ok[i] {
				g.v[i], g.ok[i] = 1, true
			}
		}
	}
}

// Aggregations as numbers, for addStep.
const (
	aggSum = iota
	aggAvg
	aggMin
	aggMax
	aggCount
	aggGroup
)

var aggOps = map[string]int{"sum": aggSum, "avg": aggAvg, "min": aggMin, "max": aggMax, "count": aggCount, "group": aggGroup}

// addStep folds one member's value x at step i in, as add does.
func (g *foldGroup) addStep(agg, i int, x float64) {
	switch agg {
	case aggSum:
		g.v[i], g.c[i] = neumaierAdd(g.v[i], g.c[i], x)
	case aggAvg:
		g.n[i]++
		g.avgAdd(i, x)
	case aggMin:
		if !g.ok[i] || x < g.v[i] || math.IsNaN(g.v[i]) {
			g.v[i] = x
		}
	case aggMax:
		if !g.ok[i] || x > g.v[i] || math.IsNaN(g.v[i]) {
			g.v[i] = x
		}
	case aggCount:
		g.v[i]++
	case aggGroup:
		g.v[i] = 1
	}
	g.ok[i] = true
}

// addRun folds a member's values xs at the steps from i0 on in, as add
// does: a loop of its own per aggregation.
func (g *foldGroup) addRun(agg, i0 int, xs []float64) {
	v, ok := g.v[i0:i0+len(xs)], g.ok[i0:i0+len(xs)]
	switch agg {
	case aggSum:
		c := g.c[i0 : i0+len(xs)]
		for k, x := range xs {
			v[k], c[k] = neumaierAdd(v[k], c[k], x)
		}
	case aggAvg:
		n, c := g.n[i0:i0+len(xs)], g.c[i0:i0+len(xs)]
		for k, x := range xs {
			n[k]++
			// avgAdd's common case inline: a compensated sum that does
			// not overflow.
			if t := v[k] + x; g.inc == nil && !math.IsInf(t, 0) {
				if math.Abs(v[k]) >= math.Abs(x) {
					c[k] += (v[k] - t) + x
				} else {
					c[k] += (x - t) + v[k]
				}
				v[k] = t
				continue
			}
			g.avgAdd(i0+k, x)
		}
	case aggMin:
		for k, x := range xs {
			if !ok[k] || x < v[k] || math.IsNaN(v[k]) {
				v[k] = x
			}
		}
	case aggMax:
		for k, x := range xs {
			if !ok[k] || x > v[k] || math.IsNaN(v[k]) {
				v[k] = x
			}
		}
	case aggCount:
		for k := range xs {
			v[k]++
		}
	case aggGroup:
		for k := range xs {
			v[k] = 1
		}
	}
	for len(ok) > 0 {
		ok = ok[copy(ok, allTrue[:]):]
	}
}

var allTrue = func() (t [1024]bool) {
	for i := range t {
		t[i] = true
	}
	return t
}()

// addMixed folds in a member with histogram values, step by step.
func (g *foldGroup) addMixed(name string, s *vecSeries) {
	agg := aggOps[name]
	for i := range g.v {
		if !s.ok[i] {
			continue
		}
		if h := s.hist(i); h != nil {
			g.addHist(agg, i, h)
			continue
		}
		g.addStep(agg, i, s.v[i])
	}
}

// addHist folds a histogram value in: sum and avg add it up, count and
// group count it, min and max ignore it (as Prometheus does).
func (g *foldGroup) addHist(agg, i int, h *FloatHistogram) {
	switch agg {
	case aggCount, aggGroup:
		g.addStep(agg, i, 0)
		return
	case aggMin, aggMax:
		g.notes.ignored = true
		return
	}
	if g.hsum == nil {
		g.hsum, g.hbad = make([]*histSum, len(g.v)), make([]bool, len(g.v))
	}
	if g.hsum[i] == nil {
		g.hsum[i] = &histSum{mean: agg == aggAvg}
	}
	if err := g.hsum[i].add(h); err != nil {
		g.hbad[i] = true
	}
}

// merge folds o, the same group over other members, in.
func (g *foldGroup) merge(name string, o *foldGroup) {
	g.notes.or(o.notes)
	for i, h := range o.hsum {
		if h == nil {
			continue
		}
		if g.hsum == nil {
			g.hsum, g.hbad = make([]*histSum, len(g.v)), make([]bool, len(g.v))
		}
		g.hbad[i] = g.hbad[i] || o.hbad[i]
		if g.hsum[i] == nil {
			g.hsum[i] = h
		} else if err := g.hsum[i].merge(h); err != nil {
			g.hbad[i] = true
		}
	}
	for i, set := range o.ok {
		if !set {
			continue
		}
		if !g.ok[i] {
			g.v[i], g.ok[i] = o.v[i], true
			if g.c != nil { // sum, avg
				g.c[i] = o.c[i]
			}
			if g.n != nil {
				g.n[i], g.c[i] = o.n[i], o.c[i]
				if o.inc != nil && o.inc[i] {
					if g.inc == nil {
						g.inc = make([]bool, len(g.v))
					}
					g.inc[i] = true
				}
			}
			continue
		}
		x := o.v[i]
		switch name {
		case "sum":
			g.v[i], g.c[i] = neumaierAdd(g.v[i], g.c[i], x)
			g.c[i] += o.c[i]
		case "count":
			g.v[i] += x
		case "avg":
			n := g.n[i] + o.n[i]
			gInc, oInc := g.inc != nil && g.inc[i], o.inc != nil && o.inc[i]
			if !gInc && !oInc {
				t, c := neumaierAdd(g.v[i], g.c[i], x)
				if !math.IsInf(t, 0) {
					g.v[i], g.c[i], g.n[i] = t, c+o.c[i], n
					continue
				}
			}
			// Either is a mean, or the sums together overflow: the
			// weighted mean of the two, each weighted first (b-a may
			// overflow where neither does).
			a, b := g.avgMean(i), o.avgMean(i)
			if g.inc == nil {
				g.inc = make([]bool, len(g.v))
			}
			g.inc[i] = true
			g.v[i], g.c[i], g.n[i] = float64(a*(g.n[i]/n))+float64(b*(o.n[i]/n)), 0, n
		case "min":
			if x < g.v[i] || math.IsNaN(g.v[i]) {
				g.v[i] = x
			}
		case "max":
			if x > g.v[i] || math.IsNaN(g.v[i]) {
				g.v[i] = x
			}
		}
	}
}

// series returns the group as a result series, nil when no step has a
// value.
func (g *foldGroup) series() *vecSeries {
	if g.hsum != nil {
		return g.histSeries()
	}
	for _, set := range g.ok {
		if set {
			switch {
			case g.n != nil: // avg: the means
				for i, set := range g.ok {
					if set {
						g.v[i] = g.avgMean(i)
					}
				}
				g.n, g.c = nil, nil
			case g.c != nil: // sum: with its compensation
				for i, set := range g.ok {
					if set {
						g.v[i] += g.c[i]
					}
				}
				g.c = nil
			}
			return &vecSeries{labels: g.labels, v: g.v, ok: g.ok}
		}
	}
	return nil
}

// histSeries is series for a group with histogram members: the floats'
// steps as series gives them, then the histograms' where no float was.
func (g *foldGroup) histSeries() *vecSeries {
	hsum, hbad := g.hsum, g.hbad
	g.hsum = nil
	floats := append([]bool(nil), g.ok...)
	o := g.series()
	if o == nil {
		o = &vecSeries{labels: g.labels, v: g.v, ok: g.ok}
	}
	any := slices.Contains(o.ok, true)
	for i, h := range hsum {
		switch {
		case h == nil:
			continue
		case floats[i]:
			o.ok[i] = false
			g.notes.mixed = true
			continue
		case hbad[i]:
			g.notes.incompatible = true
			continue
		}
		r, err := h.result(g.n != nil) // avg: the mean
		if err != nil {
			g.notes.incompatible = true
			continue
		}
		g.notes.reconciled = g.notes.reconciled || h.reconciled
		o.setHist(i, r.Compact(0))
		o.ok[i], any = true, true
	}
	if !any {
		return nil
	}
	return o
}

// aggregateSimple computes one group of a simple aggregation from its
// members.
func (ev *evaluator) aggregateSimple(name string, ls series.Labels, members []*vecSeries, pos posrange.PositionRange) *vecSeries {
	g := newFoldGroup(name, ls, ev.steps())
	for _, s := range members {
		g.add(name, s)
	}
	o := g.series()
	ev.histNotes(g.notes, name, pos)
	return o
}

// histNotes annotates what an aggregation at pos did with histograms.
func (ev *evaluator) histNotes(n histNotes, name string, pos posrange.PositionRange) {
	if n.mixed {
		ev.annotate(annotations.NewMixedFloatsHistogramsAggWarning(pos))
	}
	if n.ignored {
		ev.annotate(annotations.NewHistogramIgnoredInAggregationInfo(name, pos))
	}
	if n.incompatible {
		ev.annotate(annotations.NewMixedExponentialCustomHistogramsWarning("", pos))
	}
	if n.reconciled {
		ev.annotate(annotations.NewMismatchedCustomBucketsHistogramsInfo(pos, annotations.HistogramAgg))
	}
}

// folder computes a simple aggregation of a range function over a
// selector while the selection is read: each shard folds its series into
// its own groups as they come, and the shards' groups are merged at the
// end. No series of the selection is kept: a dashboard's
// avg by (host) (avg_over_time(x[1h])) over 90 days of 1,000 series
// otherwise holds 19 MB of per-series steps, only to add them up.
type folder struct {
	name   string
	agg    int // aggOps[name]
	mod    grouping
	steps  int
	shards []foldShard
	used   bool // the range function folded its series
}

type foldShard struct {
	groups map[string]*foldGroup
	order  []*foldGroup
}

func newFolder(name string, mod grouping, steps, shards int) *folder {
	return &folder{name: name, agg: aggOps[name], mod: mod, steps: steps, shards: make([]foldShard, shards)}
}

// add folds s into shard k's group of it; s may be reused after.
func (f *folder) add(k int, s *vecSeries) { f.group(k, s.labels).add(f.name, s) }

// group returns shard k's group of a series of labels ls.
func (f *folder) group(k int, ls series.Labels) *foldGroup {
	sh := &f.shards[k]
	gl := groupLabels(ls, f.mod)
	key := gl.String()
	g, ok := sh.groups[key]
	if !ok {
		if sh.groups == nil {
			sh.groups = map[string]*foldGroup{}
		}
		g = newFoldGroup(f.name, gl, f.steps)
		sh.groups[key] = g
		sh.order = append(sh.order, g)
	}
	return g
}

// result merges the shards' groups; notes says what they did with
// histograms.
func (f *folder) result() (vectorValue, histNotes) {
	all := map[string]*foldGroup{}
	var order []*foldGroup
	for k := range f.shards {
		for _, g := range f.shards[k].order {
			key := g.labels.String()
			if have, ok := all[key]; ok {
				have.merge(f.name, g)
				continue
			}
			all[key] = g
			order = append(order, g)
		}
	}
	var out vectorValue
	var notes histNotes
	for _, g := range order {
		if s := g.series(); s != nil {
			out.series = append(out.series, s)
		}
		notes.or(g.notes)
	}
	return out, notes
}

// foldable reports whether a simple aggregation of e can be folded while
// its selection is read: a range function over a plain selector of one
// metric name, whose series therefore keep distinct label sets when the
// function drops the name (Prometheus refuses duplicates, which folding
// would hide).
func foldable(e parser.Expr) bool {
	fe, ok := unwrap(e).(*parser.Call)
	if !ok || rangeFuncs[fe.Func.Name] == nil {
		return false
	}
	for _, a := range fe.Args {
		ms, ok := unwrap(a).(*parser.MatrixSelector)
		if !ok {
			if _, sub := unwrap(a).(*parser.SubqueryExpr); sub {
				return false
			}
			continue
		}
		vs, ok := ms.VectorSelector.(*parser.VectorSelector)
		if !ok || vs.Timestamp != nil || vs.StartOrEnd != 0 || vs.Anchored || vs.Smoothed {
			return false
		}
		return metricName(vs) != ""
	}
	return false
}
