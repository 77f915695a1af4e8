package storage

import (
	"math"
	"sort"
)

// NameCount is one row of a cardinality table.
type NameCount struct {
	Name  string
	Value int
}

// HeadStats describes the head (the active series), as Prometheus's
// /api/v1/status/tsdb reports its head block.
type HeadStats struct {
	NumSeries, ChunkCount int
	MinTime, MaxTime      int64 // of the samples in the head; 0 when empty
	// The limit largest of each, largest first.
	SeriesCountByMetricName     []NameCount
	LabelValueCountByLabelName  []NameCount
	MemoryInBytesByLabelName    []NameCount
	SeriesCountByLabelValuePair []NameCount
}

// HeadStats walks the head and returns its cardinality tables, the limit
// largest rows of each. It takes each series' lock briefly; it is meant
// for an operator's status page, not for a hot path.
func (db *DB) HeadStats(limit int) HeadStats {
	all := db.series.all()
	st := HeadStats{NumSeries: len(all), MinTime: math.MaxInt64, MaxTime: math.MinInt64}
	byMetric := map[string]int{}
	values := map[string]map[string]struct{}{}
	pairs := map[string]int{}
	for _, s := range all {
		for _, l := range s.lset {
			if l.Name == "__name__" {
				byMetric[l.Value]++
			}
			vs := values[l.Name]
			if vs == nil {
				vs = map[string]struct{}{}
				values[l.Name] = vs
			}
			vs[l.Value] = struct{}{}
			pairs[l.Name+"="+l.Value]++
		}
		s.mu.Lock()
		st.ChunkCount += len(s.sealed)
		if len(s.sealed) > 0 {
			st.MinTime = min(st.MinTime, s.sealed[0].minT)
			st.MaxTime = max(st.MaxTime, s.sealed[len(s.sealed)-1].maxT)
		}
		if s.head != nil && s.head.Count() > 0 {
			st.ChunkCount++
			st.MinTime = min(st.MinTime, s.head.MinT())
			st.MaxTime = max(st.MaxTime, s.head.MaxT())
		}
		if n := len(s.pend); n > 0 {
			st.MinTime = min(st.MinTime, s.pend[0].T)
			st.MaxTime = max(st.MaxTime, s.pend[n-1].T)
		}
		s.mu.Unlock()
	}
	if st.MinTime > st.MaxTime {
		st.MinTime, st.MaxTime = 0, 0
	}
	valueCounts := map[string]int{}
	memory := map[string]int{}
	for name, vs := range values {
		valueCounts[name] = len(vs)
		for v := range vs {
			memory[name] += len(v)
		}
	}
	st.SeriesCountByMetricName = top(byMetric, limit)
	st.LabelValueCountByLabelName = top(valueCounts, limit)
	st.MemoryInBytesByLabelName = top(memory, limit)
	st.SeriesCountByLabelValuePair = top(pairs, limit)
	return st
}

// top returns the limit largest entries, largest first, ties by name.
func top(m map[string]int, limit int) []NameCount {
	out := make([]NameCount, 0, len(m))
	for k, v := range m {
		out = append(out, NameCount{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Value != out[j].Value {
			return out[i].Value > out[j].Value
		}
		return out[i].Name < out[j].Name
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}
