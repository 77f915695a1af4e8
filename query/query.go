// Package query owns the read side: PromQL (parsed by Prometheus's own
// parser, evaluated here), the Prometheus HTTP API (package query/api) and, later,
// the gRPC Query service and reports. It sees the database only through
// the Source interface declared here, over storage/series types; it must
// not import the storage engine or Pebble.
package query

import (
	"errors"
	"fmt"

	"github.com/prometheus/prometheus/promql/parser"

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
	// Series returns the series the matchers select with their samples
	// in the querier's range.
	Series(ms ...*series.Matcher) (SeriesSet, error)
	Close() error
}

// ShardedQuerier is a Querier that can split a selection into parts read
// in parallel, each through its own Querier.
type ShardedQuerier interface {
	SeriesShard(shard, shards int, ms ...*series.Matcher) (SeriesSet, error)
}

// BufferReuser is a Querier that can reuse its read buffers from series
// to series, when each series' iterator is done with before the set's
// next Next (the engine's scans are): no allocation per chunk read.
type BufferReuser interface {
	ReuseBuffers()
}

// SeriesSet iterates selected series (the storage vocabulary's, so that
// the engine's queriers satisfy Querier without adapters).
type SeriesSet = series.Set

// ErrBadQuery marks a query or selector that does not parse or that uses
// syntax PromQL does not have.
var ErrBadQuery = errors.New("bad query")

// ParseSelector parses a series selector (`up{job="node"}`, `{__name__=~"x.*"}`)
// into matchers.
func ParseSelector(s string) ([]*series.Matcher, error) {
	e, err := parse(s)
	if err != nil {
		return nil, err
	}
	vs, ok := e.(*parser.VectorSelector)
	if !ok || vs.OriginalOffset != 0 || vs.OriginalOffsetExpr != nil || vs.Timestamp != nil || vs.StartOrEnd != 0 {
		return nil, fmt.Errorf("%w: %q is not a series selector", ErrBadQuery, s)
	}
	ms, err := matchersOf(vs)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	return ms, nil
}
