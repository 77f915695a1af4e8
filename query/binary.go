package query

import (
	"fmt"
	"math"
	"strings"

	"github.com/VictoriaMetrics/metricsql"

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

func (ev *evaluator) binary(e *metricsql.BinaryOpExpr) (value, error) {
	op := strings.ToLower(e.Op)
	switch op {
	case "default", "if", "ifnot":
		return nil, fmt.Errorf("%w: operator %q is MetricsQL, not PromQL", ErrBadQuery, op)
	}
	if e.Bool && !isComparison(op) {
		return nil, fmt.Errorf("%w: bool modifier can only be used on comparison operators", ErrBadQuery)
	}
	lv, err := ev.eval(e.Left)
	if err != nil {
		return nil, err
	}
	rv, err := ev.eval(e.Right)
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
	case (e.GroupModifier.Op != "" || e.JoinModifier.Op != "") && !(lVec && rVec):
		return nil, fmt.Errorf("%w: vector matching only allowed between instant vectors", ErrBadQuery)
	case lScalar && rScalar:
		if isComparison(op) && !e.Bool {
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
		return ev.vectorScalar(op, e.Bool, lvec, rs, false)
	case lScalar && rVec:
		return ev.vectorScalar(op, e.Bool, rvec, ls, true)
	case setOp:
		return ev.setOp(op, e, lvec, rvec)
	}
	return ev.vectorVector(op, e, lvec, rvec)
}

// vectorScalar applies op between each series and a scalar (swap: the
// scalar is on the left). Comparisons filter, keeping the series' value.
func (ev *evaluator) vectorScalar(op string, returnBool bool, v vectorValue, s scalarValue, swap bool) (value, error) {
	out := vectorValue{}
	drop := !isComparison(op) || returnBool
	for _, x := range v.series {
		ls := x.labels
		if drop {
			ls = dropName(ls)
		}
		o := ev.newSeries(ls)
		for i := range x.v {
			if !x.ok[i] {
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
func signature(ls series.Labels, m metricsql.ModifierExpr) string {
	in := func(n string) bool {
		for _, a := range m.Args {
			if a == n {
				return true
			}
		}
		return false
	}
	var b strings.Builder
	for _, l := range ls {
		var use bool
		switch m.Op {
		case "on":
			use = in(l.Name)
		case "ignoring":
			use = !in(l.Name) && !isMetadataLabel(l.Name)
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

func (ev *evaluator) setOp(op string, e *metricsql.BinaryOpExpr, l, r vectorValue) (value, error) {
	if e.JoinModifier.Op != "" {
		return nil, fmt.Errorf("%w: no grouping allowed for %q operation", ErrBadQuery, op)
	}
	rsig := map[string][]*vecSeries{}
	for _, s := range r.series {
		k := signature(s.labels, e.GroupModifier)
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
		k := signature(s.labels, e.GroupModifier)
		lsig[k] = append(lsig[k], s)
		o := ev.newSeries(s.labels)
		for i := range s.v {
			if !s.ok[i] {
				continue
			}
			match := anyAt(rsig[k], i)
			if (op == "and" && match) || op == "or" || (op == "unless" && !match) {
				o.v[i], o.ok[i] = s.v[i], true
			}
		}
		out.series = append(out.series, o)
	}
	if op == "or" {
		for _, s := range r.series {
			k := signature(s.labels, e.GroupModifier)
			o := ev.newSeries(s.labels)
			for i := range s.v {
				if s.ok[i] && !anyAt(lsig[k], i) {
					o.v[i], o.ok[i] = s.v[i], true
				}
			}
			out.series = append(out.series, o)
		}
	}
	return out, nil
}

// vectorVector applies an arithmetic or comparison operator between two
// vectors, matching series one-to-one, or many-to-one with group_left /
// one-to-many with group_right.
func (ev *evaluator) vectorVector(op string, e *metricsql.BinaryOpExpr, l, r vectorValue) (value, error) {
	many, one := l, r
	swapped := false
	join := strings.ToLower(e.JoinModifier.Op)
	switch join {
	case "group_left", "":
	case "group_right":
		many, one, swapped = r, l, true
	default:
		return nil, fmt.Errorf("%w: unknown join modifier %q", ErrBadQuery, join)
	}
	drop := !isComparison(op) || e.Bool
	oneBySig := map[string][]*vecSeries{}
	for _, s := range one.series {
		k := signature(s.labels, e.GroupModifier)
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
	// away (operators.test:329).
	var matched map[string][]bool
	if join == "" {
		matched = map[string][]bool{}
	}
	for _, m := range many.series {
		k := signature(m.labels, e.GroupModifier)
		cands := oneBySig[k]
		if len(cands) == 0 {
			continue
		}
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
						return nil, fmt.Errorf("%w: found duplicate series for the match group %s on the %s hand-side of the operation: [%s, %s]; many-to-many matching not allowed: matching labels must be unique on one side", ErrExec, matchGroup(m.labels, e.GroupModifier), side, a, b)
					}
					match = c
				}
			}
			if match == nil {
				continue
			}
			if matched != nil {
				steps := matched[k]
				if steps == nil {
					steps = make([]bool, len(m.v))
					matched[k] = steps
				}
				if steps[i] {
					return nil, fmt.Errorf("%w: multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)", ErrExec)
				}
				steps[i] = true
			}
			lval, rval := m.v[i], match.v[i]
			if swapped {
				lval, rval = rval, lval
			}
			val, keep, err := elemOp(op, lval, rval)
			if err != nil {
				return nil, err
			}
			if isComparison(op) {
				if e.Bool {
					val = boolValue(keep)
				} else if !keep {
					continue
				}
			}
			ls := resultLabels(m.labels, match.labels, e, join, drop)
			rk := ls.String()
			o, ok := results[rk]
			if !ok {
				o = ev.newSeries(ls)
				results[rk] = o
				out.series = append(out.series, o)
			} else if o.ok[i] {
				if join == "" {
					return nil, fmt.Errorf("%w: multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)", ErrExec)
				}
				return nil, fmt.Errorf("%w: multiple matches for labels: grouping labels must ensure unique matches", ErrExec)
			}
			o.v[i], o.ok[i] = val, true
		}
	}
	return out, nil
}

func matchGroup(ls series.Labels, m metricsql.ModifierExpr) string {
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
func resultLabels(many, one series.Labels, e *metricsql.BinaryOpExpr, join string, drop bool) series.Labels {
	ls := many
	if drop {
		ls = dropName(ls)
	}
	if join == "" {
		in := func(n string) bool {
			for _, a := range e.GroupModifier.Args {
				if a == n {
					return true
				}
			}
			return false
		}
		switch e.GroupModifier.Op {
		case "on":
			out := series.Labels{}
			for _, l := range ls {
				if in(l.Name) {
					out = append(out, l)
				}
			}
			return out
		case "ignoring":
			out := series.Labels{}
			for _, l := range ls {
				if !in(l.Name) {
					out = append(out, l)
				}
			}
			return out
		}
		return ls
	}
	for _, name := range e.JoinModifier.Args {
		ls = setLabel(ls, name, one.Get(name))
	}
	return ls
}
