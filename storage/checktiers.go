package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// TierDiff is a stored tier bucket that differs from its recomputation.
type TierDiff struct {
	Labels     series.Labels
	Resolution time.Duration
	Start      int64 // the bucket's start (ms)
	What       string
}

func (d TierDiff) String() string {
	return fmt.Sprintf("%s %v bucket at %s: %s", d.Labels, d.Resolution, time.UnixMilli(d.Start).UTC().Format(time.RFC3339), d.What)
}

// TierCheckReport is what a tier check found.
type TierCheckReport struct {
	SeriesDays int64 // series-days recomputed and compared
	Pending    int64 // series-days skipped: marked for the downsampler (queries compute them from raw)
	Buckets    int64 // buckets compared
	Differing  int64 // buckets that differ (missing or extra ones included)
	Diffs      []TierDiff
	Took       time.Duration
}

// CheckTiers recomputes, from the raw samples, every tier bucket of every
// series-day whose raw partition is whole (at or after the raw floor and
// the series' own) and not marked for the downsampler, and compares it
// with the stored one, bit for bit (count, sum, min, max, first and last
// samples and times, increase, sketch). Days a tier no longer keeps are
// skipped. It reads a snapshot: the server may be running. progress, if
// set, is called now and then with the series-days done.
func (db *DB) CheckTiers(progress func(days int64)) (*TierCheckReport, error) {
	snap := db.pdb.NewSnapshot()
	defer snap.Close()
	now := db.opts.Now().UnixMilli()
	return checkTiers(snap, db.tiers, func(t *tierState, ls series.Labels, day uint32) bool { return db.keeps(t.idx, ls, day, now) }, progress)
}

// CheckTiersDir is CheckTiers on a directory no server has open, with the
// tiers it was last opened with.
func CheckTiersDir(dir string, progress func(days int64)) (*TierCheckReport, error) {
	pdb, done, err := openReadOnly(dir)
	if err != nil {
		return nil, err
	}
	defer done()
	ts, err := storedTiers(pdb)
	if err != nil {
		return nil, err
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("%s records no rollup tiers (opened only by a version before tier checks, or with tiers off)", dir)
	}
	var states []*tierState
	for i, t := range ts {
		st := &tierState{Tier: t, idx: i, res: t.Resolution.Milliseconds(), sketches: i > 0 || len(ts) == 1}
		st.span = blockBuckets * st.res
		states = append(states, st)
	}
	now := time.Now().UnixMilli()
	// Retention rules are not recorded: a tier's own retention it is.
	return checkTiers(pdb, states, func(t *tierState, _ series.Labels, day uint32) bool {
		return int64(day+1)*msPerDay > now-t.Retention.Milliseconds()
	}, progress)
}

// maxTierDiffs bounds the report's list; the counts stay exact.
const maxTierDiffs = 100

// keep says whether tier keeps the day of series ls (its retention).
func checkTiers(r pebble.Reader, tiers []*tierState, keep func(t *tierState, ls series.Labels, day uint32) bool, progress func(int64)) (*TierCheckReport, error) {
	start := time.Now()
	rep := &TierCheckReport{}
	if len(tiers) == 0 {
		return rep, nil
	}
	floor, _, err := readFloor(r)
	if err != nil {
		return nil, err
	}
	it, err := r.NewIter(nil)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	sel, err := r.NewIter(nil)
	if err != nil {
		return nil, err
	}
	defer sel.Close()
	diff := func(ls series.Labels, t *tierState, at int64, format string, args ...any) {
		rep.Differing++
		if len(rep.Diffs) < maxTierDiffs {
			rep.Diffs = append(rep.Diffs, TierDiff{ls, t.Resolution, at, fmt.Sprintf(format, args...)})
		}
	}
	var samples []series.Sample
	var day [][]rollup.Bucket
	var blk []rollup.Bucket
	var hraw []series.HistSample
	var hday [][]rollup.HistBucket
	for d := floor; ; {
		// The next raw day with postings.
		if !sel.SeekGE(binary.BigEndian.AppendUint32([]byte{kindPostings}, d)) || sel.Key()[0] != kindPostings || len(sel.Key()) < 5 {
			break
		}
		d = binary.BigEndian.Uint32(sel.Key()[1:])
		if d >= rollupPartBase {
			break
		}
		ids, err := selectDay(sel, d, nil)
		if err != nil {
			return nil, err
		}
		lo, hi := int64(d)*msPerDay, int64(d+1)*msPerDay
		for _, id := range ids {
			if pending, err := hasKey(it, rollMarkKey(nil, id, d)); err != nil || pending {
				if err != nil {
					return nil, err
				}
				rep.Pending++
				continue
			}
			if sf, err := seriesFloorAt(it, id); err != nil {
				return nil, err
			} else if d < sf {
				continue
			}
			lkey := seriesKey(id)
			if !it.SeekGE(lkey) || !bytes.Equal(it.Key(), lkey) {
				continue // collected since the postings were written
			}
			ls, err := decodeLabels(lkey, it.Value())
			if err != nil {
				return nil, err
			}
			if samples, err = readRaw(it, id, lo+1, hi, samples[:0]); err != nil {
				return nil, fmt.Errorf("series %s, day %s: %w", ls, dayString(d), err)
			}
			day = dayBuckets(tiers, samples, day, true)
			rep.SeriesDays++
			if progress != nil && rep.SeriesDays%100_000 == 0 {
				progress(rep.SeriesDays)
			}
			for _, t := range tiers {
				if !keep(t, ls, d) {
					continue // dropped by the tier's retention, or about to be
				}
				want := day[t.idx]
				blk = blk[:0]
				for p := lo / t.span; p <= (hi-1)/t.span; p++ {
					key := rollupKey(nil, t.idx, uint32(p), id, p*t.span)
					var all []rollup.Bucket
					if all, _, err = getBlock(r, all, key); err != nil {
						diff(ls, t, p*t.span, "block unreadable: %v", err)
						continue
					}
					for _, b := range all {
						if b.Start >= lo && b.Start < hi {
							blk = append(blk, b)
						}
					}
				}
				compareBuckets(len(blk), len(want), func(i int) int64 { return blk[i].Start }, func(j int) int64 { return want[j].Start },
					func(i int) { diff(ls, t, blk[i].Start, "stored, but the raw samples have none") },
					func(j int) { diff(ls, t, want[j].Start, "missing (%d raw samples)", want[j].Count) },
					func(i, j int) {
						rep.Buckets++
						if what := bucketDiff(&blk[i], &want[j], t.sketches); what != "" {
							diff(ls, t, want[j].Start, "%s", what)
						}
					})
			}
			// Native histograms: the same, from the day's histogram
			// samples and the histogram blocks.
			if hraw, err = readHistRaw(it, id, lo+1, hi, hraw[:0]); err != nil {
				return nil, fmt.Errorf("series %s, day %s: %w", ls, dayString(d), err)
			}
			hday = dayHistBuckets(tiers, hraw, hday)
			for _, t := range tiers {
				if !keep(t, ls, d) {
					continue
				}
				want := hday[t.idx]
				var stored []rollup.HistBucket
				for p := lo / t.span; p <= (hi-1)/t.span; p++ {
					all, _, err := getHistBlock(r, nil, histRollupKey(nil, t.idx, uint32(p), id, p*t.span))
					if err != nil {
						diff(ls, t, p*t.span, "histogram block unreadable: %v", err)
						continue
					}
					for _, b := range all {
						if b.Start >= lo && b.Start < hi {
							stored = append(stored, b)
						}
					}
				}
				compareBuckets(len(stored), len(want), func(i int) int64 { return stored[i].Start }, func(j int) int64 { return want[j].Start },
					func(i int) { diff(ls, t, stored[i].Start, "histograms stored, but the raw samples have none") },
					func(j int) { diff(ls, t, want[j].Start, "histograms missing (%d raw samples)", want[j].Count) },
					func(i, j int) {
						rep.Buckets++
						if what := histBucketDiff(&stored[i], &want[j]); what != "" {
							diff(ls, t, want[j].Start, "histograms: %s", what)
						}
					})
			}
		}
		d++
	}
	rep.Took = time.Since(start)
	return rep, nil
}

// compareBuckets walks two bucket lists sorted by start (got, want of
// lengths ng, nw), calling extra for a bucket only got has, missing for
// one only want has, and both for a pair.
func compareBuckets(ng, nw int, gs, ws func(int) int64, extra, missing func(int), both func(i, j int)) {
	i, j := 0, 0
	for i < ng || j < nw {
		switch {
		case j == nw || i < ng && gs(i) < ws(j):
			extra(i)
			i++
		case i == ng || ws(j) < gs(i):
			missing(j)
			j++
		default:
			both(i, j)
			i++
			j++
		}
	}
}

func hasKey(it *pebble.Iterator, k []byte) (bool, error) {
	if it.SeekGE(k) && bytes.Equal(it.Key(), k) {
		return true, nil
	}
	return false, it.Error()
}

// bucketDiff names the first field of got that differs from want.
func bucketDiff(got, want *rollup.Bucket, sketches bool) string {
	f := func(name string, g, w float64) string {
		if math.Float64bits(g) != math.Float64bits(w) && !(math.IsNaN(g) && math.IsNaN(w)) {
			return fmt.Sprintf("%s %v, raw samples give %v", name, g, w)
		}
		return ""
	}
	for _, c := range []struct {
		name string
		g, w float64
	}{
		{"count", float64(got.Count), float64(want.Count)}, {"sum", got.Sum, want.Sum}, {"min", got.Min, want.Min},
		{"max", got.Max, want.Max}, {"first", got.First, want.First}, {"last", got.Last, want.Last},
		{"increase", got.Increase, want.Increase}, {"first time", float64(got.FirstT), float64(want.FirstT)},
		{"last time", float64(got.LastT), float64(want.LastT)},
	} {
		if s := f(c.name, c.g, c.w); s != "" {
			return s
		}
	}
	if sketches && !bytes.Equal(got.Sketch.AppendBinary(nil), want.Sketch.AppendBinary(nil)) {
		return "quantile sketch differs"
	}
	return ""
}
