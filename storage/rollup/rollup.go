// Package rollup owns the downsampled form of a series: the aggregate of
// one time bucket (count, sum, min, max, the first and last samples, the
// counter increase within it, and a mergeable quantile sketch), how
// buckets merge into coarser ones, and the block format that stores a run
// of buckets. It is pure code: no I/O and no Pebble (the storage engine
// stores blocks, the query engine reads them), and it may import only the
// standard library, storage/chunk and storage/series.
package rollup

import (
	"math"

	"github.com/headroomdb/headroom/storage/series"
)

// Bucket aggregates the samples of one series in (Start, Start+resolution]:
// left-open like Prometheus's range windows, so that a window (t-w, t]
// with t and w multiples of the resolution is exactly a run of buckets.
// Together its fields answer min/max/sum/count/avg/last_over_time, rate and
// increase (Prometheus's extrapolation needs the first and last samples
// and the count) and, through the sketch, quantile_over_time, exactly as
// the raw samples would at the bucket's resolution or coarser.
type Bucket struct {
	Start         int64 // ms, a multiple of the resolution
	Count         int64
	Sum           float64
	Min, Max      float64
	FirstT, LastT int64 // ms
	First, Last   float64
	// Increase is the counter increase from the first sample to the last,
	// a reset (a value below the previous one) counting from zero, as
	// Prometheus's rate does.
	Increase float64
	Sketch   Sketch
}

// SeriesBuckets is one series' buckets of a tier, sorted by start, as
// a copy between stores carries them (storage.DB.ImportRollups).
type SeriesBuckets struct {
	Labels  series.Labels
	Buckets []Bucket
	// Before, when set, is this series' own cut for the import instead
	// of the call's (its own raw floor, under a retention rule).
	Before int64
}

// SeriesHistBuckets is SeriesBuckets for native histogram buckets.
type SeriesHistBuckets struct {
	Labels  series.Labels
	Buckets []HistBucket
	Before  int64 // as in SeriesBuckets
}

// StoredBlock is one block of a tier as a store keeps it: the column
// block of up to a block span of buckets and, where the tier keeps them,
// their sketch block. A copy between stores carries it as it is.
type StoredBlock struct {
	Start    int64 // the block's partition of the tier times its span
	Columns  []byte
	Sketches []byte // empty without sketches
}

// StoredSeries is a series' blocks of a tier as a store keeps them.
type StoredSeries struct {
	Labels series.Labels
	Blocks []StoredBlock
	Before int64 // as in SeriesBuckets
}

// Add adds a sample; samples come in time order, after any already added.
// Stale markers are the caller's to drop (range functions skip them).
func (b *Bucket) Add(t int64, v float64) {
	b.AddStats(t, v)
	b.Sketch.Add(v)
}

// AddStats is Add without the sketch, for a tier that keeps none.
func (b *Bucket) AddStats(t int64, v float64) {
	if b.Count == 0 {
		b.FirstT, b.First, b.Min, b.Max = t, v, v, v
	} else {
		b.Increase += counterDelta(b.Last, v)
		// As Prometheus's min/max_over_time: a NaN gives way to any value.
		if v < b.Min || math.IsNaN(b.Min) {
			b.Min = v
		}
		if v > b.Max || math.IsNaN(b.Max) {
			b.Max = v
		}
	}
	b.Count++
	b.Sum += v
	b.LastT, b.Last = t, v
}

// AddLate adds a sample at any time, before, among or after the bucket's
// samples (a backfill into a bucket whose raw samples are gone). Count,
// sum, min, max, the sketch and the first and last samples stay exact;
// the counter increase counts the change to a new first or last sample,
// and nothing for a sample among the others (the neighbours it falls
// between are not known any more).
func (b *Bucket) AddLate(t int64, v float64) {
	if b.Count == 0 || t > b.LastT {
		b.Add(t, v)
		return
	}
	if t < b.FirstT {
		b.Increase += counterDelta(v, b.First)
		b.FirstT, b.First = t, v
	}
	if v < b.Min || math.IsNaN(b.Min) {
		b.Min = v
	}
	if v > b.Max || math.IsNaN(b.Max) {
		b.Max = v
	}
	b.Count++
	b.Sum += v
	b.Sketch.Add(v)
}

// counterDelta is a counter's increase from a to b: a value below the
// previous one is a reset, after which the counter counted from zero.
func counterDelta(a, b float64) float64 {
	if b < a {
		return b
	}
	return b - a
}

// Merge adds o, a bucket of the same series whose samples all come after
// b's, into b: the counter increase across the two (from b's last sample
// to o's first) counts too. Start stays b's.
func (b *Bucket) Merge(o *Bucket) {
	if o.Count == 0 {
		return
	}
	if b.Count == 0 {
		start := b.Start
		*b = Bucket{Start: start}
		b.Count, b.Sum, b.Min, b.Max = o.Count, o.Sum, o.Min, o.Max
		b.FirstT, b.First, b.LastT, b.Last, b.Increase = o.FirstT, o.First, o.LastT, o.Last, o.Increase
		b.Sketch.Merge(&o.Sketch)
		return
	}
	b.Increase += counterDelta(b.Last, o.First) + o.Increase
	if o.Min < b.Min || math.IsNaN(b.Min) {
		b.Min = o.Min
	}
	if o.Max > b.Max || math.IsNaN(b.Max) {
		b.Max = o.Max
	}
	b.Count += o.Count
	b.Sum += o.Sum
	b.LastT, b.Last = o.LastT, o.Last
	b.Sketch.Merge(&o.Sketch)
}

// BucketStart returns the Start of the bucket of resolution res that
// holds a sample at t: the bucket (Start, Start+res] with t in it.
func BucketStart(t, res int64) int64 { return Align(t-1, res) }

// Align returns t rounded down to a multiple of res.
func Align(t, res int64) int64 {
	r := t % res
	if r < 0 {
		r += res
	}
	return t - r
}
