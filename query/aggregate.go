package query

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/parser/posrange"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/headroomdb/headroom/storage/series"
)

// groupLabels returns the labels a series is grouped under: with by, the
// listed ones; with without, all but the listed ones and __name__.
func groupLabels(ls series.Labels, g grouping) series.Labels {
	out := series.Labels{}
	for _, l := range ls {
		switch {
		case g.op == "by" && g.has(l.Name):
			out = append(out, l)
		case g.op == "without" && !g.has(l.Name) && !isMetadataLabel(l.Name):
			out = append(out, l)
		}
	}
	return out
}

// checkRatio refuses a NaN ratio of limit_ratio and warns of one outside
// [-1, 1], which is capped, as Prometheus does.
func (ev *evaluator) checkRatio(rs scalarValue, pos posrange.PositionRange) error {
	for i, r := range rs {
		switch {
		case math.IsNaN(r):
			return fmt.Errorf("%w: Ratio value is NaN", ErrExec)
		case r > 1:
			ev.annotate(annotations.NewInvalidRatioWarning(r, 1, pos))
			rs[i] = 1
		case r < -1:
			ev.annotate(annotations.NewInvalidRatioWarning(r, -1, pos))
			rs[i] = -1
		}
	}
	return nil
}

// inRatio says whether limit_ratio(r) keeps a series: by where its
// labels' hash (Prometheus's, so that both pick the same series) falls
// in [0, 1).
func inRatio(ls series.Labels, r float64) bool {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	off := float64(b.Labels().Hash()) / float64(math.MaxUint64)
	if r >= 0 {
		return off < r
	}
	return off >= 1+r
}

// maxK is the largest float64 that converts to an int64 without
// overflow (2^63 - 1024), as Prometheus bounds topk's k.
const maxK = float64(math.MaxInt64 - 1023)

// checkK refuses a k of topk or bottomk that is NaN or does not fit in an
// int64, at any step, with Prometheus's messages: converting it would
// give a k of math.MinInt64.
func checkK(param scalarValue) error {
	for _, k := range param {
		if math.IsNaN(k) {
			return fmt.Errorf("%w: Parameter value is NaN", ErrExec)
		}
		if k > maxK || k < -maxK-1024 {
			return fmt.Errorf("%w: Scalar value %v overflows int64", ErrExec, k)
		}
	}
	return nil
}

func (ev *evaluator) aggregate(e *parser.AggregateExpr) (value, error) {
	name := e.Op.String()
	switch name {
	case "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "limitk", "limit_ratio":
	default:
		return nil, fmt.Errorf("%w: unknown aggregation %q", ErrBadQuery, name)
	}
	want := 1
	if e.Param != nil {
		want = 2
	}
	mod := aggGrouping(e)
	// A simple aggregation of a range function over a selector folds
	// the series as the selection is read (the range function takes the
	// folder; it may decline it).
	var fold *folder
	if want == 1 && simpleAggrs[name] && foldable(e.Expr) {
		fold = newFolder(name, mod, ev.steps(), ev.shards())
		ev.fold = fold
	}
	arg, err := ev.eval(e.Expr)
	ev.fold = nil
	if err != nil {
		return nil, err
	}
	if fold != nil && fold.used {
		res, notes := fold.result()
		ev.histNotes(notes, name, e.PositionRange())
		if ev.delayName && !keepsName[unwrap(e.Expr).(*parser.Call).Func.Name] {
			for _, s := range res.series {
				s.dropName = true
			}
		}
		return res, ev.checkCtx()
	}
	v, ok := arg.(vectorValue)
	if !ok {
		return nil, fmt.Errorf("%w: expected type instant vector in aggregation %q, got %s", ErrBadQuery, name, typeName(arg))
	}
	switch name {
	case "stddev", "stdvar", "topk", "bottomk", "quantile":
		// Prometheus's aggregations of numbers skip histograms.
		var had bool
		if v, had = floatsOnly(v); had {
			ev.annotate(annotations.NewHistogramIgnoredInAggregationInfo(name, e.PositionRange()))
		}
	}
	var param scalarValue
	var label string
	if want == 2 {
		if name == "count_values" {
			p, err := ev.eval(e.Param)
			if err != nil {
				return nil, err
			}
			s, ok := p.(stringValue)
			if !ok {
				return nil, fmt.Errorf("%w: expected type string as the first argument of count_values", ErrBadQuery)
			}
			label = string(s)
			if !series.ValidLabelName(label) {
				return nil, fmt.Errorf("%w: invalid label name %q", ErrBadQuery, label)
			}
		} else {
			p, err := ev.eval(e.Param)
			if err != nil {
				return nil, err
			}
			if param, ok = p.(scalarValue); !ok {
				return nil, fmt.Errorf("%w: expected type scalar as the first argument of %q, got %s", ErrBadQuery, name, typeName(p))
			}
			switch name {
			case "topk", "bottomk", "limitk":
				if err := checkK(param); err != nil {
					return nil, err
				}
			case "limit_ratio":
				if err := ev.checkRatio(param, e.Param.PositionRange()); err != nil {
					return nil, err
				}
			}
			if name == "quantile" {
				ev.checkQuantile(param, e.Param.PositionRange())
			}
		}
	}
	// Group the input series.
	type group struct {
		labels  series.Labels
		members []*vecSeries
	}
	groups := map[string]*group{}
	var order []*group
	if name == "topk" || name == "bottomk" || name == "limitk" {
		// Their answer keeps the groups' order: Prometheus's, the order
		// of the input by labels (a selection comes by series ID).
		slices.SortFunc(v.series, func(a, b *vecSeries) int { return series.Compare(a.labels, b.labels) })
	}
	for _, s := range v.series {
		gl := groupLabels(s.labels, mod)
		k := gl.String()
		g, ok := groups[k]
		if !ok {
			g = &group{labels: gl}
			groups[k] = g
			order = append(order, g)
		}
		g.members = append(g.members, s)
	}
	n := ev.steps()
	out := vectorValue{}
	// keep puts series s's value at step i in the answer: the selecting
	// aggregations (topk, bottomk, limitk, limit_ratio) keep the input
	// series' labels.
	kept := map[*vecSeries]*vecSeries{}
	keep := func(s *vecSeries, i int) {
		o, ok := kept[s]
		if !ok {
			o = ev.newSeries(s.labels)
			o.dropName = s.dropName
			kept[s] = o
			out.series = append(out.series, o)
		}
		o.v[i], o.ok[i] = s.v[i], true
		o.setHist(i, s.hist(i))
	}
	switch name {
	case "limitk", "limit_ratio":
		// Prometheus 3's sampling of series: the first k of each group
		// (in label order), or those whose label hash falls in the
		// ratio's share of the hash space (a negative ratio: the rest),
		// the same series at every step.
		for _, g := range order {
			for i := 0; i < n; i++ {
				taken := 0
				for _, s := range g.members {
					if !s.ok[i] {
						continue
					}
					if name == "limitk" {
						if float64(taken) >= param[i] {
							break
						}
						taken++
					} else if !inRatio(s.labels, param[i]) {
						continue
					}
					keep(s, i)
				}
			}
		}
		return out, nil
	case "topk", "bottomk":
		for _, g := range order {
			for i := 0; i < n; i++ {
				if param[i] < 1 {
					continue
				}
				// checkK bounds k to int64; no group has more members
				// than an int holds.
				k := len(g.members)
				if param[i] < float64(k) {
					k = int(param[i])
				}
				var cand []*vecSeries
				for _, s := range g.members {
					if s.ok[i] {
						cand = append(cand, s)
					}
				}
				sort.SliceStable(cand, func(a, b int) bool {
					x, y := cand[a].v[i], cand[b].v[i]
					if math.IsNaN(x) {
						return false
					}
					if math.IsNaN(y) {
						return true
					}
					if x == y { // ties: by labels, for stable answers
						return series.Compare(cand[a].labels, cand[b].labels) < 0
					}
					if name == "topk" {
						return x > y
					}
					return x < y
				})
				for _, s := range cand[:min(k, len(cand))] {
					keep(s, i)
				}
			}
		}
		return out, nil
	case "count_values":
		byValue := map[string]*vecSeries{}
		for _, g := range order {
			for i := 0; i < n; i++ {
				for _, s := range g.members {
					if !s.ok[i] {
						continue
					}
					val := strconv.FormatFloat(s.v[i], 'f', -1, 64)
					if h := s.hist(i); h != nil {
						val = h.String() // as Prometheus counts histograms
					}
					ls := setLabel(g.labels, label, val)
					k := ls.String()
					o, ok := byValue[k]
					if !ok {
						o = ev.newSeries(ls)
						byValue[k] = o
						out.series = append(out.series, o)
					}
					if !o.ok[i] {
						o.v[i], o.ok[i] = 0, true
					}
					o.v[i]++
				}
			}
		}
		return out, nil
	}
	// A group whose labels keep the name (by (__name__)) drops it at the
	// end if any member's name was to go.
	groupDrop := func(g *group) bool {
		return slices.ContainsFunc(g.members, func(s *vecSeries) bool { return s.dropName })
	}
	if simpleAggrs[name] {
		for _, g := range order {
			if o := ev.aggregateSimple(name, g.labels, g.members, e.PositionRange()); o != nil {
				o.dropName = groupDrop(g)
				out.series = append(out.series, o)
			}
		}
		return out, ev.checkCtx()
	}
	for _, g := range order {
		o := ev.newSeries(g.labels)
		o.dropName = groupDrop(g)
		any := false
		vals := make([]float64, 0, len(g.members))
		for i := 0; i < n; i++ {
			vals = vals[:0]
			for _, s := range g.members {
				if s.ok[i] {
					vals = append(vals, s.v[i])
				}
			}
			if len(vals) == 0 {
				continue
			}
			var r float64
			switch name { // the simple aggregations went to aggregateSimple
			case "stddev", "stdvar":
				pts := make([]Point, len(vals))
				for j, x := range vals {
					pts[j].V = x
				}
				r = variance(pts)
				if name == "stddev" {
					r = math.Sqrt(r)
				}
			case "quantile":
				r = quantile(param[i], append([]float64(nil), vals...))
			}
			o.v[i], o.ok[i], any = r, true, true
		}
		if any {
			out.series = append(out.series, o)
		}
	}
	return out, ev.checkCtx()
}

// histogramQuantile is histogram_quantile over classic buckets: series
// grouped by their labels without le (and __name__), buckets sorted by
// le, counts made monotonic, the quantile interpolated linearly inside
// its bucket as Prometheus does.
func (ev *evaluator) histogramQuantile(e *parser.Call) (value, error) {
	if len(e.Args) != 2 {
		return nil, argCount(e.Func.Name, 2, len(e.Args))
	}
	q, err := ev.scalarArg(e, 0, 2)
	if err != nil {
		return nil, err
	}
	ev.checkQuantile(q, e.Args[0].PositionRange())
	all, err := ev.vectorArgAll(e, 1)
	if err != nil {
		return nil, err
	}
	v, _ := floatsOnly(all)
	pos := e.Args[1].PositionRange()
	out := ev.classicBuckets(v, pos, func(i int, name string, les, counts []float64) float64 {
		r, fix := bucketQuantile(q[i], les, counts)
		ev.monotonicityInfo(fix, name, pos, i)
		return r
	})
	return ev.withNative(out, all, pos, func(i int, name string, h *FloatHistogram) (float64, annotations.Annotations) {
		return promql.HistogramQuantile(q[i], h, name, pos)
	}), nil
}

// histogramQuantiles is histogram_quantiles(v, "label", q0, q1, ...):
// histogram_quantile for each q, the answers told apart by the label (q
// written as OpenMetrics writes floats: 0.0, 0.25, 1.0).
func (ev *evaluator) histogramQuantiles(e *parser.Call) (value, error) {
	if len(e.Args) < 3 {
		return nil, argCount(e.Func.Name, 3, len(e.Args))
	}
	label, err := ev.stringArg(e, 1, len(e.Args))
	if err != nil {
		return nil, err
	}
	if !series.ValidLabelName(label) {
		return nil, fmt.Errorf("%w: invalid label name %q", ErrBadQuery, label)
	}
	var qs []scalarValue
	for i := 2; i < len(e.Args); i++ {
		q, err := ev.scalarArg(e, i, len(e.Args))
		if err != nil {
			return nil, err
		}
		ev.checkQuantile(q, e.Args[i].PositionRange())
		qs = append(qs, q)
	}
	all, err := ev.vectorArgAll(e, 0)
	if err != nil {
		return nil, err
	}
	v, _ := floatsOnly(all)
	out := vectorValue{}
	for _, q := range qs {
		pos := e.Args[0].PositionRange()
		r := ev.classicBuckets(v, pos, func(i int, name string, les, counts []float64) float64 {
			r, fix := bucketQuantile(q[i], les, counts)
			ev.monotonicityInfo(fix, name, pos, i)
			return r
		})
		r = ev.withNative(r, all, pos, func(i int, name string, h *FloatHistogram) (float64, annotations.Annotations) {
			return promql.HistogramQuantile(q[i], h, name, pos)
		})
		for _, s := range r.series {
			s.labels = setLabel(s.labels, label, openMetricsFloat(q[0]))
			out.series = append(out.series, s)
		}
	}
	return out, nil
}

// openMetricsFloat writes f as OpenMetrics does: Go's shortest form, with
// ".0" when that has neither a point nor an exponent.
func openMetricsFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}

// histogramFraction is histogram_fraction(lower, upper, buckets) over
// classic buckets: the share of the observations between lower and upper,
// interpolated linearly inside a bucket, as Prometheus 3.
func (ev *evaluator) histogramFraction(e *parser.Call) (value, error) {
	if len(e.Args) != 3 {
		return nil, argCount(e.Func.Name, 3, len(e.Args))
	}
	lower, err := ev.scalarArg(e, 0, 3)
	if err != nil {
		return nil, err
	}
	upper, err := ev.scalarArg(e, 1, 3)
	if err != nil {
		return nil, err
	}
	all, err := ev.vectorArgAll(e, 2)
	if err != nil {
		return nil, err
	}
	v, _ := floatsOnly(all)
	pos := e.Args[2].PositionRange()
	out := ev.classicBuckets(v, pos, func(i int, _ string, les, counts []float64) float64 {
		return bucketFraction(lower[i], upper[i], les, counts)
	})
	return ev.withNative(out, all, pos, func(i int, name string, h *FloatHistogram) (float64, annotations.Annotations) {
		return promql.HistogramFraction(lower[i], upper[i], h, name, pos)
	}), nil
}

// classicBuckets groups v's bucket series (with an le label) by their
// other labels, and gives f each group's bounds, in increasing order, and
// counts at each step.
// A bucket whose le is missing or not a number is left out, with
// Prometheus's warning at pos, the buckets' expression.
func (ev *evaluator) classicBuckets(v vectorValue, pos posrange.PositionRange, f func(i int, name string, les, counts []float64) float64) vectorValue {
	type bucket struct {
		le float64
		s  *vecSeries
	}
	groups := map[string][]bucket{}
	glabels := map[string]series.Labels{}
	names := map[string]string{}
	var order []string
	for _, s := range v.series {
		leStr := s.labels.Get("le")
		le, err := strconv.ParseFloat(leStr, 64)
		if err != nil || math.IsNaN(le) {
			name := ""
			if ev.delayName {
				name = s.labels.Get(series.MetricName)
			}
			ev.annotate(annotations.NewBadBucketLabelWarning(name, leStr, pos))
			continue
		}
		// Grouped with their metric name, which the answer drops: two
		// histograms of one label set are then two answers of one label
		// set, an error, as in Prometheus (histograms.test:1075).
		gl := setLabel(s.labels, "le", "")
		k := gl.String()
		if _, ok := groups[k]; !ok {
			order = append(order, k)
			glabels[k] = dropName(gl)
			if ev.delayName {
				names[k] = gl.Get(series.MetricName)
			}
		}
		groups[k] = append(groups[k], bucket{le, s})
	}
	out := vectorValue{}
	for _, k := range order {
		bs := groups[k]
		sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
		o := ev.newSeries(glabels[k])
		any := false
		for i := 0; i < ev.steps(); i++ {
			var les, counts []float64
			for _, b := range bs {
				if b.s.ok[i] {
					les = append(les, b.le)
					counts = append(counts, b.s.v[i])
				}
			}
			if len(les) == 0 {
				continue
			}
			o.v[i], o.ok[i], any = f(i, names[k], les, counts), true, true
		}
		if any {
			out.series = append(out.series, o)
		}
	}
	return out
}

// coalesce adds up the counts of one bound written two ways (le="0.2"
// and le="2e-1", from two exporters or a relabelling): one bucket. les
// is sorted.
func coalesce(les, counts []float64) ([]float64, []float64) {
	w := 0
	for r := 1; r < len(les); r++ {
		if les[r] == les[w] {
			counts[w] += counts[r]
			continue
		}
		w++
		les[w], counts[w] = les[r], counts[r]
	}
	return les[:w+1], counts[:w+1]
}

// bucketFraction is the share of the observations of cumulative buckets
// (les sorted, the last +Inf) between lower and upper. A bound inside a
// bucket is interpolated linearly; the first bucket starts at 0 when its
// bound is positive (else at -Inf), and the buckets open to an infinity
// give nothing to interpolate.
func bucketFraction(lower, upper float64, les, counts []float64) float64 {
	if !math.IsInf(les[len(les)-1], 1) {
		return math.NaN()
	}
	les, counts = coalesce(les, counts)
	total := counts[len(counts)-1]
	if total == 0 || math.IsNaN(lower) || math.IsNaN(upper) {
		return math.NaN()
	}
	if lower >= upper {
		return 0
	}
	// rankAt is the count of observations below x: x at or under bucket
	// b's lower bound lo gives the count below it (prev); inside the
	// bucket, the interpolation.
	rankAt := func(x float64) float64 {
		prev := 0.0
		lo := 0.0
		if les[0] <= 0 {
			lo = math.Inf(-1)
		}
		for b, hi := range les {
			if b > 0 {
				lo = les[b-1]
			}
			if lo >= x {
				return prev
			}
			if x < hi {
				if math.IsInf(lo, -1) {
					return counts[b]
				}
				return prev + (counts[b]-prev)*(x-lo)/(hi-lo)
			}
			prev = counts[b]
		}
		return total
	}
	lr, ur := min(rankAt(lower), total), min(rankAt(upper), total)
	return (ur - lr) / total
}

func bucketQuantile(q float64, les, counts []float64) (float64, monoFix) {
	var fix monoFix
	if math.IsNaN(q) {
		return math.NaN(), fix
	}
	if q < 0 {
		return math.Inf(-1), fix
	}
	if q > 1 {
		return math.Inf(1), fix
	}
	if !math.IsInf(les[len(les)-1], 1) {
		return math.NaN(), fix
	}
	les, counts = coalesce(les, counts)
	if len(les) < 2 {
		return math.NaN(), fix
	}
	fix = monotonic(les, counts)
	total := counts[len(counts)-1]
	if total == 0 || math.IsNaN(total) {
		return math.NaN(), fix
	}
	return interpolateBucket(q, les, counts), fix
}

// monoFix says where monotonic made counts that fell with le stay level.
type monoFix struct {
	forced               bool
	minLe, maxLe, maxFix float64
}

// monotonic makes counts non-decreasing with le (they may fall when the
// buckets were scraped at slightly different moments), as Prometheus
// does: a difference within float rounding is smoothed silently, a real
// fall is levelled and reported.
func monotonic(les, counts []float64) monoFix {
	fix := monoFix{minLe: math.Inf(1), maxLe: math.Inf(-1)}
	prev := counts[0]
	for i := 1; i < len(counts); i++ {
		cur := counts[i]
		switch {
		case cur == prev:
		case math.Abs(cur-prev) <= 1e-12*math.Max(math.Abs(cur), math.Abs(prev)):
			counts[i] = prev
		case cur < prev:
			counts[i] = prev
			fix.forced = true
			fix.minLe, fix.maxLe = math.Min(fix.minLe, les[i]), math.Max(fix.maxLe, les[i])
			fix.maxFix = math.Max(fix.maxFix, prev-cur)
		default:
			prev = cur
		}
	}
	return fix
}

// monotonicityInfo adds Prometheus's info that a histogram's counts were
// levelled at step i.
func (ev *evaluator) monotonicityInfo(fix monoFix, name string, pos posrange.PositionRange, i int) {
	if fix.forced {
		ev.annotate(annotations.NewHistogramQuantileForcedMonotonicityInfo(name, pos, ev.ts(i), fix.minLe, fix.maxLe, fix.maxFix))
	}
}

// interpolateBucket is the quantile q of monotonic bucket counts with a
// +Inf bucket and a positive total.
func interpolateBucket(q float64, les, counts []float64) float64 {
	total := counts[len(counts)-1]
	rank := q * total
	b := sort.SearchFloat64s(counts, rank)
	if b == len(les)-1 {
		return les[len(les)-2]
	}
	if b == 0 && les[0] <= 0 {
		return les[0]
	}
	start, end := 0.0, les[b]
	count := counts[b]
	if b > 0 {
		start = les[b-1]
		count -= counts[b-1]
		rank -= counts[b-1]
	}
	if count == 0 {
		return end
	}
	return start + (end-start)*(rank/count)
}
