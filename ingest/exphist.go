package ingest

import (
	"fmt"
	"math"

	"github.com/headroomdb/headroom/storage/series"
)

// OTLP exponential histograms as native histograms, as the
// OpenTelemetry-to-Prometheus mapping converts them: the scale is the
// schema, OTLP's bucket i, (base^i, base^(i+1)], is Prometheus's bucket
// i+1, the zero bucket and its threshold carry over. Prometheus's schemas
// stop at 8: a finer scale is brought down to 8 by merging neighbouring
// buckets; one coarser than -4 has no schema.

const (
	maxSchema = series.MaxSchema
	minSchema = series.MinSchema
)

// expBuckets are one side of an OTLP exponential histogram: the index of
// the first bucket and the counts from there.
type expBuckets struct {
	offset int32
	counts []uint64
}

// expHistogram converts a data point. hasSum false (the data model's
// optional sum absent) gives a NaN sum, which queries treat as unknown.
func expHistogram(scale int32, zeroThreshold float64, zeroCount, count uint64, sum float64, hasSum bool, pos, neg expBuckets) (series.Histogram, error) {
	if scale < minSchema {
		return series.Histogram{}, fmt.Errorf("%w: exponential histogram of scale %d: Prometheus's schemas stop at %d", series.ErrInvalid, scale, minSchema)
	}
	down := uint(0)
	if scale > maxSchema {
		down = uint(scale - maxSchema)
		scale = maxSchema
	}
	h := series.Histogram{Schema: scale, ZeroThreshold: zeroThreshold, ZeroCount: float64(zeroCount), Count: float64(count), Sum: sum}
	if !hasSum {
		h.Sum = math.NaN()
	}
	h.PositiveSpans, h.PositiveBuckets = nativeBuckets(pos, down)
	h.NegativeSpans, h.NegativeBuckets = nativeBuckets(neg, down)
	return h, nil
}

// nativeBuckets maps one side's buckets, merged by 2^down, into spans of
// absolute counts. Empty buckets at either end are dropped; a run of
// fewer than three empty ones inside is kept (a span costs more).
func nativeBuckets(b expBuckets, down uint) ([]series.Span, []float64) {
	// Merge into (index, count) pairs in index order.
	type bucket struct {
		idx   int64
		count uint64
	}
	var merged []bucket
	for i, c := range b.counts {
		// OTLP index j covers (base^j, base^(j+1)]: Prometheus's j+1. At a
		// coarser scale the bucket holding it is j >> down, the same shift.
		idx := (int64(b.offset)+int64(i))>>down + 1
		if n := len(merged); n > 0 && merged[n-1].idx == idx {
			merged[n-1].count += c
			continue
		}
		merged = append(merged, bucket{idx, c})
	}
	for len(merged) > 0 && merged[0].count == 0 {
		merged = merged[1:]
	}
	for len(merged) > 0 && merged[len(merged)-1].count == 0 {
		merged = merged[:len(merged)-1]
	}
	if len(merged) == 0 {
		return nil, nil
	}
	var spans []series.Span
	var counts []float64
	next := merged[0].idx // the index the current span would continue at
	for i := 0; i < len(merged); {
		// Skip a run of empty buckets; keep it if short and inside a span.
		j := i
		for j < len(merged) && merged[j].count == 0 {
			j++
		}
		gap := merged[j].idx - next // j < len(merged): the ends are not empty
		if len(spans) == 0 || gap > 2 {
			off := gap
			if len(spans) == 0 {
				off = merged[j].idx
			}
			spans = append(spans, series.Span{Offset: int32(off)})
		} else {
			for range gap {
				counts = append(counts, 0)
				spans[len(spans)-1].Length++
			}
		}
		counts = append(counts, float64(merged[j].count))
		spans[len(spans)-1].Length++
		next = merged[j].idx + 1
		i = j + 1
	}
	return spans, counts
}
