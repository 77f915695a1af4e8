// Package query owns the read side: PromQL (parsed by metricsql,
// evaluated here), the Prometheus HTTP API (package query/api) and, later,
// the gRPC Query service and reports. It sees the database only through
// the Source interface declared here, over storage/series types; it must
// not import the storage engine or Pebble.
package query

import (
	"errors"
	"fmt"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/headroomdb/headroom/storage/series"
)

// Source opens queriers over a time range, in milliseconds, inclusive.
type Source interface {
	Querier(mint, maxt int64) (Querier, error)
}

// Querier reads the index of one time range. Close releases it.
type Querier interface {
	// SelectLabels returns the label sets of the series the matchers
	// select (every matcher must hold), reading no samples.
	SelectLabels(ms ...*series.Matcher) ([]series.Labels, error)
	// LabelNames and LabelValues return sorted names and values, of the
	// series the matchers select or of all series when there are none.
	LabelNames(ms ...*series.Matcher) ([]string, error)
	LabelValues(name string, ms ...*series.Matcher) ([]string, error)
	Close() error
}

// ErrBadQuery marks a query or selector that does not parse or that uses
// syntax PromQL does not have.
var ErrBadQuery = errors.New("bad query")

// ParseSelector parses a series selector (`up{job="node"}`, `{__name__=~"x.*"}`)
// into matchers. MetricsQL's or-separated filter groups are refused: they
// are not PromQL.
func ParseSelector(s string) ([]*series.Matcher, error) {
	e, err := metricsql.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadQuery, err)
	}
	me, ok := e.(*metricsql.MetricExpr)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not a series selector", ErrBadQuery, s)
	}
	if len(me.LabelFilterss) != 1 {
		return nil, fmt.Errorf("%w: %q: or-separated label filters are MetricsQL syntax, not PromQL", ErrBadQuery, s)
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
	empty := true
	for _, m := range ms {
		if !m.Matches("") {
			empty = false
		}
	}
	if empty {
		return nil, fmt.Errorf("%w: %q: a selector needs at least one matcher that does not match the empty string", ErrBadQuery, s)
	}
	return ms, nil
}
