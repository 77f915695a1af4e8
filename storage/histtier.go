package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/prometheus/model/histogram"

	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// Native histograms in the rollup tiers: a block per series, tier and
// partition under its own key kind ('G', beside the column blocks), of
// rollup.HistBucket, computed with the floats' buckets from the same
// series-day, under the same roll markers, and read exactly in the same
// way (EachHistRollup). Histograms older than raw retention are refused,
// so a histogram day is always rolled up in replace mode.

// tierKinds are the key kinds of a tier's blocks: retention drops them
// together.
var tierKinds = []byte{kindRollup, kindSketch, kindHistRollup}

// histRollupKey is rollupKey under the histogram block's kind.
func histRollupKey(dst []byte, tier int, part uint32, id uint64, start int64) []byte {
	dst = rollupKey(dst, tier, part, id, start)
	dst[len(dst)-22] = kindHistRollup
	return dst
}

// resetDetector is Prometheus's counter reset rule for a histogram after
// another (FloatHistogram.DetectReset: the hint, else a fall in any
// count, a finer schema, a zero bucket that narrowed), so that the
// resets a bucket records are those a query over raw samples finds. It
// keeps its conversions' spans between calls: converting allocated four
// times a sample, most of a rollup's allocations.
type resetDetector struct {
	a, b           histogram.FloatHistogram
	ap, an, bp, bn []histogram.Span
}

func (d *resetDetector) detect(cur, prev *series.Histogram) bool {
	d.ap, d.an = asFloatHistogram(&d.a, cur, d.ap, d.an)
	d.bp, d.bn = asFloatHistogram(&d.b, prev, d.bp, d.bn)
	return d.a.DetectReset(&d.b)
}

// asFloatHistogram sets f to h as Prometheus's type, sharing its counts,
// its spans converted into pos and neg (returned for reuse).
func asFloatHistogram(f *histogram.FloatHistogram, h *series.Histogram, pos, neg []histogram.Span) ([]histogram.Span, []histogram.Span) {
	spans := func(dst []histogram.Span, ss []series.Span) []histogram.Span {
		if len(ss) == 0 {
			return dst[:0]
		}
		dst = dst[:0]
		for _, s := range ss {
			dst = append(dst, histogram.Span{Offset: s.Offset, Length: s.Length})
		}
		return dst
	}
	pos, neg = spans(pos, h.PositiveSpans), spans(neg, h.NegativeSpans)
	*f = histogram.FloatHistogram{CounterResetHint: histogram.CounterResetHint(h.CounterReset), Schema: h.Schema,
		ZeroThreshold: h.ZeroThreshold, ZeroCount: h.ZeroCount, Count: h.Count, Sum: h.Sum,
		PositiveSpans: pos, NegativeSpans: neg,
		PositiveBuckets: h.PositiveBuckets, NegativeBuckets: h.NegativeBuckets, CustomValues: h.CustomValues}
	return pos, neg
}

// dayHistBuckets buckets a day's histogram samples (sorted) at every
// tier's resolution: the finest from the samples, each coarser one by
// merging the one before, as dayBuckets does floats. Stale markers are
// skipped, as range functions skip them.
func dayHistBuckets(tiers []*tierState, hs []series.HistSample, dst [][]rollup.HistBucket) [][]rollup.HistBucket {
	dst = slices.Grow(dst[:0], len(tiers))[:len(tiers)]
	for i := range dst {
		dst[i] = nil
	}
	if len(tiers) == 0 || len(hs) == 0 {
		return dst
	}
	res := tiers[0].res
	var bs []rollup.HistBucket
	var d resetDetector
	reset := d.detect
	for i, x := range hs {
		if series.IsStaleNaN(x.H.Sum) {
			continue
		}
		if i&255 == 255 {
			runtime.Gosched()
		}
		start := rollup.BucketStart(x.T, res)
		if len(bs) == 0 || bs[len(bs)-1].Start != start {
			bs = append(bs, rollup.HistBucket{Start: start})
		}
		bs[len(bs)-1].Add(x.T, x.H, reset)
	}
	dst[0] = bs
	for k := 1; k < len(tiers); k++ {
		dst[k] = mergeHistUp(dst[k-1], tiers[k].res, reset)
	}
	return dst
}

// mergeHistUp merges buckets (in time order) into buckets of resolution
// res.
func mergeHistUp(in []rollup.HistBucket, res int64, reset rollup.ResetFunc) []rollup.HistBucket {
	var out []rollup.HistBucket
	for i := range in {
		start := rollup.Align(in[i].Start, res)
		if len(out) == 0 || out[len(out)-1].Start != start {
			out = append(out, rollup.HistBucket{Start: start})
		}
		out[len(out)-1].Merge(&in[i], reset)
	}
	return out
}

// readHistRaw appends series id's stored histogram samples in [mint,
// maxt] (a day at most) to dst in time order.
func readHistRaw(it *pebble.Iterator, id uint64, mint, maxt int64, dst []series.HistSample) ([]series.HistSample, error) {
	start := len(dst)
	err := eachStoredChunk(it, kindHistChunk, id, dayOf(mint), dayOf(maxt), mint, maxt, func(k, chk []byte, _ int64) error {
		n := len(dst)
		var err error
		if dst, err = readHistChunk(dst, k, chk); err != nil {
			return err
		}
		dst = append(dst[:n], clipHists(dst[n:], mint, maxt)...)
		return nil
	})
	if err != nil {
		return dst, err
	}
	// Chunks of a day do not overlap (a checkpoint re-cuts what a late
	// sample touches), but say so if they ever do.
	for i := start + 1; i < len(dst); i++ {
		if dst[i].T <= dst[i-1].T {
			return dst, fmt.Errorf("series %d: histogram chunks overlap at %d", id, dst[i].T)
		}
	}
	return dst, nil
}

// readHistPartition returns every histogram sample of series id's chunks
// in day partition day, and their keys.
func readHistPartition(it *pebble.Iterator, id uint64, day uint32) ([]series.HistSample, [][]byte, error) {
	var hs []series.HistSample
	var keys [][]byte
	err := eachStoredChunk(it, kindHistChunk, id, day, day, MinTime, MaxTime, func(k, chk []byte, _ int64) error {
		keys = append(keys, append([]byte(nil), k...))
		var err error
		hs, err = readHistChunk(hs, k, chk)
		return err
	})
	return hs, keys, err
}

// addLateHists adds the histograms (sorted) whose buckets (at res) start
// in [lo, hi) to blk (sorted), creating buckets as needed.
func addLateHists(blk []rollup.HistBucket, hs []series.HistSample, res, lo, hi int64) []rollup.HistBucket {
	var d resetDetector
	for _, x := range hs {
		if series.IsStaleNaN(x.H.Sum) {
			continue
		}
		start := rollup.BucketStart(x.T, res)
		if start < lo || start >= hi {
			continue
		}
		k, found := slices.BinarySearchFunc(blk, start, func(b rollup.HistBucket, t int64) int { return cmpInt(b.Start, t) })
		if !found {
			blk = slices.Insert(blk, k, rollup.HistBucket{Start: start})
		}
		blk[k].AddLate(x.T, x.H, d.detect)
	}
	return blk
}

// getHistBlock reads the histogram block at key from r into dst; found is
// false when there is none.
func getHistBlock(r pebble.Reader, dst []rollup.HistBucket, key []byte) ([]rollup.HistBucket, bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return dst, false, nil
	}
	if err != nil {
		return dst, false, err
	}
	defer closer.Close()
	dst, err = rollup.DecodeHistBlock(dst, v)
	return dst, err == nil, err
}

// spliceHistDay replaces the buckets of blk (sorted) starting in [lo, hi)
// with day's buckets in that range.
func spliceHistDay(blk, day []rollup.HistBucket, lo, hi int64) []rollup.HistBucket {
	i, _ := slices.BinarySearchFunc(blk, lo, func(b rollup.HistBucket, t int64) int { return cmpInt(b.Start, t) })
	j, _ := slices.BinarySearchFunc(blk, hi, func(b rollup.HistBucket, t int64) int { return cmpInt(b.Start, t) })
	var in []rollup.HistBucket
	for k := range day {
		if day[k].Start >= lo && day[k].Start < hi {
			in = append(in, day[k])
		}
	}
	return slices.Replace(blk, i, j, in...)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// writeHistBlock sets (or, with no buckets, deletes) series id's
// histogram block at key in b. Its postings are the column block's: the
// same series, tier and partition.
func writeHistBlock(b *pebble.Batch, t *tierState, key []byte, id uint64, ls series.Labels, bs []rollup.HistBucket, enc []byte) ([]byte, error) {
	if len(bs) == 0 {
		return enc, b.Delete(key, nil)
	}
	enc, err := rollup.AppendHistBlock(enc[:0], bs)
	if err != nil {
		return enc, fmt.Errorf("series %d: %w", id, err)
	}
	if err := b.Set(key, enc, nil); err != nil {
		return enc, err
	}
	_, err = setPostings(b, postingsPart(t.idx, int64(binary.BigEndian.Uint32(key[2:]))), id, ls, nil)
	return enc, err
}

// EachHistRollup is EachRollup for native histograms: it calls f with
// each selected series that has histogram buckets of tier in the blocks
// covering [mint, maxt], and those blocks' buckets (f may keep them),
// exact whatever the downsampler has done: a day that is marked, or that
// the head holds histograms of that Pebble does not yet, is computed
// from its raw samples.
func (db *DB) EachHistRollup(tier int, mint, maxt int64, shard, shards int, ms []*series.Matcher, f func(series.Labels, []rollup.HistBucket) error) (RollupRead, error) {
	var rr RollupRead
	t, err := db.tierAt(tier)
	if err != nil {
		return rr, err
	}
	if mint > maxt || !db.hasHist.Load() {
		return rr, nil
	}
	mint, maxt = max(mint, 0), max(maxt, 0)
	parts, ids, err := db.tierSelect(tier, mint, maxt, shard, shards, ms)
	if err != nil {
		return rr, err
	}
	// The head's histograms first, then the Pebble view: what leaves the
	// head meanwhile is in the view, with its marker.
	lo, hi := mint+1, maxt+t.res
	heads := map[uint64][]series.HistSample{}
	for _, id := range ids {
		if s := db.series.getByID(id); s != nil {
			s.mu.Lock()
			// A copy: late samples are inserted into the head's slices.
			hs := slices.Clone(mergeHists(clipHists(s.histFlushing, lo, hi), clipHists(s.hist, lo, hi)))
			s.mu.Unlock()
			if len(hs) > 0 {
				heads[id] = hs
			}
		}
	}
	r, err := db.newTierReader(t, parts, lo, hi, 0, true)
	if err != nil {
		return rr, err
	}
	defer r.close()
	var raw []series.HistSample
	var day [][]rollup.HistBucket
	for _, id := range ids {
		if err := db.checkClosing(); err != nil {
			return rr, err
		}
		var bs []rollup.HistBucket
		for pi, p := range r.parts {
			r.key = histRollupKey(r.key[:0], t.idx, uint32(p), id, p*t.span)
			pit := r.colIts[pi]
			if !seekForward(pit, r.key) || !bytes.Equal(pit.Key(), r.key) {
				if err := pit.Error(); err != nil {
					return rr, err
				}
				continue
			}
			if bs, err = rollup.DecodeHistBlock(bs, pit.Value()); err != nil {
				return rr, fmt.Errorf("series %d: %v histogram block %d: %w", id, t.Resolution, p, err)
			}
		}
		head := heads[id]
		var hdays []uint32
		for _, x := range head {
			if d := dayOf(x.T); len(hdays) == 0 || hdays[len(hdays)-1] != d {
				hdays = append(hdays, d)
			}
		}
		days, err := r.pendingDays(id, nil)
		if err != nil {
			return rr, err
		}
		days = append(days, hdays...)
		slices.Sort(days)
		days = slices.Compact(days)
		if len(days) > 0 {
			sf, err := seriesFloorAt(r.rawIt, id)
			if err != nil {
				return rr, err
			}
			floor := max(r.floor, sf)
			for _, d := range days {
				dlo, dhi := int64(d)*msPerDay, int64(d+1)*msPerDay
				if d < floor {
					// Merge mode: the histograms the dropped day took
					// since, added to its buckets as the downsampler will.
					stored, _, err := readHistPartition(r.rawIt, id, d)
					if err != nil {
						return rr, fmt.Errorf("series %d: %w", id, err)
					}
					if hs := mergeHists(stored, clipHists(head, dlo+1, dhi)); len(hs) > 0 {
						bs = addLateHists(bs, hs, t.res, r.lo-1, r.hi)
						rr.RawDays++
					}
					continue
				}
				if raw, err = readHistRaw(r.rawIt, id, dlo+1, dhi, raw[:0]); err != nil {
					return rr, fmt.Errorf("series %d: %w", id, err)
				}
				hs := raw
				if len(head) > 0 {
					hs = mergeHists(slices.Clone(raw), clipHists(head, dlo+1, dhi))
				}
				if len(hs) == 0 {
					continue // a day of floats only
				}
				day = dayHistBuckets(db.tiers[:t.idx+1], hs, day)
				bs = spliceHistDay(bs, day[t.idx], dlo, dhi)
				rr.RawDays++
			}
		}
		if len(bs) == 0 {
			continue
		}
		ls, err := r.labels(id)
		if err != nil {
			return rr, err
		}
		if err := f(ls, bs); err != nil {
			return rr, err
		}
	}
	return rr, nil
}

// histBucketDiff names the first thing in which got differs from want,
// bit for bit ("" if nothing).
func histBucketDiff(got, want *rollup.HistBucket) string {
	switch {
	case got.Count != want.Count:
		return fmt.Sprintf("count %d, raw samples give %d", got.Count, want.Count)
	case got.Rest != want.Rest:
		return fmt.Sprintf("kinds of buckets and hints %b, raw samples give %b", got.Rest, want.Rest)
	case got.Count > 1 && got.MinSchema != want.MinSchema:
		return fmt.Sprintf("smallest schema %d, raw samples give %d", got.MinSchema, want.MinSchema)
	case len(got.Kept) != len(want.Kept):
		return fmt.Sprintf("%d samples kept, raw samples give %d", len(got.Kept), len(want.Kept))
	}
	for i := range got.Kept {
		g, w := &got.Kept[i], &want.Kept[i]
		switch {
		case g.T != w.T || g.Role != w.Role:
			return fmt.Sprintf("kept sample %d at %d (roles %b), raw samples give %d (%b)", i, g.T, g.Role, w.T, w.Role)
		case !bytes.Equal(series.AppendHistogramBinary(nil, g.H), series.AppendHistogramBinary(nil, w.H)):
			return fmt.Sprintf("kept sample %d at %d differs from the raw one", i, g.T)
		}
	}
	return ""
}
