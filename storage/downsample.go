package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// Tier is one downsampled resolution and how long its buckets are kept.
type Tier struct {
	Resolution time.Duration
	Retention  time.Duration
}

// DefaultTiers are the rollups kept when Options.Tiers is nil: 5 minutes
// for 90 days, 1 hour for 2 years, 1 day for 10 years.
var DefaultTiers = []Tier{
	{5 * time.Minute, 90 * 24 * time.Hour},
	{time.Hour, 730 * 24 * time.Hour},
	{24 * time.Hour, 3650 * 24 * time.Hour},
}

// blockBuckets is how many buckets a rollup block (one Pebble value per
// series and partition) spans: a day of 5-minute buckets.
const blockBuckets = 288

// rollupPartBase marks postings partitions of rollup tiers: raw day
// partitions stay far below it (day 2,932,896 is the year 9999), so raw
// queries and raw retention never see them.
const rollupPartBase = 0x80000000

// tierState is a tier's configuration and progress.
type tierState struct {
	Tier
	idx       int
	res, span int64 // ms
	// watermark: every bucket before it has been rolled up (ms).
	// Persisted in meta. markAt (tier 0): a sample committed into a
	// bucket before it marks the bucket dirty; it moves ahead of the
	// watermark while a window is read, so that the window's readers
	// (queries) never see the watermark ahead of the written blocks.
	watermark atomic.Int64
	markAt    atomic.Int64
	buckets   atomic.Int64 // buckets written, for /metrics
}

func validateTiers(ts []Tier) error {
	if len(ts) > 8 {
		return fmt.Errorf("%d rollup tiers: at most 8", len(ts))
	}
	for i, t := range ts {
		if t.Resolution < time.Minute || t.Resolution%time.Second != 0 {
			return fmt.Errorf("rollup tier %d: resolution %v must be whole seconds, at least 1m", i, t.Resolution)
		}
		if t.Retention <= 0 {
			return fmt.Errorf("rollup tier %v: retention %v must be positive", t.Resolution, t.Retention)
		}
		if i > 0 {
			prev := ts[i-1].Resolution
			// Each tier is built from the one before, one source block at a
			// time: its buckets must tile the source's blocks.
			if t.Resolution <= prev || t.Resolution%prev != 0 || (blockBuckets*prev)%t.Resolution != 0 {
				return fmt.Errorf("rollup tier %v after %v: each resolution must be a multiple of the previous one that divides %d of its buckets", t.Resolution, prev, blockBuckets)
			}
		}
	}
	return nil
}

func rollupKey(dst []byte, tier int, part uint32, id uint64, start int64) []byte {
	dst = append(dst, kindRollup, byte(tier))
	dst = binary.BigEndian.AppendUint32(dst, part)
	dst = binary.BigEndian.AppendUint64(dst, id)
	return binary.BigEndian.AppendUint64(dst, uint64(start))
}

func dirtyKey(dst []byte, tier int, bucket int64, id uint64) []byte {
	dst = append(dst, kindDirty, byte(tier))
	dst = binary.BigEndian.AppendUint64(dst, uint64(bucket))
	return binary.BigEndian.AppendUint64(dst, id)
}

func watermarkKey(res int64) []byte { return metaKey(fmt.Sprintf("rollup-watermark-%d", res)) }

// postingsPart is the postings partition of tier partition part.
func postingsPart(tier int, part int64) uint32 {
	return rollupPartBase | uint32(tier)<<24 | uint32(part)&0xffffff
}

func (db *DB) initRollups() error {
	for i, t := range db.opts.Tiers {
		ts := &tierState{Tier: t, idx: i, res: t.Resolution.Milliseconds()}
		ts.span = blockBuckets * ts.res
		v, closer, err := db.pdb.Get(watermarkKey(ts.res))
		switch {
		case errors.Is(err, pebble.ErrNotFound):
			ts.watermark.Store(MinTime)
			ts.markAt.Store(MinTime)
		case err != nil:
			return err
		default:
			if len(v) != 8 {
				closer.Close()
				return fmt.Errorf("rollup watermark of %v: %d bytes", t.Resolution, len(v))
			}
			ts.watermark.Store(int64(binary.BigEndian.Uint64(v)))
			ts.markAt.Store(ts.watermark.Load())
			closer.Close()
		}
		db.tiers = append(db.tiers, ts)
	}
	return nil
}

// markDirty adds a dirty marker to b for every sample of the commit that
// falls before the first tier's watermark: its bucket was rolled up
// already and must be again. Called under seqMu, which the downsampler
// takes to move a watermark, so that no commit is missed by both.
//
// The first tier's markers end with the commit's sequence number: each
// commit's marker is a key of its own. With one key per bucket, the
// downsampler deleting the marker it had handled also deleted the same
// key set again by a commit after its read, and those late samples were
// never rolled up.
func (a *Appender) markDirty(b *pebble.Batch, seq uint64) {
	if len(a.db.tiers) == 0 || rollup.BucketStart(a.minT, a.db.tiers[0].res) >= a.db.tiers[0].markAt.Load() {
		return
	}
	t0 := a.db.tiers[0]
	w := t0.markAt.Load()
	var k []byte
	for _, p := range a.samples {
		if start := rollup.BucketStart(p.t, t0.res); start < w {
			k = binary.BigEndian.AppendUint64(dirtyKey(k[:0], 0, start, p.s.id), seq)
			b.Set(k, nil, nil)
		}
	}
}

// RollupProgress is a tier's progress, for /metrics and logs.
type RollupProgress struct {
	Resolution time.Duration
	Watermark  int64 // ms: every bucket before it is rolled up
	Buckets    int64 // buckets written since Open
}

// RollupProgress returns each tier's progress.
func (db *DB) RollupProgress() []RollupProgress {
	out := make([]RollupProgress, len(db.tiers))
	for i, t := range db.tiers {
		out[i] = RollupProgress{t.Resolution, t.watermark.Load(), t.buckets.Load()}
	}
	return out
}

// RunRollups brings every tier up to date: dirty buckets first, then the
// new buckets from each tier's watermark to what its source has
// complete. It is what the background job runs every RollupInterval.
// Every step is a Pebble batch that writes blocks, postings, the removal
// of the dirty markers it handled and the new watermark together: a crash
// at any point leaves a state from which running again gives the same
// rollups.
func (db *DB) RunRollups() error {
	db.rollupMu.Lock()
	defer db.rollupMu.Unlock()
	if err := db.rollBackfill(); err != nil {
		return fmt.Errorf("rollup: backfill: %w", err)
	}
	for _, t := range db.tiers {
		if err := db.rollDirty(t); err != nil {
			return fmt.Errorf("rollup %v: late samples: %w", t.Resolution, err)
		}
		if err := db.rollForward(t); err != nil {
			return fmt.Errorf("rollup %v: %w", t.Resolution, err)
		}
	}
	return nil
}

// RollupWorkers is the number of goroutines a rollup window is split
// between (Options.RollupWorkers with its default applied).
func (db *DB) RollupWorkers() int { return db.opts.RollupWorkers }

// sourceEnd is the time before which tier t's source is complete.
func (db *DB) sourceEnd(t *tierState) int64 {
	if t.idx == 0 {
		return db.opts.Now().UnixMilli() - db.opts.RollupDelay.Milliseconds()
	}
	return db.tiers[t.idx-1].watermark.Load()
}

// rollForward rolls up [watermark, source end) window by window, a window
// being at most one of the source's blocks (raw: one day).
func (db *DB) rollForward(t *tierState) error {
	end := rollup.Align(db.sourceEnd(t), t.res)
	w := t.watermark.Load()
	if w == MinTime {
		first, ok, err := db.firstSourceTime(t)
		if err != nil || !ok {
			return err
		}
		w = rollup.BucketStart(first, t.res)
	}
	srcSpan := int64(msPerDay)
	if t.idx > 0 {
		srcSpan = db.tiers[t.idx-1].span
	}
	started, windows := time.Now(), 0
	for w < end {
		if err := db.checkClosing(); err != nil {
			return err
		}
		next := min(end, rollup.Align(w, srcSpan)+srcSpan)
		if err := db.rollWindow(t, w, next); err != nil {
			return err
		}
		w = next
		windows++
	}
	if windows > 0 {
		db.opts.Logger.Info("rollup", "resolution", t.Resolution.String(), "windows", windows,
			"watermark", time.UnixMilli(w).UTC().Format(time.RFC3339), "took", time.Since(started).Round(time.Millisecond))
	}
	return nil
}

func (db *DB) checkClosing() error {
	select {
	case <-db.closing:
		return series.ErrClosed
	default:
		return nil
	}
}

// firstSourceTime finds where tier t starts: the first raw day partition
// with postings, or the first block of the tier below.
func (db *DB) firstSourceTime(t *tierState) (int64, bool, error) {
	it, err := db.pdb.NewIter(nil)
	if err != nil {
		return 0, false, err
	}
	defer it.Close()
	if t.idx == 0 {
		if !it.SeekGE([]byte{kindPostings}) || it.Key()[0] != kindPostings || len(it.Key()) < 5 {
			return 0, false, it.Error()
		}
		day := binary.BigEndian.Uint32(it.Key()[1:])
		if day >= rollupPartBase {
			return 0, false, nil
		}
		return int64(day) * msPerDay, true, nil
	}
	src := t.idx - 1
	if !it.SeekGE([]byte{kindRollup, byte(src)}) || len(it.Key()) != 22 || it.Key()[0] != kindRollup || it.Key()[1] != byte(src) {
		return 0, false, it.Error()
	}
	return int64(binary.BigEndian.Uint64(it.Key()[14:])), true, nil
}

// rollWindow computes tier t's buckets in [from, to) from its source and
// writes them, then moves the watermark to `to`.
func (db *DB) rollWindow(t *tierState, from, to int64) error {
	// Commits from here on mark samples before `to` dirty; commits before
	// are applied (visible to the read below) once the wait returns.
	if t.idx == 0 {
		db.seqMu.Lock()
		t.markAt.Store(to)
		last := db.nextSeq - 1
		db.seqMu.Unlock()
		db.waitApplied(last)
	}
	// The series are split between RollupWorkers goroutines by ID, each
	// with its own batches; the watermark goes in a batch of its own
	// after every shard's blocks are committed, so a crash before it
	// leaves a window that the next run computes again, whole.
	shards := db.opts.RollupWorkers
	writers := make([]*rollupWriter, shards)
	errs := make([]error, shards)
	var wg sync.WaitGroup
	for k := range writers {
		w := db.newRollupWriter(t)
		writers[k] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = db.eachSourceSeries(t, from, to, k, shards, func(id uint64, ls series.Labels, bs []rollup.Bucket) error {
				return w.put(id, ls, from, to, bs)
			})
			if errs[k] == nil {
				errs[k] = w.finish(nil)
			} else {
				w.b.Close()
			}
		}()
	}
	wg.Wait()
	err := errors.Join(errs...)
	if err == nil {
		b := db.pdb.NewBatch()
		b.Set(watermarkKey(t.res), binary.BigEndian.AppendUint64(nil, uint64(to)), nil)
		err = db.commit(b, pebble.Sync)
		b.Close()
	}
	if err != nil {
		if t.idx == 0 {
			t.markAt.Store(from) // not done: later commits need no marker for it, earlier ones are in the source
		}
		return err
	}
	t.watermark.Store(to) // published once the blocks are written
	return nil
}

func (db *DB) waitApplied(seq uint64) {
	db.applyMu.Lock()
	for db.appliedSeq < seq {
		db.applyCond.Wait()
	}
	db.applyMu.Unlock()
}

// eachSourceSeries calls f with every series of shard (of shards, see
// shardOf) that has data in [from, to) in tier t's source, and its
// buckets at t's resolution.
func (db *DB) eachSourceSeries(t *tierState, from, to int64, shard, shards int, f func(id uint64, ls series.Labels, bs []rollup.Bucket) error) error {
	mine := func(id uint64) bool { return shards <= 1 || shardOf(id, shards) == shard }
	if t.idx == 0 {
		return db.eachRawSeries(t, from, to, nil, mine, f)
	}
	return db.eachTierSeries(t, from, to, nil, mine, f)
}

// eachRawSeries buckets raw samples.
// ids restricts the series (nil: all), and so does mine (nil: all).
func (db *DB) eachRawSeries(t *tierState, from, to int64, ids []uint64, mine func(uint64) bool, f func(uint64, series.Labels, []rollup.Bucket) error) error {
	// Buckets starting in [from, to) hold the samples in (from, to].
	q, err := db.Querier(from+1, to)
	if err != nil {
		return err
	}
	defer q.Close()
	q.ReuseBuffers()
	if ids == nil {
		days, err := q.days()
		if err != nil {
			return err
		}
		for _, d := range days {
			day, err := selectDay(q.it, d, nil)
			if err != nil {
				return err
			}
			ids = union(ids, day)
		}
	}
	var buf []series.Sample
	var bs []rollup.Bucket
	for _, id := range ids {
		if mine != nil && !mine(id) {
			continue
		}
		s, err := q.load(id)
		if err != nil {
			return err
		}
		if s == nil {
			continue
		}
		buf = s.it.(series.SampleAppender).AppendSamples(buf[:0])
		if err := s.it.Err(); err != nil {
			return fmt.Errorf("series %d: %w", id, err)
		}
		bs = bs[:0]
		for _, p := range buf {
			if series.IsStaleNaN(p.V) {
				continue // range functions skip stale markers
			}
			start := rollup.BucketStart(p.T, t.res)
			if len(bs) == 0 || bs[len(bs)-1].Start != start {
				bs = append(bs, rollup.Bucket{Start: start})
			}
			bs[len(bs)-1].Add(p.T, p.V)
		}
		if err := f(id, s.Labels, bs); err != nil {
			return err
		}
	}
	return nil
}

// eachTierSeries merges the source tier's buckets into t's.
func (db *DB) eachTierSeries(t *tierState, from, to int64, ids []uint64, mine func(uint64) bool, f func(uint64, series.Labels, []rollup.Bucket) error) error {
	src := db.tiers[t.idx-1]
	part := uint32(from / src.span)
	it, err := db.pdb.NewIter(nil)
	if err != nil {
		return err
	}
	defer it.Close()
	prefix := binary.BigEndian.AppendUint32([]byte{kindRollup, byte(src.idx)}, part)
	end := prefixEnd(prefix)
	var in, out []rollup.Bucket
	want := func(id uint64) bool {
		if ids == nil {
			return true
		}
		i := sort.Search(len(ids), func(i int) bool { return ids[i] >= id })
		return i < len(ids) && ids[i] == id
	}
	for valid := it.SeekGE(prefix); valid && bytes.Compare(it.Key(), end) < 0; valid = it.Next() {
		k := it.Key()
		if len(k) != 22 {
			continue
		}
		id := binary.BigEndian.Uint64(k[6:])
		if !want(id) || mine != nil && !mine(id) {
			continue
		}
		if in, _, err = db.getBlock(in[:0], k); err != nil {
			return fmt.Errorf("series %d: %v block at %d: %w", id, src.Resolution, int64(binary.BigEndian.Uint64(k[14:])), err)
		}
		out = out[:0]
		for i := range in {
			b := &in[i]
			if b.Start < from || b.Start >= to {
				continue
			}
			start := rollup.Align(b.Start, t.res)
			if len(out) == 0 || out[len(out)-1].Start != start {
				out = append(out, rollup.Bucket{Start: start})
			}
			out[len(out)-1].Merge(b)
		}
		if len(out) == 0 {
			continue
		}
		ls, err := db.storedLabels(id)
		if err != nil {
			return fmt.Errorf("series %d: %w", id, err)
		}
		if err := f(id, ls, out); err != nil {
			return err
		}
	}
	return it.Error()
}

// sketchKey is the key of the sketch block of the column block at key:
// the same key under its own kind, so that the tier's column blocks lie
// together in Pebble's data blocks (and its cache) without the sketches.
func sketchKey(dst, key []byte) []byte {
	dst = append(dst, key...)
	dst[len(dst)-len(key)] = kindSketch
	return dst
}

// getBlock reads the block at key (columns and sketches) into dst;
// found is false when there is none.
func (db *DB) getBlock(dst []rollup.Bucket, key []byte) (out []rollup.Bucket, found bool, err error) {
	cols, c1, err := db.pdb.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return dst, false, nil
	}
	if err != nil {
		return dst, false, err
	}
	defer c1.Close()
	sk, c2, err := db.pdb.Get(sketchKey(nil, key))
	if err != nil {
		return dst, false, fmt.Errorf("sketches of a rollup block: %w", err)
	}
	defer c2.Close()
	out, err = rollup.DecodeBlock(dst, cols, sk)
	return out, true, err
}

// rollupWriter writes buckets into tier blocks: each block is read,
// its buckets in the window replaced, and written back, in batches.
type rollupWriter struct {
	db    *DB
	t     *tierState
	b     *pebble.Batch
	n     int64
	cur   []rollup.Bucket
	enc   []byte
	key   []byte
	dirty [][]byte // markers to delete with the blocks
}

func (db *DB) newRollupWriter(t *tierState) *rollupWriter {
	return &rollupWriter{db: db, t: t, b: db.pdb.NewBatch()}
}

// put replaces series id's buckets in [from, to) with bs (sorted, all in
// that window, which lies in one block).
func (w *rollupWriter) put(id uint64, ls series.Labels, from, to int64, bs []rollup.Bucket) error {
	t := w.t
	part := from / t.span
	if (to-1)/t.span != part {
		return fmt.Errorf("rollup window [%d, %d) spans two %v blocks", from, to, t.Resolution)
	}
	w.key = rollupKey(w.key[:0], t.idx, uint32(part), id, part*t.span)
	var err error
	if w.cur, _, err = w.db.getBlock(w.cur[:0], w.key); err != nil {
		return fmt.Errorf("series %d: %v block %d: %w", id, t.Resolution, part, err)
	}
	// Keep the block's buckets outside the window, then the new ones, in
	// time order.
	merged := make([]rollup.Bucket, 0, len(w.cur)+len(bs))
	i := 0
	for ; i < len(w.cur) && w.cur[i].Start < from; i++ {
		merged = append(merged, w.cur[i])
	}
	merged = append(merged, bs...)
	for ; i < len(w.cur); i++ {
		if w.cur[i].Start >= to {
			merged = append(merged, w.cur[i])
		}
	}
	if w.enc, err = writeBlock(w.b, t, w.key, id, ls, merged, w.enc); err != nil {
		return err
	}
	w.n += int64(len(bs))
	if w.b.Len() > 4<<20 {
		return w.flush()
	}
	return nil
}

// writeBlock sets (or, with no buckets, deletes) the column and sketch
// blocks of series id at key in b, with the series' postings of the
// tier's partition, so that a selection finds it after its raw days are
// gone.
// enc is scratch space (the batch copies what it is given), returned for
// reuse.
func writeBlock(b *pebble.Batch, t *tierState, key []byte, id uint64, ls series.Labels, bs []rollup.Bucket, enc []byte) ([]byte, error) {
	if len(bs) == 0 {
		if err := b.Delete(key, nil); err != nil {
			return enc, err
		}
		return enc, b.Delete(sketchKey(nil, key), nil)
	}
	enc, err := rollup.AppendBlock(enc[:0], bs)
	if err != nil {
		return enc, fmt.Errorf("series %d: %w", id, err)
	}
	if err := b.Set(key, enc, nil); err != nil {
		return enc, err
	}
	enc = rollup.AppendSketches(enc[:0], bs)
	if err := b.Set(sketchKey(nil, key), enc, nil); err != nil {
		return enc, err
	}
	pp := postingsPart(t.idx, int64(binary.BigEndian.Uint32(key[2:])))
	for _, l := range ls {
		if err := b.Set(binary.BigEndian.AppendUint64(postingPrefix(nil, pp, l.Name, l.Value), id), nil, nil); err != nil {
			return enc, err
		}
	}
	return enc, nil
}

func (w *rollupWriter) flush() error {
	if w.b.Empty() {
		return nil
	}
	if err := w.db.commit(w.b, pebble.Sync); err != nil {
		return err
	}
	w.t.buckets.Add(w.n)
	w.n = 0
	w.b.Close()
	w.b = w.db.pdb.NewBatch()
	return nil
}

// finish writes what is left, with last's additions (the watermark, the
// removal of dirty markers) in the final batch.
func (w *rollupWriter) finish(last func(*pebble.Batch) error) error {
	defer w.b.Close()
	for _, k := range w.dirty {
		if err := w.b.Delete(k, nil); err != nil {
			return err
		}
	}
	if last != nil {
		if err := last(w.b); err != nil {
			return err
		}
	}
	if err := w.db.commit(w.b, pebble.Sync); err != nil {
		return err
	}
	w.t.buckets.Add(w.n)
	return nil
}

// rollDirty recomputes tier t's buckets that late samples (tier 0) or
// recomputed buckets of the tier below changed, and marks the next tier's
// buckets that hold them.
func (db *DB) rollDirty(t *tierState) error {
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kindDirty, byte(t.idx)}, UpperBound: []byte{kindDirty, byte(t.idx) + 1}})
	if err != nil {
		return err
	}
	if t.idx == 0 {
		// A marker is committed with its samples, which reach the head
		// (where the raw read below finds them) only after the commit
		// returns: wait until every commit this view can hold is
		// applied, or a bucket would be rolled up again half-way through
		// its late samples and its marker deleted.
		db.seqMu.Lock()
		last := db.nextSeq - 1
		db.seqMu.Unlock()
		db.waitApplied(last)
	}
	// Group the markers by the source window (a block) they fall in.
	type mark struct {
		start int64
		id    uint64
		key   []byte
	}
	var marks []mark
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 18 && len(k) != 26 { // 26: a first-tier marker with its commit's sequence
			continue
		}
		marks = append(marks, mark{int64(binary.BigEndian.Uint64(k[2:])), binary.BigEndian.Uint64(k[10:]), append([]byte(nil), k...)})
	}
	if err := it.Close(); err != nil {
		return err
	}
	if len(marks) == 0 {
		return nil
	}
	srcSpan := int64(msPerDay)
	if t.idx > 0 {
		srcSpan = db.tiers[t.idx-1].span
	}
	sort.Slice(marks, func(i, j int) bool {
		wi, wj := rollup.Align(marks[i].start, srcSpan), rollup.Align(marks[j].start, srcSpan)
		if wi != wj {
			return wi < wj
		}
		return marks[i].id < marks[j].id
	})
	var next *tierState
	if t.idx+1 < len(db.tiers) {
		next = db.tiers[t.idx+1]
	}
	for i := 0; i < len(marks); {
		win := rollup.Align(marks[i].start, srcSpan)
		j := i
		var ids []uint64
		for ; j < len(marks) && rollup.Align(marks[j].start, srcSpan) == win; j++ {
			if len(ids) == 0 || ids[len(ids)-1] != marks[j].id {
				ids = append(ids, marks[j].id)
			}
		}
		// Recompute the whole window of these series: a block is rewritten
		// anyway, and the window is what the source is read by.
		from, to := win, win+srcSpan
		if wm := t.watermark.Load(); to > wm {
			to = wm // beyond the watermark the forward pass will do it
		}
		w := db.newRollupWriter(t)
		put := func(id uint64, ls series.Labels, bs []rollup.Bucket) error {
			if err := w.put(id, ls, from, to, bs); err != nil {
				return err
			}
			if next != nil && next.watermark.Load() > from {
				lastMarked := int64(MinTime) - 1
				for _, b := range bs {
					if nb := rollup.Align(b.Start, next.res); nb < next.watermark.Load() {
						if nb == lastMarked {
							continue
						}
						lastMarked = nb
						if err := w.b.Set(dirtyKey(nil, next.idx, nb, id), nil, nil); err != nil {
							return err
						}
					}
				}
			}
			return nil
		}
		if from < to {
			if t.idx == 0 {
				err = db.eachRawSeries(t, from, to, ids, nil, put)
			} else {
				err = db.eachTierSeries(t, from, to, ids, nil, put)
			}
			if err != nil {
				return err
			}
		}
		for _, m := range marks[i:j] {
			w.dirty = append(w.dirty, m.key)
		}
		if err := w.finish(nil); err != nil {
			return err
		}
		i = j
	}
	db.opts.Logger.Info("rollup: late samples rolled up again", "resolution", t.Resolution.String(), "buckets", len(marks))
	return nil
}

// RollupSeries is one series' buckets of a tier.
type RollupSeries struct {
	Labels  series.Labels
	Buckets []rollup.Bucket
}

// Rollups returns the buckets of tier (an index into Options.Tiers) that
// start in [mint, maxt], of the series the matchers select (all series
// with a metric name when there are none), in series ID order. Tests and
// tools use it; queries stream with EachRollup.
func (db *DB) Rollups(tier int, mint, maxt int64, ms ...*series.Matcher) ([]RollupSeries, error) {
	var out []RollupSeries
	err := db.EachRollup(tier, mint, maxt, rollup.ColAll, 0, 1, ms, func(ls series.Labels, c *rollup.Columns) error {
		var bs []rollup.Bucket
		for i := range c.Start {
			if c.Start[i] >= mint && c.Start[i] <= maxt {
				bs = append(bs, c.Bucket(i))
			}
		}
		if len(bs) > 0 {
			out = append(out, RollupSeries{Labels: ls, Buckets: bs})
		}
		return nil
	})
	return out, err
}

// TierInfo describes a tier to the query planner.
type TierInfo struct {
	Resolution time.Duration
	Watermark  int64 // ms: buckets starting before it are complete
	Oldest     int64 // ms: the tier's retention cutoff
}

// Tiers describes the rollup tiers, finest first.
func (db *DB) Tiers() []TierInfo {
	out := make([]TierInfo, len(db.tiers))
	now := db.opts.Now().UnixMilli()
	for i, t := range db.tiers {
		out[i] = TierInfo{t.Resolution, t.watermark.Load(), now - t.Retention.Milliseconds()}
	}
	return out
}

// RawOldest is the oldest time raw samples are kept for (the retention
// cutoff; days not yet rolled up may be older).
func (db *DB) RawOldest() int64 { return db.retentionCutoff() }

// EachRollup calls f with each series the matchers select that has
// buckets of tier in the blocks covering [mint, maxt], and those blocks'
// buckets (columns reused from call to call; buckets outside the range
// may be there: the caller's windows skip them), found through the
// tier's own postings so that series are there after their raw days are
// gone. Only the columns in cols (rollup.Col*) are decoded. shard of
// shards: the part of the selection to read (0 of 1: all), so that
// several goroutines can share it.
func (db *DB) EachRollup(tier int, mint, maxt int64, cols uint, shard, shards int, ms []*series.Matcher, f func(series.Labels, *rollup.Columns) error) error {
	if tier < 0 || tier >= len(db.tiers) {
		return fmt.Errorf("%w: no rollup tier %d (%d configured)", series.ErrInvalid, tier, len(db.tiers))
	}
	t := db.tiers[tier]
	if mint > maxt {
		return nil
	}
	it, err := db.pdb.NewIter(nil)
	if err != nil {
		return err
	}
	defer it.Close()
	parts, err := tierParts(it, tier, max(mint, 0)/t.span, max(maxt, 0)/t.span)
	if err != nil {
		return err
	}
	var ids []uint64
	for _, p := range parts {
		got, err := selectDay(it, postingsPart(tier, p), ms)
		if err != nil {
			return err
		}
		ids = union(ids, got)
	}
	// One iterator a partition (and one for its sketches), clones of it:
	// all see the same version of every block, even while the downsampler
	// rewrites it, and each only ever seeks forward through its
	// partition as ids grow, which Pebble turns into steps from where it
	// stands instead of a descent from the top of the LSM.
	colIts := make([]*pebble.Iterator, len(parts))
	skIts := make([]*pebble.Iterator, len(parts))
	defer func() {
		for i := range parts {
			for _, pi := range []*pebble.Iterator{colIts[i], skIts[i]} {
				if pi != nil {
					pi.Close()
				}
			}
		}
	}()
	for i, p := range parts {
		lo := rollupKey(nil, tier, uint32(p), 0, 0)
		hi := rollupKey(nil, tier, uint32(p)+1, 0, 0)
		if colIts[i], err = it.Clone(pebble.CloneOptions{IterOptions: &pebble.IterOptions{LowerBound: lo, UpperBound: hi}}); err != nil {
			return err
		}
		if cols&rollup.ColSketch != 0 {
			opts := &pebble.IterOptions{LowerBound: sketchKey(nil, lo), UpperBound: sketchKey(nil, hi)}
			if skIts[i], err = it.Clone(pebble.CloneOptions{IterOptions: opts}); err != nil {
				return err
			}
		}
	}
	// Labels: from the head's series when it has them, else through an
	// iterator that, like the blocks', only moves forward (a Get per
	// series cost 5 us, more than its blocks).
	lblIt, err := it.Clone(pebble.CloneOptions{IterOptions: &pebble.IterOptions{LowerBound: []byte{kindSeries}, UpperBound: []byte{kindSeries + 1}}})
	if err != nil {
		return err
	}
	defer lblIt.Close()
	var c rollup.Columns
	var key, sk, lkey []byte
	for _, id := range ids {
		if shards > 1 && blockShardOf(id, shards) != shard {
			continue
		}
		if err := db.checkClosing(); err != nil {
			return err
		}
		c.Reset()
		for pi, p := range parts {
			key = rollupKey(key[:0], tier, uint32(p), id, p*t.span)
			it := colIts[pi]
			if !seekForward(it, key) || !bytes.Equal(it.Key(), key) {
				if err := it.Error(); err != nil {
					return err
				}
				continue
			}
			if err := rollup.DecodeColumns(&c, it.Value(), cols); err != nil {
				return fmt.Errorf("series %d: %v block %d: %w", id, t.Resolution, p, err)
			}
			if cols&rollup.ColSketch != 0 {
				sk = sketchKey(sk[:0], key)
				it := skIts[pi]
				if !it.SeekGE(sk) || !bytes.Equal(it.Key(), sk) {
					if err := it.Error(); err != nil {
						return err
					}
					return fmt.Errorf("series %d: %v block %d: %w: no sketch block", id, t.Resolution, p, rollup.ErrCorrupt)
				}
				if err := rollup.DecodeSketches(&c, it.Value()); err != nil {
					return fmt.Errorf("series %d: %v block %d: %w", id, t.Resolution, p, err)
				}
			}
		}
		if c.Len() == 0 {
			continue
		}
		var ls series.Labels
		if s := db.series.getByID(id); s != nil {
			ls = s.lset
		} else {
			lkey = binary.BigEndian.AppendUint64(append(lkey[:0], kindSeries), id)
			if !seekForward(lblIt, lkey) || !bytes.Equal(lblIt.Key(), lkey) {
				if err := lblIt.Error(); err != nil {
					return fmt.Errorf("labels of series %d: %w", id, err)
				}
				return fmt.Errorf("labels of series %d: %w", id, pebble.ErrNotFound)
			}
			if ls, err = decodeLabels(lkey, lblIt.Value()); err != nil {
				return err
			}
		}
		if err := f(ls, &c); err != nil {
			return err
		}
	}
	return nil
}

// blockShardOf is the shard of shards that reads series id's rollup
// blocks: by ID, as shardOf and for its reason, but in runs of 16
// consecutive IDs, so that a shard's blocks in a partition mostly
// follow one another (a step of the iterator each, not a step over
// another shard's block). Runs of 64 split 1,000 series 552/448.
func blockShardOf(id uint64, shards int) int { return shardOf(id>>4, shards) }

// seekForward positions it at the first key at or after key, which is
// after its current key: the blocks of the series a query reads next
// usually follow the last one (a shard reads every other series, or
// so), and a step or two costs less than a seek.
func seekForward(it *pebble.Iterator, key []byte) bool {
	if it.Valid() {
		for n := 0; n < 3 && bytes.Compare(it.Key(), key) < 0; n++ {
			if !it.Next() {
				break
			}
		}
		if it.Valid() && bytes.Compare(it.Key(), key) >= 0 {
			return true
		}
		if err := it.Error(); err != nil {
			return false
		}
	}
	return it.SeekGE(key)
}

// tierParts returns the partitions of tier in [first, last] that hold
// postings, skipping from one to the next: years of range cost a seek per
// partition with data.
func tierParts(it *pebble.Iterator, tier int, first, last int64) ([]int64, error) {
	var out []int64
	for p := first; p <= last; {
		if !it.SeekGE(binary.BigEndian.AppendUint32([]byte{kindPostings}, postingsPart(tier, p))) {
			break
		}
		k := it.Key()
		if len(k) < 5 || k[0] != kindPostings {
			break
		}
		got := binary.BigEndian.Uint32(k[1:])
		if got>>24 != rollupPartBase>>24|uint32(tier) {
			break // past this tier's partitions
		}
		gp := int64(got & 0xffffff)
		if gp > last {
			break
		}
		out = append(out, gp)
		p = gp + 1
	}
	return out, it.Error()
}

// TierDiskBytes estimates the bytes on disk of raw chunks and of each
// tier's blocks, columns and sketches (Pebble's estimate over their key
// ranges, compressed).
func (db *DB) TierDiskBytes() (raw uint64, tiers []uint64, err error) {
	if raw, err = db.pdb.EstimateDiskUsage([]byte{kindChunk}, []byte{kindChunk + 1}); err != nil {
		return 0, nil, err
	}
	for i := range db.tiers {
		var n uint64
		for _, kind := range []byte{kindRollup, kindSketch} {
			m, err := db.pdb.EstimateDiskUsage([]byte{kind, byte(i)}, []byte{kind, byte(i + 1)})
			if err != nil {
				return 0, nil, err
			}
			n += m
		}
		tiers = append(tiers, n)
	}
	return raw, tiers, nil
}

// rollupKeeps reports whether some tier keeps a bucket holding t.
func (db *DB) rollupKeeps(t int64) bool {
	return db.backfillTier(t) >= 0
}

// backfillTier is the finest tier that keeps t (-1: none).
func (db *DB) backfillTier(t int64) int {
	now := db.opts.Now().UnixMilli()
	for i, ts := range db.tiers {
		if t >= now-ts.Retention.Milliseconds() {
			return i
		}
	}
	return -1
}

// rollBackfill merges the samples older than raw retention ('B' keys)
// into the finest tier that keeps them, marks the coarser tiers' buckets
// to roll up again, and deletes the keys, block by block in one batch
// each: a crash merges a sample once or not at all.
func (db *DB) rollBackfill() error {
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kindBackfill}, UpperBound: []byte{kindBackfill + 1}})
	if err != nil {
		return err
	}
	type sample struct {
		id  uint64
		t   int64
		v   float64
		key []byte
	}
	var all []sample
	for it.First(); it.Valid(); it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != 17 || len(v) != 8 {
			continue
		}
		all = append(all, sample{binary.BigEndian.Uint64(k[1:]), int64(binary.BigEndian.Uint64(k[9:])),
			math.Float64frombits(binary.LittleEndian.Uint64(v)), append([]byte(nil), k...)})
	}
	if err := it.Close(); err != nil {
		return err
	}
	if len(all) == 0 {
		return nil
	}
	// Keys are in series, then time order: group by series and block.
	type group struct {
		tier int
		part int64
		id   uint64
	}
	var bs []rollup.Bucket
	var enc []byte
	for i := 0; i < len(all); {
		s := all[i]
		ti := db.backfillTier(s.t)
		var g group
		if ti >= 0 {
			g = group{ti, rollup.BucketStart(s.t, db.tiers[ti].res) / db.tiers[ti].span, s.id}
		}
		j := i + 1
		for ; j < len(all); j++ {
			n := all[j]
			nt := db.backfillTier(n.t)
			if n.id != s.id || nt != ti || (ti >= 0 && rollup.BucketStart(n.t, db.tiers[ti].res)/db.tiers[ti].span != g.part) {
				break
			}
		}
		b := db.pdb.NewBatch()
		if ti >= 0 {
			t := db.tiers[ti]
			key := rollupKey(nil, ti, uint32(g.part), g.id, g.part*t.span)
			if bs, _, err = db.getBlock(bs[:0], key); err != nil {
				b.Close()
				return fmt.Errorf("series %d: %v block %d: %w", g.id, t.Resolution, g.part, err)
			}
			var next *tierState
			if ti+1 < len(db.tiers) {
				next = db.tiers[ti+1]
			}
			for _, x := range all[i:j] {
				start := rollup.BucketStart(x.t, t.res)
				k := sort.Search(len(bs), func(k int) bool { return bs[k].Start >= start })
				if k == len(bs) || bs[k].Start != start {
					bs = slices.Insert(bs, k, rollup.Bucket{Start: start})
				}
				bs[k].AddLate(x.t, x.v)
				if next != nil {
					if nb := rollup.Align(start, next.res); nb < next.watermark.Load() {
						b.Set(dirtyKey(nil, next.idx, nb, g.id), nil, nil)
					}
				}
			}
			ls, err := db.storedLabels(g.id)
			if err != nil {
				b.Close()
				return fmt.Errorf("series %d: %w", g.id, err)
			}
			if enc, err = writeBlock(b, t, key, g.id, ls, bs, enc); err != nil {
				b.Close()
				return err
			}
			t.buckets.Add(int64(j - i))
		}
		for _, x := range all[i:j] {
			b.Delete(x.key, nil) // merged, or kept by no tier any more
		}
		err := db.commit(b, pebble.Sync)
		b.Close()
		if err != nil {
			return err
		}
		i = j
	}
	db.opts.Logger.Info("rollup: backfilled samples merged into the tiers", "samples", len(all))
	return nil
}

// RollupPending counts the buckets waiting to be rolled up again (late
// samples, rolled-up-again buckets of a finer tier) and the backfilled
// samples waiting to be merged: the downsampler's backlog beyond its
// watermarks.
func (db *DB) RollupPending() (int, error) {
	n := 0
	for _, kind := range []byte{kindDirty, kindBackfill} {
		it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kind}, UpperBound: []byte{kind + 1}})
		if err != nil {
			return 0, err
		}
		for it.First(); it.Valid(); it.Next() {
			n++
		}
		if err := it.Close(); err != nil {
			return 0, err
		}
	}
	return n, nil
}
