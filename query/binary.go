package query

import (
	"fmt"
	"math"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/parser/posrange"

	"github.com/headroomdb/headroom/storage/series"
)

func isComparison(op string) bool {
	switch op {
	case "==", "!=", ">", "<", ">=", "<=":
		return true
	}
	return false
}

// elemOp applies op to two values; for comparisons it returns the left
// value and whether the comparison holds.
func elemOp(op string, l, r float64) (float64, bool, error) {
	switch op {
	case "+":
		return l + r, true, nil
	case "-":
		return l - r, true, nil
	case "*":
		return l * r, true, nil
	case "/":
		return l / r, true, nil
	case "%":
		return math.Mod(l, r), true, nil
	case "^":
		return math.Pow(l, r), true, nil
	case "atan2":
		return math.Atan2(l, r), true, nil
	case "==":
		return l, l == r, nil
	case "!=":
		return l, l != r, nil
	case ">":
		return l, l > r, nil
	case "<":
		return l, l < r, nil
	case ">=":
		return l, l >= r, nil
	case "<=":
		return l, l <= r, nil
	}
	return 0, false, fmt.Errorf("%w: operator %q is not supported", ErrBadQuery, op)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (ev *evaluator) binary(e *parser.BinaryExpr) (value, error) {
	op := strings.ToLower(e.Op.String())
	if e.ReturnBool && !isComparison(op) {
		return nil, fmt.Errorf("%w: bool modifier can only be used on comparison operators", ErrBadQuery)
	}
	lv, err := ev.eval(e.LHS)
	if err != nil {
		return nil, err
	}
	rv, err := ev.eval(e.RHS)
	if err != nil {
		return nil, err
	}
	setOp := op == "and" || op == "or" || op == "unless"
	ls, lScalar := lv.(scalarValue)
	rs, rScalar := rv.(scalarValue)
	lvec, lVec := lv.(vectorValue)
	rvec, rVec := rv.(vectorValue)
	switch {
	case !(lScalar || lVec) || !(rScalar || rVec):
		return nil, fmt.Errorf("%w: binary expression must contain only scalar and instant vector types, got %s %s %s", ErrBadQuery, typeName(lv), op, typeName(rv))
	case setOp && !(lVec && rVec):
		return nil, fmt.Errorf("%w: set operator %q not allowed in binary scalar expression", ErrBadQuery, op)
	case e.VectorMatching != nil && (e.VectorMatching.On || len(e.VectorMatching.MatchingLabels) > 0 || e.VectorMatching.Card == parser.CardManyToOne || e.VectorMatching.Card == parser.CardOneToMany) && !(lVec && rVec):
		return nil, fmt.Errorf("%w: vector matching only allowed between instant vectors", ErrBadQuery)
	case lScalar && rScalar:
		if isComparison(op) && !e.ReturnBool {
			return nil, fmt.Errorf("%w: comparisons between scalars must use BOOL modifier", ErrBadQuery)
		}
		out := make(scalarValue, len(ls))
		for i := range ls {
			v, keep, err := elemOp(op, ls[i], rs[i])
			if err != nil {
				return nil, err
			}
			if isComparison(op) {
				v = boolValue(keep)
			}
			out[i] = v
		}
		return out, nil
	case lVec && rScalar:
		return ev.vectorScalar(op, e.ReturnBool, lvec, rs, false, e.PositionRange())
	case lScalar && rVec:
		return ev.vectorScalar(op, e.ReturnBool, rvec, ls, true, e.PositionRange())
	case setOp:
		return ev.setOp(op, e, lvec, rvec)
	}
	return ev.vectorVector(op, e, lvec, rvec)
}

// vectorScalar applies op between each series and a scalar (swap: the
// scalar is on the left). Comparisons filter, keeping the series' value.
func (ev *evaluator) vectorScalar(op string, returnBool bool, v vectorValue, s scalarValue, swap bool, pos posrange.PositionRange) (value, error) {
	out := vectorValue{}
	trim := isTrim(op)
	drop := !(isComparison(op) || trim) || returnBool
	for _, x := range v.series {
		ls, dropped := x.labels, x.dropName
		if drop {
			var d bool
			ls, d = ev.nameless(ls)
			dropped = dropped || d
		}
		o := ev.newSeries(ls)
		o.dropName = dropped
		for i := range x.v {
			if !x.ok[i] {
				continue
			}
			if h := x.hist(i); h != nil || trim {
				lh, rh, l, r := h, (*FloatHistogram)(nil), x.v[i], s[i]
				if swap {
					lh, rh, l, r = nil, h, s[i], 0
				}
				if val, vh, keep := ev.histOp(op, l, lh, r, rh, pos); keep {
					o.ok[i] = true
					switch {
					case isComparison(op) && returnBool:
						o.v[i] = boolValue(true)
					case isComparison(op):
						o.setHist(i, h)
					default:
						o.v[i] = val
						o.setHist(i, vh)
					}
				} else if isComparison(op) && returnBool && ev.histComparable(op, lh, rh) {
					o.v[i], o.ok[i] = 0, true
				}
				continue
			}
			l, r := x.v[i], s[i]
			if swap {
				l, r = r, l
			}
			val, keep, err := elemOp(op, l, r)
			if err != nil {
				return nil, err
			}
			switch {
			case isComparison(op) && returnBool:
				o.v[i], o.ok[i] = boolValue(keep), true
			case isComparison(op):
				if keep {
					o.v[i], o.ok[i] = x.v[i], true
				}
			default:
				o.v[i], o.ok[i] = val, true
			}
		}
		out.series = append(out.series, o)
	}
	return out, nil
}

// signature returns the matching key of a label set.
func signature(ls series.Labels, m grouping) string {
	var b strings.Builder
	for _, l := range ls {
		var use bool
		switch m.op {
		case "on":
			use = m.has(l.Name)
		case "ignoring":
			use = !m.has(l.Name) && !isMetadataLabel(l.Name)
		default:
			use = !isMetadataLabel(l.Name)
		}
		if use {
			b.WriteString(l.Name)
			b.WriteByte(0xff)
			b.WriteString(l.Value)
			b.WriteByte(0xfe)
		}
	}
	return b.String()
}

func (ev *evaluator) setOp(op string, e *parser.BinaryExpr, l, r vectorValue) (value, error) {
	mod := matchGrouping(e)
	rsig := map[string][]*vecSeries{}
	for _, s := range r.series {
		k := signature(s.labels, mod)
		rsig[k] = append(rsig[k], s)
	}
	anyAt := func(list []*vecSeries, i int) bool {
		for _, s := range list {
			if s.ok[i] {
				return true
			}
		}
		return false
	}
	out := vectorValue{}
	lsig := map[string][]*vecSeries{}
	for _, s := range l.series {
		k := signature(s.labels, mod)
		lsig[k] = append(lsig[k], s)
		o := ev.newSeries(s.labels)
		o.dropName = s.dropName
		for i := range s.v {
			if !s.ok[i] {
				continue
			}
			match := anyAt(rsig[k], i)
			if (op == "and" && match) || op == "or" || (op == "unless" && !match) {
				o.v[i], o.ok[i] = s.v[i], true
				o.setHist(i, s.hist(i))
			}
		}
		out.series = append(out.series, o)
	}
	if op == "or" {
		for _, s := range r.series {
			k := signature(s.labels, mod)
			o := ev.newSeries(s.labels)
			o.dropName = s.dropName
			for i := range s.v {
				if s.ok[i] && !anyAt(lsig[k], i) {
					o.v[i], o.ok[i] = s.v[i], true
					o.setHist(i, s.hist(i))
				}
			}
			out.series = append(out.series, o)
		}
	}
	return out, nil
}

// vectorVector applies an arithmetic or comparison operator between two
// vectors, matching series one-to-one, or many-to-one with group_left /
// one-to-many with group_right. Prometheus 3's fill modifiers give a
// series without a match on the other side a stand-in of that value.
func (ev *evaluator) vectorVector(op string, e *parser.BinaryExpr, l, r vectorValue) (value, error) {
	many, one := l, r
	swapped := false
	mod := matchGrouping(e)
	join, include := join(e)
	var fillMany, fillOne *float64 // stand-ins for a missing many / one side
	if e.VectorMatching != nil {
		fillMany, fillOne = e.VectorMatching.FillValues.LHS, e.VectorMatching.FillValues.RHS
	}
	if join == "group_right" {
		many, one, swapped = r, l, true
		fillMany, fillOne = fillOne, fillMany
	}
	// Arithmetic drops the name at once; a bool comparison, with delayed
	// name removal, at the end (as Prometheus).
	trim := isTrim(op)
	drop := !(isComparison(op) || trim) || (e.ReturnBool && !ev.delayName)
	delayed := e.ReturnBool && ev.delayName
	oneBySig := map[string][]*vecSeries{}
	for _, s := range one.series {
		k := signature(s.labels, mod)
		oneBySig[k] = append(oneBySig[k], s)
	}
	side := "right"
	if swapped {
		side = "left"
	}
	out := vectorValue{}
	results := map[string]*vecSeries{}
	// matched[signature][step]: one-to-one matching allows one left
	// series a match group and step, whatever a comparison then filters
	// away (operators.test:329); a fill of the many side goes where no
	// series of it matched.
	var matched map[string][]bool
	if join == "" || fillMany != nil {
		matched = map[string][]bool{}
	}
	apply := func(m, match *vecSeries, k string, i int, mv, ov float64, mh, oh *FloatHistogram) error {
		if matched != nil {
			steps := matched[k]
			if steps == nil {
				steps = make([]bool, len(m.v))
				matched[k] = steps
			}
			if steps[i] && join == "" {
				return fmt.Errorf("%w: multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)", ErrExec)
			}
			steps[i] = true
		}
		lval, rval := mv, ov
		lh, rh := mh, oh
		if swapped {
			lval, rval = rval, lval
			lh, rh = rh, lh
		}
		var val float64
		var vh *FloatHistogram
		var keep bool
		if lh != nil || rh != nil || trim {
			val, vh, keep = ev.histOp(op, lval, lh, rval, rh, e.PositionRange())
			switch {
			case isComparison(op) && e.ReturnBool && (keep || ev.histComparable(op, lh, rh)):
				val, vh = boolValue(keep), nil
			case !keep:
				return nil
			}
		} else {
			var err error
			if val, keep, err = elemOp(op, lval, rval); err != nil {
				return err
			}
			if isComparison(op) {
				if e.ReturnBool {
					val = boolValue(keep)
				} else if !keep {
					return nil
				}
			}
		}
		ls := resultLabels(m.labels, match.labels, mod, include, join, drop)
		rk := ls.String()
		o, ok := results[rk]
		if !ok {
			o = ev.newSeries(ls)
			o.dropName = delayed
			results[rk] = o
			out.series = append(out.series, o)
		} else if o.ok[i] {
			if join == "" {
				return fmt.Errorf("%w: multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)", ErrExec)
			}
			return fmt.Errorf("%w: multiple matches for labels: grouping labels must ensure unique matches", ErrExec)
		}
		o.v[i], o.ok[i] = val, true
		o.setHist(i, vh)
		return nil
	}
	for _, m := range many.series {
		k := signature(m.labels, mod)
		cands := oneBySig[k]
		if len(cands) == 0 && fillOne == nil {
			continue
		}
		var stand *vecSeries // the one side's stand-in
		for i := range m.v {
			if !m.ok[i] {
				continue
			}
			var match *vecSeries
			for _, c := range cands {
				if c.ok[i] {
					if match != nil {
						a, b := match.labels, c.labels
						if series.Compare(a, b) > 0 {
							a, b = b, a
						}
						return nil, fmt.Errorf("%w: found duplicate series for the match group %s on the %s hand-side of the operation: [%s, %s];many-to-many matching not allowed: matching labels must be unique on one side", ErrExec, matchGroup(m.labels, mod), side, a, b)
					}
					match = c
				}
			}
			ov := 0.0
			var oh *FloatHistogram
			switch {
			case match != nil:
				ov, oh = match.v[i], match.hist(i)
			case fillOne != nil:
				if stand == nil {
					stand = &vecSeries{labels: matchLabels(m.labels, mod)}
				}
				match, ov = stand, *fillOne
			default:
				continue
			}
			if err := apply(m, match, k, i, m.v[i], ov, m.hist(i), oh); err != nil {
				return nil, err
			}
		}
	}
	if fillMany != nil {
		// The one side's series that no many-side series matched, with
		// a stand-in for it.
		for _, o := range one.series {
			k := signature(o.labels, mod)
			steps := matched[k]
			stand := &vecSeries{labels: matchLabels(o.labels, mod), v: make([]float64, len(o.v))}
			for i := range o.v {
				if !o.ok[i] || (steps != nil && steps[i]) {
					continue
				}
				if err := apply(stand, o, k, i, *fillMany, o.v[i], nil, o.hist(i)); err != nil {
					return nil, err
				}
			}
		}
	}
	return out, nil
}

// matchLabels are the labels a series is matched on: with on(), those;
// else all but the ignored ones and the metric's own.
func matchLabels(ls series.Labels, m grouping) series.Labels {
	out := series.Labels{}
	for _, l := range ls {
		if signature(series.Labels{l}, m) != "" {
			out = append(out, l)
		}
	}
	return out
}

func matchGroup(ls series.Labels, m grouping) string {
	out := series.Labels{}
	for _, l := range ls {
		if signature(series.Labels{l}, m) != "" {
			out = append(out, l)
		}
	}
	return out.String()
}

// resultLabels are Prometheus's: for one-to-one matching, the left side's
// labels reduced to the on() labels or without the ignoring() ones; for
// group_left/group_right, the many side's labels plus the listed labels
// copied from the one side. __name__ goes when drop.
func resultLabels(many, one series.Labels, mod grouping, include []string, join string, drop bool) series.Labels {
	ls := many
	if drop {
		ls = dropName(ls)
	}
	if join == "" {
		switch mod.op {
		case "on":
			out := series.Labels{}
			for _, l := range ls {
				if mod.has(l.Name) {
					out = append(out, l)
				}
			}
			return out
		case "ignoring":
			out := series.Labels{}
			for _, l := range ls {
				if !mod.has(l.Name) {
					out = append(out, l)
				}
			}
			return out
		}
		return ls
	}
	for _, name := range include {
		ls = setLabel(ls, name, one.Get(name))
	}
	return ls
}
