package query

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/headroomdb/headroom/storage/series"
)

// info(v, {selector}) is Prometheus 3's join of series with the info
// series of their target (target_info by default, or those the selector's
// __name__ matchers pick) on the identifying labels instance and job: each
// series gains the info series' labels it lacks (only those the selector
// names, when it names any). Where two info series of one name and
// target exist, the one with the newer sample wins.

const targetInfo = "target_info"

var identifyingLabels = []string{"instance", "job"}

func (ev *evaluator) info(e *parser.Call) (value, error) {
	at, off := ev.infoReference(e.Args[0])
	base, err := ev.vectorArgAll(e, 0) // a histogram series takes its info labels too
	if err != nil {
		return nil, err
	}
	data := map[string][]*labels.Matcher{} // data label matchers by label
	var nameMatchers, dataMatchers []*labels.Matcher
	if len(e.Args) > 1 {
		sel, ok := unwrap(e.Args[1]).(*parser.VectorSelector)
		if !ok {
			return nil, fmt.Errorf("%w: info(): the second argument must be a label selector", ErrBadQuery)
		}
		for _, m := range sel.LabelMatchers {
			if m.Name == series.MetricName {
				nameMatchers = append(nameMatchers, m)
				continue
			}
			data[m.Name] = append(data[m.Name], m)
			dataMatchers = append(dataMatchers, m)
		}
	} else {
		nameMatchers = []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, series.MetricName, targetInfo)}
	}
	names := effectiveInfoNames(nameMatchers)
	// Info series themselves are not enriched.
	ignored := map[*vecSeries]bool{}
	for _, s := range base.series {
		name := s.labels.Get(series.MetricName)
		if !slices.ContainsFunc(names, func(m *labels.Matcher) bool { return !m.Matches(name) }) {
			ignored[s] = true
		}
	}
	var infos []*vecSeries
	for _, ms := range identifyingMatcherSets(base.series, ignored) {
		sel := &parser.VectorSelector{LabelMatchers: append(append(ms, dataMatchers...), names...)}
		v, err := ev.instantSelector(sel, off, at)
		if err != nil {
			return nil, err
		}
		for _, s := range v.(vectorValue).series {
			if s.h != nil && slices.ContainsFunc(s.h, func(h *FloatHistogram) bool { return h != nil }) {
				return nil, fmt.Errorf("%w: info sample should be float (info series %s)", ErrExec, s.labels)
			}
		}
		infos = append(infos, v.(vectorValue).series...)
	}
	infoNames := map[string]bool{}
	for _, s := range infos {
		infoNames[s.labels.Get(series.MetricName)] = true
	}
	sig := func(name string, ls series.Labels) string {
		var b strings.Builder
		b.WriteString(name)
		for _, l := range identifyingLabels {
			b.WriteByte(0xff)
			b.WriteString(ls.Get(l))
		}
		return b.String()
	}
	out := vectorValue{}
	results := map[string]*vecSeries{}
	byInfoSig := map[string]*vecSeries{}
	for i := 0; i < ev.steps(); i++ {
		clear(byInfoSig)
		for _, s := range infos {
			if !s.ok[i] {
				continue
			}
			k := sig(s.labels.Get(series.MetricName), s.labels)
			if have, ok := byInfoSig[k]; ok {
				switch {
				case have.t[i] > s.t[i]:
					continue
				case have.t[i] == s.t[i]:
					return nil, fmt.Errorf("%w: found duplicate series for info metric: existing %s @ %d, new %s @ %d", ErrExec, have.labels, have.t[i], s.labels, s.t[i])
				}
			}
			byInfoSig[k] = s
		}
		for _, b := range base.series {
			if !b.ok[i] {
				continue
			}
			ls := b.labels
			if !ignored[b] {
				add := map[string]string{}
				matched := false
				for name := range infoNames {
					is, ok := byInfoSig[sig(name, b.labels)]
					if !ok {
						continue
					}
					matched = true
					for _, l := range is.labels {
						if isMetadataLabel(l.Name) {
							continue
						}
						if _, named := data[l.Name]; len(data) > 0 && !named {
							continue
						}
						if v, ok := add[l.Name]; ok && v != l.Value {
							return nil, fmt.Errorf("%w: conflicting label: %s", ErrExec, l.Name)
						}
						if b.labels.Get(l.Name) == "" {
							add[l.Name] = l.Value
						}
					}
				}
				if !matched && slices.ContainsFunc(dataMatchers, func(m *labels.Matcher) bool { return !m.Matches("") }) {
					continue
				}
				for n, v := range add {
					ls = setLabel(ls, n, v)
				}
			}
			k := ls.String()
			o, ok := results[k]
			if !ok {
				o = ev.newSeries(ls)
				o.dropName = b.dropName
				results[k] = o
				out.series = append(out.series, o)
			} else if o.ok[i] {
				return nil, fmt.Errorf("%w: vector cannot contain metrics with the same labelset", ErrExec)
			}
			o.v[i], o.ok[i] = b.v[i], true
			o.setHist(i, b.hist(i))
		}
	}
	return out, ev.checkCtx()
}

// effectiveInfoNames are the __name__ matchers info series are selected
// by: target_info without any; a negative one only narrows the _info
// series.
func effectiveInfoNames(ms []*labels.Matcher) []*labels.Matcher {
	for _, m := range ms {
		if m.Type == labels.MatchEqual || m.Type == labels.MatchRegexp {
			return ms
		}
	}
	if len(ms) > 0 {
		return append([]*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, series.MetricName, ".+_info")}, ms...)
	}
	return []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, series.MetricName, targetInfo)}
}

// identifyingMatcherSets select the info series the base series may join:
// one set per combination of identifying labels present, each matching
// the values seen (absent labels must be absent).
func identifyingMatcherSets(base []*vecSeries, ignored map[*vecSeries]bool) [][]*labels.Matcher {
	groups := map[int][]map[string]bool{}
	for _, s := range base {
		if ignored[s] {
			continue
		}
		presence := 0
		for i, l := range identifyingLabels {
			if s.labels.Get(l) != "" {
				presence |= 1 << i
			}
		}
		if presence == 0 {
			continue
		}
		g := groups[presence]
		if g == nil {
			g = make([]map[string]bool, len(identifyingLabels))
			groups[presence] = g
		}
		for i, l := range identifyingLabels {
			if v := s.labels.Get(l); v != "" {
				if g[i] == nil {
					g[i] = map[string]bool{}
				}
				g[i][v] = true
			}
		}
	}
	var sets [][]*labels.Matcher
	for _, presence := range slices.Sorted(maps.Keys(groups)) {
		g := groups[presence]
		var ms []*labels.Matcher
		for i, l := range identifyingLabels {
			if presence&(1<<i) == 0 {
				ms = append(ms, labels.MustNewMatcher(labels.MatchEqual, l, ""))
				continue
			}
			var quoted []string
			for _, v := range slices.Sorted(maps.Keys(g[i])) {
				quoted = append(quoted, regexp.QuoteMeta(v))
			}
			ms = append(ms, labels.MustNewMatcher(labels.MatchRegexp, l, strings.Join(quoted, "|")))
		}
		sets = append(sets, ms)
	}
	return sets
}

// infoReference is the @ time and offset info series are read at: those
// of the first argument's selectors when they all share one (subqueries'
// counted), else none.
func (ev *evaluator) infoReference(e parser.Expr) (*int64, int64) {
	type ref struct {
		at  *int64
		off int64
	}
	var first ref
	found, uniform, free := false, true, false
	var walk func(parser.Expr, []parser.Node) bool
	walk = func(e parser.Expr, path []parser.Node) bool {
		if e.Type() != parser.ValueTypeVector && e.Type() != parser.ValueTypeMatrix {
			return false
		}
		if vs, ok := e.(*parser.VectorSelector); ok {
			r := ref{at: ev.atTime(vs.Timestamp, vs.StartOrEnd), off: vs.OriginalOffset.Milliseconds()}
			for i := len(path) - 1; r.at == nil && i >= 0; i-- {
				if sq, ok := path[i].(*parser.SubqueryExpr); ok {
					r.off += sq.OriginalOffset.Milliseconds()
					r.at = ev.atTime(sq.Timestamp, sq.StartOrEnd)
				}
			}
			switch {
			case !found:
				first, found = r, true
			case (first.at == nil) != (r.at == nil):
				uniform = false
			case first.at == nil && first.off != r.off:
				uniform = false
			case first.at != nil && *first.at-first.off != *r.at-r.off:
				uniform = false
			}
			return true
		}
		path = append(path, e)
		if c, ok := e.(*parser.Call); ok && c.Func.Name == "info" {
			return walk(c.Args[0], path)
		}
		has := false
		for child := range parser.ChildrenIter(e) {
			if ce, ok := child.(parser.Expr); ok && walk(ce, path) {
				has = true
			}
		}
		if !has {
			free = true
		}
		return has
	}
	walk(e, nil)
	if !found || !uniform || free {
		return nil, 0
	}
	return first.at, first.off
}
