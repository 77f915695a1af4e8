package api

import (
	"fmt"
	"strconv"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// syntaxTree renders a parsed query as /api/v1/parse_query answers it in
// Prometheus (the JSON its web UI draws a query's tree from): one object
// per node, named by "type".
func syntaxTree(e parser.Expr) any {
	obj := func(typ string, kv ...any) map[string]any {
		m := map[string]any{"type": typ}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	switch n := e.(type) {
	case nil:
		return nil
	case *parser.NumberLiteral:
		return obj("numberLiteral", "val", strconv.FormatFloat(n.Val, 'f', -1, 64))
	case *parser.StringLiteral:
		return obj("stringLiteral", "val", n.Val)
	case *parser.ParenExpr:
		return obj("parenExpr", "expr", syntaxTree(n.Expr))
	case *parser.StepInvariantExpr:
		return syntaxTree(n.Expr)
	case *parser.UnaryExpr:
		return obj("unaryExpr", "op", n.Op.String(), "expr", syntaxTree(n.Expr))
	case *parser.DurationExpr:
		return durationTree(n)
	case *parser.AggregateExpr:
		return obj("aggregation", "op", n.Op.String(), "expr", syntaxTree(n.Expr), "param", syntaxTree(n.Param),
			"grouping", nonNil(n.Grouping), "without", n.Without)
	case *parser.BinaryExpr:
		var matching any
		if m := n.VectorMatching; m != nil {
			matching = map[string]any{"card": m.Card.String(), "labels": nonNil(m.MatchingLabels), "on": m.On,
				"include": nonNil(m.Include), "fillValues": map[string]*float64{"lhs": m.FillValues.LHS, "rhs": m.FillValues.RHS}}
		}
		return obj("binaryExpr", "op", n.Op.String(), "lhs", syntaxTree(n.LHS), "rhs", syntaxTree(n.RHS),
			"matching", matching, "bool", n.ReturnBool)
	case *parser.Call:
		args := make([]any, 0, len(n.Args))
		for _, a := range n.Args {
			args = append(args, syntaxTree(a))
		}
		return obj("call", "func", map[string]any{"name": n.Func.Name, "argTypes": n.Func.ArgTypes,
			"variadic": n.Func.Variadic, "returnType": n.Func.ReturnType}, "args", args)
	case *parser.VectorSelector:
		return obj("vectorSelector", "name", n.Name, "offset", n.OriginalOffset.Milliseconds(),
			"offsetExpr", durationTree(n.OriginalOffsetExpr), "matchers", matchersTree(n.LabelMatchers),
			"timestamp", n.Timestamp, "startOrEnd", startOrEnd(n.StartOrEnd), "anchored", n.Anchored, "smoothed", n.Smoothed)
	case *parser.MatrixSelector:
		vs, _ := n.VectorSelector.(*parser.VectorSelector)
		if vs == nil {
			return nil
		}
		return obj("matrixSelector", "name", vs.Name, "range", n.Range.Milliseconds(), "rangeExpr", durationTree(n.RangeExpr),
			"offset", vs.OriginalOffset.Milliseconds(), "offsetExpr", durationTree(vs.OriginalOffsetExpr),
			"matchers", matchersTree(vs.LabelMatchers), "timestamp", vs.Timestamp, "startOrEnd", startOrEnd(vs.StartOrEnd),
			"anchored", vs.Anchored, "smoothed", vs.Smoothed)
	case *parser.SubqueryExpr:
		return obj("subquery", "expr", syntaxTree(n.Expr), "range", n.Range.Milliseconds(), "rangeExpr", durationTree(n.RangeExpr),
			"offset", n.OriginalOffset.Milliseconds(), "offsetExpr", durationTree(n.OriginalOffsetExpr),
			"step", n.Step.Milliseconds(), "stepExpr", durationTree(n.StepExpr), "timestamp", n.Timestamp,
			"startOrEnd", startOrEnd(n.StartOrEnd))
	}
	return map[string]any{"type": fmt.Sprintf("%T", e)}
}

// durationTree renders duration arithmetic ([5m+1m], offset step()).
func durationTree(e parser.Expr) any {
	switch n := e.(type) {
	case *parser.DurationExpr:
		if n == nil {
			return nil
		}
		return map[string]any{"type": "durationExpr", "op": n.Op.String(), "lhs": durationTree(n.LHS),
			"rhs": durationTree(n.RHS), "wrapped": n.Wrapped}
	case *parser.NumberLiteral:
		if n == nil {
			return nil
		}
		return map[string]any{"type": "numberLiteral", "val": strconv.FormatFloat(n.Val, 'f', -1, 64), "duration": n.Duration}
	case nil:
		return nil
	}
	return syntaxTree(e)
}

func matchersTree(ms []*labels.Matcher) []map[string]string {
	out := make([]map[string]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, map[string]string{"type": m.Type.String(), "name": m.Name, "value": m.Value})
	}
	return out
}

func startOrEnd(t parser.ItemType) any {
	switch t {
	case parser.START:
		return "start"
	case parser.END:
		return "end"
	}
	return nil
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}
