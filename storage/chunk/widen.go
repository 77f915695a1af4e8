package chunk

import (
	"math"
	"slices"

	"github.com/headroomdb/headroom/storage/series"
)

// WidenLayouts gives the histograms of each run that can share a chunk
// (the same schema, zero threshold, kind of counts and custom bounds, no
// counter reset, at most n samples within span ms) one layout: the union
// of their buckets, a bucket a sample lacks holding 0, which costs a bit
// a sample. A latency histogram whose tail opens a bucket now and then
// otherwise started a chunk at each (a day of 83 buckets took 43 bytes
// a sample; Prometheus recodes its chunks the same way).
func WidenLayouts(all []series.HistSample, n int, span int64) []series.HistSample {
	var out []series.HistSample
	for i := 0; i < len(all); {
		j := i + 1
		for j < len(all) && j-i < n && all[j].T-all[i].T < span && sameBase(all[i].H, all[j].H) && !histFell(all[j-1].H, all[j].H) {
			j++
		}
		run := all[i:j]
		if w := widen(run); w != nil {
			if out == nil {
				out = append(make([]series.HistSample, 0, len(all)), all[:i]...)
			}
			out = append(out, w...)
		} else if out != nil {
			out = append(out, run...)
		}
		i = j
	}
	if out == nil {
		return all // every run had one layout already
	}
	return out
}

// sameBase says whether b may share a chunk with a once their buckets
// are widened to one layout.
func sameBase(a, b *series.Histogram) bool {
	return a.Float == b.Float && a.Schema == b.Schema && math.Float64bits(a.ZeroThreshold) == math.Float64bits(b.ZeroThreshold) &&
		slices.Equal(a.CustomValues, b.CustomValues) && b.CounterReset != 1 && (a.CounterReset == 3) == (b.CounterReset == 3)
}

// histFell reports a counter that reset from prev to cur: a count below
// prev's, in total, in the zero bucket or in a bucket of prev's.
func histFell(prev, cur *series.Histogram) bool {
	if cur.CounterReset == 3 {
		return false // a gauge
	}
	if cur.Count < prev.Count || cur.ZeroCount < prev.ZeroCount {
		return true
	}
	fell := func(ps []series.Span, pb []float64, cs []series.Span, cb []float64) bool {
		if slices.Equal(ps, cs) { // the usual case: bucket by bucket
			for k, c := range pb {
				if k < len(cb) && cb[k] < c {
					return true
				}
			}
			return false
		}
		have := bucketCounts(cs, cb)
		f := false
		EachBucket(ps, pb, func(i int32, c float64) {
			if have[i] < c {
				f = true
			}
		})
		return f
	}
	return fell(prev.PositiveSpans, prev.PositiveBuckets, cur.PositiveSpans, cur.PositiveBuckets) ||
		fell(prev.NegativeSpans, prev.NegativeBuckets, cur.NegativeSpans, cur.NegativeBuckets)
}

// EachBucket calls f with each bucket's index and count.
func EachBucket(spans []series.Span, buckets []float64, f func(i int32, c float64)) {
	i, k := int32(0), 0
	for _, s := range spans {
		i += s.Offset
		for range s.Length {
			if k < len(buckets) {
				f(i, buckets[k])
			}
			i++
			k++
		}
	}
}

func bucketCounts(spans []series.Span, buckets []float64) map[int32]float64 {
	m := make(map[int32]float64, len(buckets))
	EachBucket(spans, buckets, func(i int32, c float64) { m[i] = c })
	return m
}

// widen returns run's histograms in the union of their layouts, or nil
// when they share one already.
func widen(run []series.HistSample) []series.HistSample {
	same := true
	for _, x := range run[1:] {
		if !slices.Equal(x.H.PositiveSpans, run[0].H.PositiveSpans) || !slices.Equal(x.H.NegativeSpans, run[0].H.NegativeSpans) {
			same = false
			break
		}
	}
	if same {
		return nil
	}
	union := func(side func(h *series.Histogram) ([]series.Span, []float64)) ([]int32, []series.Span) {
		set := map[int32]bool{}
		for _, x := range run {
			sp, b := side(x.H)
			EachBucket(sp, b, func(i int32, _ float64) { set[i] = true })
		}
		idx := make([]int32, 0, len(set))
		for i := range set {
			idx = append(idx, i)
		}
		slices.Sort(idx)
		var spans []series.Span
		prev := int32(0)
		for k, i := range idx {
			if k > 0 && i == prev+1 {
				spans[len(spans)-1].Length++
			} else if k == 0 {
				spans = append(spans, series.Span{Offset: i, Length: 1})
			} else {
				spans = append(spans, series.Span{Offset: i - prev - 1, Length: 1})
			}
			prev = i
		}
		return idx, spans
	}
	pos := func(h *series.Histogram) ([]series.Span, []float64) { return h.PositiveSpans, h.PositiveBuckets }
	neg := func(h *series.Histogram) ([]series.Span, []float64) { return h.NegativeSpans, h.NegativeBuckets }
	pIdx, pSpans := union(pos)
	nIdx, nSpans := union(neg)
	out := make([]series.HistSample, len(run))
	for k, x := range run {
		h := *x.H
		place := func(idx []int32, spans, to []series.Span, buckets []float64) []float64 {
			if len(idx) == 0 {
				return nil
			}
			if slices.Equal(spans, to) {
				return buckets
			}
			have := bucketCounts(spans, buckets)
			out := make([]float64, len(idx))
			for j, i := range idx {
				out[j] = have[i]
			}
			return out
		}
		h.PositiveBuckets = place(pIdx, x.H.PositiveSpans, pSpans, x.H.PositiveBuckets)
		h.NegativeBuckets = place(nIdx, x.H.NegativeSpans, nSpans, x.H.NegativeBuckets)
		h.PositiveSpans, h.NegativeSpans = pSpans, nSpans
		out[k] = series.HistSample{T: x.T, H: &h}
	}
	return out
}
