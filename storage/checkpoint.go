package storage

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/series"
)

type cpSeries struct {
	s       *memSeries
	nSealed int
	sealed  []sealedChunk
	head    *sealedChunk
	ooo     []series.Sample
	hists   []series.HistSample
}

// Checkpoint stores the head's sealed chunks and a copy of its open
// chunks, merges out-of-order samples into stored chunks, and truncates the
// WAL up to the last record it covers. It runs in the background every
// CheckpointInterval and on Close; calling it directly is safe.
func (db *DB) Checkpoint() error {
	db.cpMu.Lock()
	defer db.cpMu.Unlock()
	start := time.Now()

	// Snapshot under applyMu, so that the snapshot holds exactly the
	// records up to cpSeq.
	var snaps []cpSeries
	// Records from here on go to a new segment: the ones before it can
	// go once a checkpoint covers them.
	db.wal.Rotate()
	db.applyMu.Lock()
	cpSeq := db.appliedSeq
	for _, s := range db.series.all() {
		s.mu.Lock()
		db.flushPendLocked(s)
		if s.head != nil && s.head.Count() > 0 && dayOf(s.head.MinT()) < db.floorOf(s) {
			// An open chunk in a day before the floor is stored once, as
			// final: the downsampler merges it and deletes it, and a copy
			// stored again with more samples would be merged twice.
			s.sealHeadLocked()
		}
		c := cpSeries{s: s, nSealed: len(s.sealed), sealed: s.sealed}
		if s.headDirty && s.head != nil {
			c.head = &sealedChunk{minT: s.head.MinT(), maxT: s.head.MaxT(), b: append([]byte(nil), s.head.Bytes()...)}
			s.headDirty = false
		}
		if len(s.ooo) > 0 {
			s.oooFlushing = mergeSamples(s.oooFlushing, s.ooo)
			s.ooo = nil
		}
		c.ooo = s.oooFlushing
		if len(s.hist) > 0 {
			s.histFlushing = mergeHists(s.histFlushing, s.hist)
			s.hist = nil
		}
		c.hists = s.histFlushing
		s.mu.Unlock()
		if c.nSealed > 0 || c.head != nil || len(c.ooo) > 0 || len(c.hists) > 0 {
			snaps = append(snaps, c)
		}
	}
	db.walBytes.Store(0)
	db.applyMu.Unlock()

	// Phase 1: in-order chunks, under their final keys. No fsync: the WAL
	// still holds their samples until phase 2's synced batch truncates it,
	// and Pebble's log is sequential, so that sync covers this batch too.
	cut := db.retentionCutoff()
	if len(db.tiers) > 0 {
		cut = db.oldestKept(db.opts.Now().UnixMilli()) // the downsampler merges what raw retention does not keep
	}
	marks := db.newMarkWriter()
	b := db.pdb.NewBatch()
	// Commit in pieces: one batch larger than half a memtable would become
	// a "flushable batch" that Pebble keeps in memory until the next flush.
	const pieceBytes = 4 << 20
	var pieceErr error
	commitPiece := func(force bool) {
		if pieceErr == nil && (force || b.Len() >= pieceBytes) {
			pieceErr = db.commit(b, pebble.NoSync)
			b.Close()
			b = db.pdb.NewBatch()
			marks.newBatch()
		}
	}
	var key, val []byte
	put := func(s *memSeries, c sealedChunk, final bool) {
		if c.maxT < cut {
			return
		}
		day := dayOf(c.minT)
		chk := c.b
		if final {
			// A sealed chunk never changes again: store its smallest encoding.
			chk = chunk.Optimize(chk)
		}
		key = chunkKey(key[:0], day, s.id, c.minT)
		val = appendChunkValue(val[:0], c.minT, c.maxT, chk)
		b.Set(key, val, nil)
		if err := marks.mark(b, s.id, c.minT, c.maxT); err != nil && pieceErr == nil {
			pieceErr = err
		}
		db.stats.ChunksWritten.Add(1)
		if day > s.lastChunkDay {
			s.lastChunkDay = day
			b.Set(lastKey(s.id), binary.BigEndian.AppendUint32(nil, day), nil)
		}
	}
	for _, c := range snaps {
		for _, sc := range c.sealed[:c.nSealed] {
			put(c.s, sc, true)
		}
		if c.head != nil {
			put(c.s, *c.head, false)
		}
		commitPiece(false)
	}
	commitPiece(true)
	b.Close()
	if err := pieceErr; err != nil {
		for _, c := range snaps {
			if c.head != nil {
				c.s.mu.Lock()
				c.s.headDirty = true
				c.s.mu.Unlock()
			}
		}
		return fmt.Errorf("checkpoint: store chunks: %w", err)
	}
	db.cpGen.Add(1)
	for _, c := range snaps {
		if c.nSealed > 0 {
			c.s.mu.Lock()
			c.s.sealed = c.s.sealed[c.nSealed:]
			c.s.mu.Unlock()
		}
	}

	// Phase 2: merge late samples into the stored chunks of their day (in
	// pieces, as phase 1: a backfill's late samples may touch many days),
	// then record the checkpoint and truncate the WAL in one synced batch.
	b = db.pdb.NewBatch()
	defer func() { b.Close() }()
	marks.newBatch()
	merged := 0
	for _, c := range snaps {
		for h := c.hists; len(h) > 0; {
			day := dayOf(h[0].T)
			n := 0
			for n < len(h) && dayOf(h[n].T) == day {
				n++
			}
			if err := db.mergeHistDay(b, c.s, day, h[:n], cut); err != nil {
				return fmt.Errorf("checkpoint: merge histograms of series %d: %w", c.s.id, err)
			}
			// The tiers' histogram buckets of the day are rolled up
			// again, as the floats' are.
			if err := marks.mark(b, c.s.id, h[0].T, h[n-1].T); err != nil {
				return fmt.Errorf("checkpoint: mark histograms of series %d: %w", c.s.id, err)
			}
			merged += n
			h = h[n:]
		}
		for ooo := c.ooo; len(ooo) > 0; {
			day := dayOf(ooo[0].T)
			n := 0
			for n < len(ooo) && dayOf(ooo[n].T) == day {
				n++
			}
			if err := db.mergeDay(b, marks, c.s, day, ooo[:n], cut); err != nil {
				return fmt.Errorf("checkpoint: merge late samples of series %d: %w", c.s.id, err)
			}
			merged += n
			ooo = ooo[n:]
		}
		if b.Len() >= pieceBytes {
			if err := db.commit(b, pebble.NoSync); err != nil {
				return fmt.Errorf("checkpoint: merge late samples: %w", err)
			}
			b.Close()
			b = db.pdb.NewBatch()
			marks.newBatch()
		}
	}
	db.storeMarks(b)
	b.Set(metaKey("checkpoint"), binary.BigEndian.AppendUint64(nil, cpSeq), nil)
	legacy := db.legacyWAL
	if legacy {
		b.DeleteRange([]byte{kindWAL}, []byte{kindWAL + 1}, nil)
	}
	if err := db.commit(b, pebble.Sync); err != nil {
		return fmt.Errorf("checkpoint: record it: %w", err)
	}
	if legacy {
		db.legacyWAL = false
	}
	if err := db.wal.Truncate(cpSeq); err != nil {
		return fmt.Errorf("checkpoint: truncate log: %w", err)
	}
	db.cpGen.Add(1)
	for _, c := range snaps {
		if len(c.ooo) > 0 || len(c.hists) > 0 {
			c.s.mu.Lock()
			// Only drop what this checkpoint merged; a failed earlier
			// checkpoint's leftovers were folded into c.ooo above.
			if len(c.ooo) > 0 {
				c.s.oooFlushing = nil
			}
			if len(c.hists) > 0 {
				c.s.histFlushing = nil
			}
			c.s.mu.Unlock()
		}
	}
	db.stats.Checkpoints.Add(1)
	cp := db.cpCount.Add(1)
	evicted, err := db.evictIdle(cp)
	if err != nil {
		return fmt.Errorf("checkpoint: evict idle series: %w", err)
	}
	if len(snaps) > 0 || evicted > 0 {
		db.opts.Logger.Debug("checkpoint", "seq", cpSeq, "series", len(snaps), "late_samples_merged", merged, "evicted", evicted, "duration", time.Since(start))
	}
	return nil
}

// mergeDay merges late samples (sorted, one day) into the stored chunks of
// series s that they overlap, re-cutting the result into chunks.
func (db *DB) mergeDay(b *pebble.Batch, marks *markWriter, s *memSeries, day uint32, late []series.Sample, cut int64) error {
	minO, maxO := late[0].T, late[len(late)-1].T
	prefix := chunkKey(nil, day, s.id, 0)[:13]
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	var old []series.Sample
	var cit chunk.Iterator
	take := func() error {
		k := append([]byte(nil), it.Key()...)
		_, chk, err := parseChunkValue(k, it.Value())
		if err != nil {
			return err
		}
		cit.Reset(chk)
		for cit.Next() {
			t, v := cit.At()
			old = append(old, series.Sample{T: t, V: v})
		}
		if cit.Err() != nil {
			return &CorruptionError{Key: k, Err: cit.Err()}
		}
		b.Delete(k, nil)
		return nil
	}
	if it.SeekLT(chunkKey(nil, day, s.id, minO)) {
		maxT, _, err := parseChunkValue(it.Key(), it.Value())
		if err != nil {
			return err
		}
		if maxT >= minO {
			if err := take(); err != nil {
				return err
			}
		}
	}
	for valid := it.SeekGE(chunkKey(nil, day, s.id, minO)); valid; valid = it.Next() {
		_, _, minT, _ := parseChunkKey(it.Key())
		if minT > maxO {
			break
		}
		if err := take(); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	all := mergeSamples(old, late)
	var key, val []byte
	for len(all) > 0 {
		a := chunk.NewAppender()
		n := 0
		d0 := dayOf(all[0].T) // a chunk of an older layout may hold the sample closing the day before
		for n < len(all) && n < db.opts.ChunkSamples && all[n].T-all[0].T < db.opts.ChunkSpan.Milliseconds() && dayOf(all[n].T) == d0 {
			a.Append(all[n].T, all[n].V)
			n++
		}
		if a.MaxT() >= cut {
			key = chunkKey(key[:0], day, s.id, a.MinT())
			val = appendChunkValue(val[:0], a.MinT(), a.MaxT(), chunk.Optimize(a.Bytes()))
			b.Set(key, val, nil)
			db.stats.ChunksWritten.Add(1)
		}
		if err := marks.mark(b, s.id, a.MinT(), a.MaxT()); err != nil {
			return err
		}
		all = all[n:]
	}
	if day > s.lastChunkDay {
		s.lastChunkDay = day
		b.Set(lastKey(s.id), binary.BigEndian.AppendUint32(nil, day), nil)
	}
	return nil
}

// mergeSamples merges two sorted, unique-by-time runs; on equal
// timestamps the sample of newer wins.
func mergeSamples(older, newer []series.Sample) []series.Sample {
	return mergeByTime(older, newer, func(s series.Sample) int64 { return s.T })
}

// mergeByTime merges two runs sorted and unique by time(x); on equal
// times the element of newer wins. A run merged with nothing is
// returned as is.
func mergeByTime[S any](older, newer []S, time func(S) int64) []S {
	if len(older) == 0 {
		return newer
	}
	if len(newer) == 0 {
		return older
	}
	out := make([]S, 0, len(older)+len(newer))
	i, j := 0, 0
	for i < len(older) && j < len(newer) {
		switch to, tn := time(older[i]), time(newer[j]); {
		case to < tn:
			out = append(out, older[i])
			i++
		case to > tn:
			out = append(out, newer[j])
			j++
		default:
			out = append(out, newer[j])
			i++
			j++
		}
	}
	out = append(out, older[i:]...)
	return append(out, newer[j:]...)
}

// evictIdle drops from the head the series that received no sample for
// HeadIdleTimeout and whose data is all stored, so that head memory follows
// the active series, not every series ever seen. Their open chunk is
// stored once more in its smallest encoding: it is final unless the
// series comes back, and then it is resumed from there.
func (db *DB) evictIdle(cp uint64) (int, error) {
	idle := uint64(1)
	if db.opts.CheckpointInterval > 0 && db.opts.HeadIdleTimeout > db.opts.CheckpointInterval {
		idle = uint64(db.opts.HeadIdleTimeout / db.opts.CheckpointInterval)
	}
	clean := func(s *memSeries) bool {
		return !s.headDirty && len(s.sealed) == 0 && len(s.ooo) == 0 && len(s.oooFlushing) == 0 && len(s.pend) == 0 && s.histEmptyLocked() && cp-s.touched > idle
	}
	type cand struct {
		s    *memSeries
		head sealedChunk
	}
	var cands []cand
	for _, s := range db.series.all() {
		s.mu.Lock()
		if clean(s) && s.pins.Load() == 0 {
			c := cand{s: s}
			if s.head != nil && s.head.Count() > 0 {
				c.head = sealedChunk{minT: s.head.MinT(), maxT: s.head.MaxT(), b: append([]byte(nil), s.head.Bytes()...)}
			}
			cands = append(cands, c)
		}
		s.mu.Unlock()
	}
	if len(cands) == 0 {
		return 0, nil
	}
	b := db.pdb.NewBatch()
	defer b.Close()
	var key, val []byte
	for _, c := range cands {
		if c.head.b == nil {
			continue
		}
		key = chunkKey(key[:0], dayOf(c.head.minT), c.s.id, c.head.minT)
		val = appendChunkValue(val[:0], c.head.minT, c.head.maxT, chunk.Optimize(c.head.b))
		b.Set(key, val, nil)
	}
	// No fsync: this re-encodes data that is durable already; a lost write
	// leaves the earlier copy.
	if err := db.commit(b, pebble.NoSync); err != nil {
		return 0, err
	}
	n := 0
	for _, c := range cands {
		if db.series.evict(c.s, func() bool { return clean(c.s) }) {
			n++
		}
	}
	db.stats.SeriesEvicted.Add(int64(n))
	return n, nil
}
