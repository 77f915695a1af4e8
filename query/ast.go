package query

import (
	"fmt"
	"math"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/headroomdb/headroom/storage/series"
)

// unwrap returns e without the parentheses around it: they only group.
func unwrap(e parser.Expr) parser.Expr {
	for {
		switch x := e.(type) {
		case *parser.ParenExpr:
			e = x.Expr
		case *parser.StepInvariantExpr:
			e = x.Expr
		default:
			return e
		}
	}
}

// grouping is the label list of an aggregation (by, without) or of a
// binary operation's matching (on, ignoring; "" matches on every label
// but the metric's own).
type grouping struct {
	op     string
	labels []string
}

func (g grouping) has(name string) bool {
	for _, l := range g.labels {
		if l == name {
			return true
		}
	}
	return false
}

func aggGrouping(e *parser.AggregateExpr) grouping {
	if e.Without {
		return grouping{op: "without", labels: e.Grouping}
	}
	return grouping{op: "by", labels: e.Grouping}
}

func matchGrouping(e *parser.BinaryExpr) grouping {
	m := e.VectorMatching
	switch {
	case m == nil:
		return grouping{}
	case m.On:
		return grouping{op: "on", labels: m.MatchingLabels}
	case len(m.MatchingLabels) > 0:
		return grouping{op: "ignoring", labels: m.MatchingLabels}
	}
	return grouping{}
}

// join is a binary operation's group_left or group_right ("" for
// one-to-one matching) and the labels it copies from the one side.
func join(e *parser.BinaryExpr) (string, []string) {
	m := e.VectorMatching
	if m == nil {
		return "", nil
	}
	switch m.Card {
	case parser.CardManyToOne:
		return "group_left", m.Include
	case parser.CardOneToMany:
		return "group_right", m.Include
	}
	return "", nil
}

// rangeArg is a range vector: a range selector (x[5m]) or a subquery
// (expr[1h:5m]), with its modifiers resolved.
type rangeArg struct {
	sel    *parser.VectorSelector // a range selector's series
	sub    parser.Expr            // a subquery's inner expression
	window int64                  // ms
	step   int64                  // a subquery's, ms
	off    int64
	at     *int64
	// Prometheus 3's extended range selectors.
	anchored, smoothed bool
	node               parser.Expr // for errors: printed only then
}

func (r *rangeArg) subquery() bool { return r.sub != nil }

// rollupOf resolves a range vector expression; ok is false when e is not
// one.
func (ev *evaluator) rollupOf(e parser.Expr) (*rangeArg, bool, error) {
	switch x := unwrap(e).(type) {
	case *parser.MatrixSelector:
		vs, ok := x.VectorSelector.(*parser.VectorSelector)
		if !ok {
			return nil, false, fmt.Errorf("%w: ranges only allowed for vector selectors", ErrBadQuery)
		}
		w, err := ev.duration(x.Range, x.RangeExpr, false)
		if err != nil {
			return nil, false, err
		}
		off, at, err := ev.selectorModifiers(vs)
		if err != nil {
			return nil, false, err
		}
		return &rangeArg{sel: vs, window: w, off: off, at: at, anchored: vs.Anchored, smoothed: vs.Smoothed, node: x}, true, nil
	case *parser.SubqueryExpr:
		w, err := ev.duration(x.Range, x.RangeExpr, false)
		if err != nil {
			return nil, false, err
		}
		step := x.Step
		if x.StepExpr == nil && step == 0 {
			// [1h:] steps at Prometheus's default evaluation interval,
			// which its own engine uses there.
			step = time.Minute
		}
		st, err := ev.duration(step, x.StepExpr, false)
		if err != nil {
			return nil, false, err
		}
		off, err := ev.duration(x.OriginalOffset, x.OriginalOffsetExpr, true)
		if err != nil {
			return nil, false, err
		}
		at := ev.atTime(x.Timestamp, x.StartOrEnd)
		return &rangeArg{sub: x.Expr, window: w, step: st, off: off, at: at, node: x}, true, nil
	}
	return nil, false, nil
}

// selectorModifiers returns a selector's offset and @ time (nil: none).
func (ev *evaluator) selectorModifiers(vs *parser.VectorSelector) (int64, *int64, error) {
	off, err := ev.duration(vs.OriginalOffset, vs.OriginalOffsetExpr, true)
	if err != nil {
		return 0, nil, err
	}
	return off, ev.atTime(vs.Timestamp, vs.StartOrEnd), nil
}

func (ev *evaluator) atTime(ts *int64, startOrEnd parser.ItemType) *int64 {
	switch startOrEnd {
	case parser.START:
		t := ev.queryStart
		return &t
	case parser.END:
		t := ev.queryEnd
		return &t
	}
	return ts
}

// duration returns a range, step or offset in milliseconds: d as written,
// or the value of its duration arithmetic (Prometheus 3: [5m+1m],
// [step()*2], offset -(1h)).
func (ev *evaluator) duration(d time.Duration, e *parser.DurationExpr, negativeOK bool) (int64, error) {
	if e == nil {
		return d.Milliseconds(), nil
	}
	secs, err := ev.durationSeconds(e)
	if err != nil {
		return 0, err
	}
	pr := e.PositionRange()
	if math.IsNaN(secs) || math.IsInf(secs, 0) {
		return 0, fmt.Errorf("%w: %d:%d: duration is NaN or infinite", ErrBadQuery, pr.Start, pr.End)
	}
	if secs <= 0 && !negativeOK {
		return 0, fmt.Errorf("%w: %d:%d: duration must be greater than 0", ErrBadQuery, pr.Start, pr.End)
	}
	if secs > 1<<63/1e9 || secs < -(1<<63)/1e9 {
		return 0, fmt.Errorf("%w: %d:%d: duration is out of range", ErrBadQuery, pr.Start, pr.End)
	}
	return int64(secs * 1000), nil
}

// durationSeconds evaluates duration arithmetic, in seconds: step() is
// the query's step (0 for an instant query), range() its end minus its
// start.
func (ev *evaluator) durationSeconds(e parser.Expr) (float64, error) {
	switch n := e.(type) {
	case *parser.NumberLiteral:
		return n.Val, nil
	case *parser.ParenExpr:
		return ev.durationSeconds(n.Expr)
	case *parser.DurationExpr:
		var l, r float64
		var err error
		if n.LHS != nil {
			if l, err = ev.durationSeconds(n.LHS); err != nil {
				return 0, err
			}
		}
		if n.RHS != nil {
			if r, err = ev.durationSeconds(n.RHS); err != nil {
				return 0, err
			}
		}
		pr := e.PositionRange()
		switch n.Op {
		case parser.STEP:
			return float64(ev.queryStep) / 1000, nil
		case parser.RANGE:
			return float64(ev.queryEnd-ev.queryStart) / 1000, nil
		case parser.MIN_OF:
			return math.Min(l, r), nil
		case parser.MAX_OF:
			return math.Max(l, r), nil
		case parser.ADD:
			return l + r, nil // a unary + has no left side: 0
		case parser.SUB:
			return l - r, nil
		case parser.MUL:
			return l * r, nil
		case parser.DIV:
			if r == 0 {
				return 0, fmt.Errorf("%w: %d:%d: division by zero", ErrBadQuery, pr.Start, pr.End)
			}
			return l / r, nil
		case parser.MOD:
			if r == 0 {
				return 0, fmt.Errorf("%w: %d:%d: modulo by zero", ErrBadQuery, pr.Start, pr.End)
			}
			return math.Mod(l, r), nil
		case parser.POW:
			return math.Pow(l, r), nil
		}
		return 0, fmt.Errorf("%w: unexpected duration operator %q", ErrBadQuery, n.Op)
	}
	return 0, fmt.Errorf("%w: unexpected duration expression %q", ErrBadQuery, e)
}

// matchersOf converts a selector's matchers to the storage's.
func matchersOf(vs *parser.VectorSelector) ([]*series.Matcher, error) {
	ms := make([]*series.Matcher, 0, len(vs.LabelMatchers))
	// The parser puts the metric name last; as written, it comes first
	// (the storage narrows by it, and errors name it first).
	ordered := make([]*labels.Matcher, 0, len(vs.LabelMatchers))
	for _, m := range vs.LabelMatchers {
		if m.Name == series.MetricName {
			ordered = append(ordered, m)
		}
	}
	for _, m := range vs.LabelMatchers {
		if m.Name != series.MetricName {
			ordered = append(ordered, m)
		}
	}
	for _, m := range ordered {
		var t series.MatchType
		switch m.Type.String() {
		case "=":
			t = series.MatchEqual
		case "!=":
			t = series.MatchNotEqual
		case "=~":
			t = series.MatchRegexp
		case "!~":
			t = series.MatchNotRegexp
		default:
			return nil, fmt.Errorf("%w: unknown matcher type %q", ErrBadQuery, m.Type)
		}
		sm, err := series.NewMatcher(t, m.Name, m.Value)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadQuery, err)
		}
		ms = append(ms, sm)
	}
	for _, m := range ms {
		if !m.Matches("") {
			return ms, nil
		}
	}
	return nil, fmt.Errorf("%w: vector selector must contain at least one non-empty matcher", ErrBadQuery)
}

// SelectorMatchers returns the matchers of every selector of e, in the
// storage's terms (/api/v1/query_exemplars selects by them).
func SelectorMatchers(e parser.Expr) ([][]*series.Matcher, error) {
	var sets [][]*series.Matcher
	var err error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && err == nil {
			var ms []*series.Matcher
			if ms, err = matchersOf(vs); err == nil {
				sets = append(sets, ms)
			}
		}
		return nil
	})
	return sets, err
}

// metricName is the metric name a selector asks for by equality, or "".
func metricName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == series.MetricName && m.Type.String() == "=" {
			return m.Value
		}
	}
	return ""
}
