package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// The downsampler rolls up whole series-days, listed by the roll markers
// (rollmark.go), from the raw chunks Pebble holds: every tier's buckets
// of the day at once (5m buckets from the samples, 1h from the 5m ones,
// 1d from the 1h ones), so that a tier never depends on a finer tier
// still being there. A day is rolled up once it is over (RollupDelay
// after its end) and quiet (no checkpoint wrote into it for two
// checkpoint intervals): a day being backfilled or caught up on is
// rolled up once, after its samples stop coming, whatever order they
// came in. Until then, queries compute the day from its raw samples.
//
// Two modes, chosen by the raw floor (rollmark.go):
//   - replace, for a day whose raw partition is whole: its buckets are
//     computed from its samples and replace the tiers' buckets of the day
//     (running twice gives the same result: a crash anywhere is safe);
//   - merge, for a day dropped by retention that took samples since:
//     they are added to the tiers' buckets (rollup.Bucket.AddLate) and
//     their chunks deleted, in one batch, only if the marker is unchanged
//     (a sample is merged once or not at all).

func (db *DB) checkClosing() error {
	select {
	case <-db.closing:
		return series.ErrClosed
	default:
		return nil
	}
}

// rollupQuiet is how long a day must go without a write before it is
// rolled up (by default two checkpoints): a day still being written is
// not rolled up again after every checkpoint.
func (db *DB) rollupQuiet() time.Duration { return db.opts.RollupQuiet }

// rollBatchMarkers bounds the markers one step of RunRollups reads,
// computes and commits: the downsampler's memory does not follow its
// backlog.
const rollBatchMarkers = 256

// RunRollups rolls up every series-day that is due. It is what the
// background job runs every RollupInterval; calling it directly is safe.
func (db *DB) RunRollups() error {
	if len(db.tiers) == 0 {
		return nil
	}
	db.rollupMu.Lock()
	defer db.rollupMu.Unlock()
	if db.closed.Load() {
		return series.ErrClosed
	}
	snap := db.pdb.NewSnapshot()
	defer snap.Close()
	floor, _, err := readFloor(snap)
	if err != nil {
		return err
	}
	now := db.opts.Now()
	due := db.dueRule(now)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{kindRollMark}, UpperBound: []byte{kindRollMark + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	started, days, merged := time.Now(), 0, 0
	var bl RollupBacklog
	oldest := uint64(1<<63 - 1)
	var batch []dayWork
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, m, err := db.rollBatch(snap, floor, batch, now.UnixMilli())
		days += n
		merged += m
		batch = batch[:0]
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		id, day, gen, ok := parseRollMark(it.Key(), it.Value())
		if !ok {
			continue
		}
		switch due(day, gen) {
		case dayOpen:
			bl.Open++
			continue
		case dayWaiting:
			bl.Waiting++
			continue
		}
		bl.Due++
		oldest = min(oldest, gen)
		// A batch ends between series: a series' days are rolled up
		// together, as they share the coarser tiers' blocks.
		if len(batch) >= rollBatchMarkers && batch[len(batch)-1].id != id {
			if err := db.checkClosing(); err != nil {
				return err
			}
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, dayWork{id: id, day: day, gen: gen})
	}
	if err := it.Error(); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	bl.Due -= days
	if bl.Due > 0 {
		bl.OldestDue = max(now.Sub(time.Unix(0, int64(oldest))), 0)
	}
	bl.At = now
	db.backlogMu.Lock()
	db.backlog = bl
	db.backlogMu.Unlock()
	if days > 0 {
		db.opts.Logger.Info("rollup", "series_days", days, "merged_late_days", merged, "took", time.Since(started).Round(time.Millisecond))
	}
	return nil
}

// States of a marked day.
const (
	dayOpen    = iota // not over
	dayWaiting        // over, but written to lately
	dayDue            // to roll up
)

// dueRule returns the state of a marked day: due once over, and quiet or
// close to the end of the raw retention (it must be rolled up before its
// raw samples may go).
func (db *DB) dueRule(now time.Time) func(day uint32, gen uint64) int {
	settled := db.settledBefore(now.UnixMilli())
	quiet := uint64(max(now.Add(-db.rollupQuiet()).UnixNano(), 0))
	shortest := min(db.opts.Retention, db.shortestRule(-1))
	urgent := now.UnixMilli() - shortest.Milliseconds() + 2*msPerDay
	return func(day uint32, gen uint64) int {
		end := int64(day+1) * msPerDay
		switch {
		case end > settled:
			return dayOpen
		case gen <= quiet || end <= urgent:
			return dayDue
		}
		return dayWaiting
	}
}

// dayWork is one marked series-day and, once computed, what to write.
type dayWork struct {
	id    uint64
	day   uint32
	gen   uint64
	merge bool
	// replace: the day's buckets, per tier, and its native histograms'
	tiers  [][]rollup.Bucket
	htiers [][]rollup.HistBucket
	// merge: the samples to add and the chunk keys to delete, floats'
	// and histograms'
	samples  []series.Sample
	keys     [][]byte
	hsamples []series.HistSample
	hkeys    [][]byte
	err      error
}

// rollBatch computes a batch of series-days from snap, shared between
// RollupWorkers goroutines by series, and commits them, series by series.
// It returns the days done and how many of them merged late samples.
func (db *DB) rollBatch(snap *pebble.Snapshot, floor uint32, batch []dayWork, now int64) (int, int, error) {
	shards := max(db.opts.RollupWorkers, 1)
	// Series runs of the batch: [start, end) per series.
	var runs [][2]int
	for i := 0; i < len(batch); {
		j := i + 1
		for j < len(batch) && batch[j].id == batch[i].id {
			j++
		}
		runs = append(runs, [2]int{i, j})
		i = j
	}
	errs := make([]error, shards)
	var wg sync.WaitGroup
	for k := 0; k < shards; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = db.computeDays(snap, floor, batch, runs, k, shards)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, 0, err
	}
	return db.commitDays(batch, runs, now)
}

// computeDays reads and buckets the series-days of the runs of one shard.
func (db *DB) computeDays(snap *pebble.Snapshot, floor uint32, batch []dayWork, runs [][2]int, shard, shards int) error {
	it, err := snap.NewIter(nil)
	if err != nil {
		return err
	}
	defer it.Close()
	var buf []series.Sample
	var hbuf []series.HistSample
	hists := db.hasHist.Load()
	for ri, r := range runs {
		if ri%shards != shard {
			continue
		}
		id := batch[r[0]].id
		sf, err := seriesFloor(snap, id)
		if err != nil {
			return err
		}
		for i := r[0]; i < r[1]; i++ {
			w := &batch[i]
			w.merge = w.day < max(floor, sf)
			if w.merge {
				w.samples, w.keys, err = readPartition(it, id, w.day, nil, nil)
				if err == nil && hists {
					w.hsamples, w.hkeys, err = readHistPartition(it, id, w.day)
				}
				if err != nil {
					return fmt.Errorf("series %d, day %s: %w", id, dayString(w.day), err)
				}
				continue
			}
			lo := int64(w.day) * msPerDay
			if buf, err = readRaw(it, id, lo+1, lo+msPerDay, buf[:0]); err != nil {
				return fmt.Errorf("series %d, day %s: %w", id, dayString(w.day), err)
			}
			w.tiers = dayBuckets(db.tiers, buf, nil, true)
			if hists {
				if hbuf, err = readHistRaw(it, id, lo+1, lo+msPerDay, hbuf[:0]); err != nil {
					return fmt.Errorf("series %d, day %s: %w", id, dayString(w.day), err)
				}
				if len(hbuf) > 0 {
					// The buckets keep some of the samples: a copy of
					// the slice (the histograms are the read's own).
					w.htiers = dayHistBuckets(db.tiers, hbuf, nil)
				}
			}
			// Background work: let a query waiting for the CPU in (a
			// series-day takes about a millisecond, the scheduler's own
			// slice is ten).
			runtime.Gosched()
		}
	}
	return nil
}

// dayBuckets buckets samples (sorted, one day) at every tier's
// resolution: the finest from the samples, in time order, each coarser
// one by merging the buckets of the one before, so that a bucket is the
// same whether it was computed here, on the fly for a query, or checked
// by `headroom check --tiers`. Stale markers are skipped, as range
// functions skip them. The sketches of the first tier that keeps them
// are made from the samples (the finer tiers keep none), and merged up
// from there; with sketches false, for a query that reads no quantile,
// none is made.
func dayBuckets(tiers []*tierState, samples []series.Sample, dst [][]rollup.Bucket, sketches bool) [][]rollup.Bucket {
	dst = slices.Grow(dst[:0], len(tiers))[:len(tiers)]
	for i := range dst {
		dst[i] = dst[i][:0]
	}
	if len(tiers) == 0 {
		return dst
	}
	res := tiers[0].res
	bs := dst[0]
	for i, p := range samples {
		if series.IsStaleNaN(p.V) {
			continue
		}
		if i&1023 == 1023 {
			runtime.Gosched()
		}
		start := rollup.BucketStart(p.T, res)
		if len(bs) == 0 || bs[len(bs)-1].Start != start {
			bs = append(bs, rollup.Bucket{Start: start})
		}
		if sketches && tiers[0].sketches {
			bs[len(bs)-1].Add(p.T, p.V)
		} else {
			bs[len(bs)-1].AddStats(p.T, p.V)
		}
	}
	dst[0] = bs
	// Without sketches (a query that reads no quantile), none is made:
	// a sketch costs a logarithm a sample, most of the work here.
	sketched := tiers[0].sketches || !sketches
	for k := 1; k < len(tiers); k++ {
		dst[k] = mergeUp(dst[k-1], tiers[k].res, dst[k])
		if !sketched && tiers[k].sketches {
			sketched = true
			out, j := dst[k], 0
			for _, p := range samples {
				if series.IsStaleNaN(p.V) {
					continue
				}
				start := rollup.BucketStart(p.T, tiers[k].res)
				for out[j].Start != start {
					j++
				}
				out[j].Sketch.Add(p.V)
			}
		}
	}
	return dst
}

// mergeUp merges buckets (in time order) into buckets of resolution res.
func mergeUp(in []rollup.Bucket, res int64, out []rollup.Bucket) []rollup.Bucket {
	out = out[:0]
	for i := range in {
		start := rollup.Align(in[i].Start, res)
		if len(out) == 0 || out[len(out)-1].Start != start {
			out = append(out, rollup.Bucket{Start: start})
		}
		out[len(out)-1].Merge(&in[i])
	}
	return out
}

// readRaw appends series id's stored samples in [mint, maxt] (a day at
// most) to dst in time order, reading the day partitions of both rules
// (dayOf, closedDayOf) that can hold them.
func readRaw(it *pebble.Iterator, id uint64, mint, maxt int64, dst []series.Sample) ([]series.Sample, error) {
	start := len(dst)
	sorted := true
	var cit chunk.Iterator
	err := eachStoredChunk(it, kindChunk, id, dayOf(mint), closedDayOf(maxt), mint, maxt, func(k, chk []byte, minT int64) error {
		if n := len(dst); n > start && minT <= dst[n-1].T {
			sorted = false
		}
		cit.Reset(chk)
		for cit.Next() {
			t, v := cit.At()
			if t >= mint && t <= maxt {
				dst = append(dst, series.Sample{T: t, V: v})
			}
		}
		if err := cit.Err(); err != nil {
			return &CorruptionError{Key: append([]byte(nil), k...), Err: err}
		}
		return nil
	})
	if err != nil {
		return dst, err
	}
	if !sorted {
		// Chunks of the two partition rules, or copies, overlapping:
		// keep one sample a timestamp.
		s := dst[start:]
		sort.SliceStable(s, func(i, j int) bool { return s[i].T < s[j].T })
		s = slices.CompactFunc(s, func(a, b series.Sample) bool { return a.T == b.T })
		dst = dst[:start+len(s)]
	}
	return dst, nil
}

// eachStoredChunk calls f with each stored chunk of series id of kind
// (kindChunk, kindHistChunk) in day partitions first to last that
// overlaps [mint, maxt], in key order.
func eachStoredChunk(it *pebble.Iterator, kind byte, id uint64, first, last uint32, mint, maxt int64, f func(key, chk []byte, minT int64) error) error {
	for d := first; d <= last; d++ {
		prefix := chunkKey(nil, d, id, 0)[:13]
		prefix[0] = kind
		end := prefixEnd(prefix)
		for valid := it.SeekGE(prefix); valid && bytes.Compare(it.Key(), end) < 0; valid = it.Next() {
			k := it.Key()
			maxT, chk, err := parseChunkValue(k, it.Value())
			if err != nil {
				return err
			}
			_, _, minT, _ := parseChunkKey(k)
			if maxT < mint || minT > maxt {
				continue
			}
			// Background work yields often: a query waiting for the CPU
			// runs within microseconds, not a scheduler slice.
			runtime.Gosched()
			if err := f(k, chk, minT); err != nil {
				return err
			}
		}
		if err := it.Error(); err != nil {
			return err
		}
	}
	return nil
}

// readPartition appends every sample of series id's chunks in day
// partition day to dst, and their keys to keys.
func readPartition(it *pebble.Iterator, id uint64, day uint32, dst []series.Sample, keys [][]byte) ([]series.Sample, [][]byte, error) {
	prefix := chunkKey(nil, day, id, 0)[:13]
	end := prefixEnd(prefix)
	var cit chunk.Iterator
	for valid := it.SeekGE(prefix); valid && bytes.Compare(it.Key(), end) < 0; valid = it.Next() {
		k := it.Key()
		_, chk, err := parseChunkValue(k, it.Value())
		if err != nil {
			return dst, keys, err
		}
		keys = append(keys, append([]byte(nil), k...))
		cit.Reset(chk)
		for cit.Next() {
			t, v := cit.At()
			dst = append(dst, series.Sample{T: t, V: v})
		}
		if err := cit.Err(); err != nil {
			return dst, keys, &CorruptionError{Key: append([]byte(nil), k...), Err: err}
		}
	}
	return dst, keys, it.Error()
}

// commitDays writes the computed days of the batch, series by series, in
// batches under cpMu: a marker is deleted (and a merge applied) only if
// no checkpoint set it again since the snapshot the days were computed
// from.
func (db *DB) commitDays(batch []dayWork, runs [][2]int, now int64) (done, merged int, err error) {
	b := db.pdb.NewBatch()
	defer func() { b.Close() }()
	db.cpMu.Lock()
	locked := true
	defer func() {
		if locked {
			db.cpMu.Unlock()
		}
	}()
	var blk []rollup.Bucket
	var enc, key []byte
	for _, r := range runs {
		ws := batch[r[0]:r[1]]
		id := ws[0].id
		ls, err := db.storedLabels(id)
		if errors.Is(err, pebble.ErrNotFound) {
			// Collected by retention meanwhile: nothing keeps its data.
			for _, w := range ws {
				if err := b.Delete(rollMarkKey(key[:0], id, w.day), nil); err != nil {
					return done, merged, err
				}
			}
			continue
		}
		if err != nil {
			return done, merged, err
		}
		same := make([]bool, len(ws))
		for i := range ws {
			v, closer, err := db.pdb.Get(rollMarkKey(key[:0], id, ws[i].day))
			if err == nil {
				same[i] = len(v) == 8 && binary.BigEndian.Uint64(v) == ws[i].gen
				closer.Close()
			} else if !errors.Is(err, pebble.ErrNotFound) {
				return done, merged, err
			}
		}
		for _, t := range db.tiers {
			// The blocks of this tier the series' days change.
			parts := map[int64]bool{}
			for i, w := range ws {
				if !db.keeps(t.idx, ls, w.day, now) {
					continue
				}
				if !w.merge {
					lo := int64(w.day) * msPerDay
					for p := lo / t.span; p <= (lo+msPerDay-1)/t.span; p++ {
						parts[p] = true
					}
				} else if same[i] {
					for _, s := range w.samples {
						parts[rollup.BucketStart(s.T, t.res)/t.span] = true
					}
				}
			}
			order := make([]int64, 0, len(parts))
			for p := range parts {
				order = append(order, p)
			}
			slices.Sort(order)
			for _, p := range order {
				lo, hi := p*t.span, (p+1)*t.span
				key = rollupKey(key[:0], t.idx, uint32(p), id, lo)
				whole := false // the block is wholly replaced: no need to read it
				for _, w := range ws {
					if !w.merge && int64(w.day)*msPerDay <= lo && int64(w.day+1)*msPerDay >= hi {
						whole = true
					}
				}
				blk = blk[:0]
				if !whole {
					if blk, _, err = getBlock(db.pdb, blk, key); err != nil {
						return done, merged, fmt.Errorf("series %d: %v block %d: %w", id, t.Resolution, p, err)
					}
				}
				for i, w := range ws {
					if !db.keeps(t.idx, ls, w.day, now) {
						continue
					}
					if !w.merge {
						blk = spliceDay(blk, w.tiers[t.idx], max(lo, int64(w.day)*msPerDay), min(hi, int64(w.day+1)*msPerDay))
					} else if same[i] {
						blk = addLate(blk, w.samples, t.res, lo, hi)
					}
				}
				if enc, err = writeBlock(b, t, key, id, ls, blk, enc); err != nil {
					return done, merged, err
				}
				t.buckets.Add(int64(len(blk)))
			}
			if err := db.commitHistParts(b, t, id, ls, ws, same, now, &enc); err != nil {
				return done, merged, err
			}
		}
		for i, w := range ws {
			if !same[i] {
				continue
			}
			if err := b.Delete(rollMarkKey(key[:0], id, w.day), nil); err != nil {
				return done, merged, err
			}
			done++
			if !w.merge {
				continue
			}
			merged++
			for _, k := range append(w.keys, w.hkeys...) {
				if err := b.Delete(k, nil); err != nil {
					return done, merged, err
				}
			}
			// The day's postings went with its partition; a later sample
			// writes them again.
			if err := deletePostings(b, w.day, id, ls); err != nil {
				return done, merged, err
			}
		}
		runtime.Gosched()
		if b.Len() >= 4<<20 {
			// Rolled-up blocks need no fsync: a crash loses them with the
			// marker deletions of the same batch, and they are computed
			// again.
			if err := db.commit(b, pebble.NoSync); err != nil {
				return done, merged, err
			}
			b.Close()
			b = db.pdb.NewBatch()
			// Let a waiting checkpoint in between batches.
			db.cpMu.Unlock()
			db.cpMu.Lock()
		}
	}
	if err := db.commit(b, pebble.NoSync); err != nil {
		return done, merged, err
	}
	db.cpMu.Unlock()
	locked = false
	return done, merged, nil
}

// commitHistParts writes the histogram blocks of tier t that series id's
// days (ws; same: the day's marker is unchanged) change: a replaced
// day's buckets, or the histograms a dropped day took since (merged
// only if its marker is unchanged, as floats are).
func (db *DB) commitHistParts(b *pebble.Batch, t *tierState, id uint64, ls series.Labels, ws []dayWork, same []bool, now int64, enc *[]byte) error {
	parts := map[int64]bool{}
	for i, w := range ws {
		if !db.keeps(t.idx, ls, w.day, now) {
			continue
		}
		switch {
		case w.merge && same[i]:
			for _, x := range w.hsamples {
				parts[rollup.BucketStart(x.T, t.res)/t.span] = true
			}
		case !w.merge && len(w.htiers) > 0 && len(w.htiers[t.idx]) > 0:
			lo := int64(w.day) * msPerDay
			for p := lo / t.span; p <= (lo+msPerDay-1)/t.span; p++ {
				parts[p] = true
			}
		}
	}
	if len(parts) == 0 {
		return nil
	}
	order := make([]int64, 0, len(parts))
	for p := range parts {
		order = append(order, p)
	}
	slices.Sort(order)
	var key []byte
	var blk []rollup.HistBucket
	for _, p := range order {
		lo, hi := p*t.span, (p+1)*t.span
		key = histRollupKey(key[:0], t.idx, uint32(p), id, lo)
		whole := false
		for _, w := range ws {
			if !w.merge && len(w.htiers) > 0 && int64(w.day)*msPerDay <= lo && int64(w.day+1)*msPerDay >= hi {
				whole = true
			}
		}
		blk = blk[:0]
		if !whole {
			var err error
			if blk, _, err = getHistBlock(db.pdb, blk, key); err != nil {
				return fmt.Errorf("series %d: %v histogram block %d: %w", id, t.Resolution, p, err)
			}
		}
		for i, w := range ws {
			switch {
			case !db.keeps(t.idx, ls, w.day, now):
			case w.merge && same[i]:
				blk = addLateHists(blk, w.hsamples, t.res, lo, hi)
			case !w.merge && len(w.htiers) > 0:
				blk = spliceHistDay(blk, w.htiers[t.idx], max(lo, int64(w.day)*msPerDay), min(hi, int64(w.day+1)*msPerDay))
			}
		}
		var err error
		if *enc, err = writeHistBlock(b, t, key, id, ls, blk, *enc); err != nil {
			return err
		}
	}
	return nil
}

// spliceDay replaces the buckets of blk (sorted) starting in [lo, hi)
// with day's buckets in that range.
func spliceDay(blk, day []rollup.Bucket, lo, hi int64) []rollup.Bucket {
	i := sort.Search(len(blk), func(i int) bool { return blk[i].Start >= lo })
	j := sort.Search(len(blk), func(j int) bool { return blk[j].Start >= hi })
	var in []rollup.Bucket
	for k := range day {
		if day[k].Start >= lo && day[k].Start < hi {
			in = append(in, day[k])
		}
	}
	return slices.Replace(blk, i, j, in...)
}

// addLate adds the samples whose buckets (at res) start in [lo, hi) to
// blk (sorted), creating buckets as needed.
func addLate(blk []rollup.Bucket, samples []series.Sample, res, lo, hi int64) []rollup.Bucket {
	for _, s := range samples {
		if series.IsStaleNaN(s.V) {
			continue
		}
		start := rollup.BucketStart(s.T, res)
		if start < lo || start >= hi {
			continue
		}
		k := sort.Search(len(blk), func(k int) bool { return blk[k].Start >= start })
		if k == len(blk) || blk[k].Start != start {
			blk = slices.Insert(blk, k, rollup.Bucket{Start: start})
		}
		blk[k].AddLate(s.T, s.V)
	}
	return blk
}

// RollupProgress is a tier's progress, for /metrics and logs.
type RollupProgress struct {
	Resolution time.Duration
	Buckets    int64 // buckets written since Open
}

// RollupProgress returns each tier's progress.
func (db *DB) RollupProgress() []RollupProgress {
	out := make([]RollupProgress, len(db.tiers))
	for i, t := range db.tiers {
		out[i] = RollupProgress{t.Resolution, t.buckets.Load()}
	}
	return out
}

// RollupBacklog is the downsampler's work as its last run found it: the
// series-days marked, by state, and how long the oldest due one had
// waited.
type RollupBacklog struct {
	Open    int // the day is not over yet (today's, mostly)
	Waiting int // over, and written to in the last two checkpoint intervals
	Due     int // to roll up now
	// OldestDue: how long ago the oldest due day was last written.
	OldestDue time.Duration
	At        time.Time // when it was counted (zero: no run yet)
}

// RollupPending returns the backlog the last run of the downsampler left
// (counted as it scanned, less what it did), so that /metrics does not
// scan the markers.
func (db *DB) RollupPending() RollupBacklog {
	db.backlogMu.Lock()
	defer db.backlogMu.Unlock()
	return db.backlog
}

// RollupWorkers is the number of goroutines a rollup batch is split
// between (Options.RollupWorkers with its default applied).
func (db *DB) RollupWorkers() int { return db.opts.RollupWorkers }
