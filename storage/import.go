package storage

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// ImportRollups puts another store's buckets of series ss in tier (an
// index into Options.Tiers) into this one: within each block the buckets
// touch, this store's buckets starting before `before` are replaced by
// the given ones; its later buckets stay. A cluster node that copies a
// partition from another owner imports the buckets older than that
// owner's raw floor, which only its tiers hold; the raw days after it
// come as samples, and this store's downsampler rolls them up.
//
// Each series' buckets must be sorted by start. A series the store does
// not know is created. The call is one batch, synced once: durable when
// it returns, and a crash leaves all of it or none.
func (db *DB) ImportRollups(tier int, ss []rollup.SeriesBuckets, before int64) error {
	var blk []rollup.Bucket
	var key, enc []byte
	return db.importBlocks(tier, len(ss), func(i int) series.Labels { return ss[i].Labels }, func(b *pebble.Batch, t *tierState, i int, id uint64) error {
		ls, bs := ss[i].Labels, ss[i].Buckets
		return eachBlock(t, len(bs), func(i int) int64 { return bs[i].Start }, cut(ss[i].Before, before), func(i, j int, p, lo, hi int64) (err error) {
			key = rollupKey(key[:0], t.idx, uint32(p), id, lo)
			if blk, _, err = getBlock(b, blk[:0], key); err != nil {
				return fmt.Errorf("series %s: %v block %d: %w", ls, t.Resolution, p, err)
			}
			enc, err = writeBlock(b, t, key, id, ls, spliceDay(blk, bs[i:j], lo, hi), enc)
			return err
		})
	})
}

// ImportHistRollups is ImportRollups for native histogram buckets.
func (db *DB) ImportHistRollups(tier int, ss []rollup.SeriesHistBuckets, before int64) error {
	var blk []rollup.HistBucket
	var key, enc []byte
	some := false
	err := db.importBlocks(tier, len(ss), func(i int) series.Labels { return ss[i].Labels }, func(b *pebble.Batch, t *tierState, i int, id uint64) error {
		ls, bs := ss[i].Labels, ss[i].Buckets
		some = some || len(bs) > 0
		return eachBlock(t, len(bs), func(i int) int64 { return bs[i].Start }, cut(ss[i].Before, before), func(i, j int, p, lo, hi int64) (err error) {
			key = histRollupKey(key[:0], t.idx, uint32(p), id, lo)
			if blk, _, err = getHistBlock(b, blk[:0], key); err != nil {
				return fmt.Errorf("series %s: %v histogram block %d: %w", ls, t.Resolution, p, err)
			}
			enc, err = writeHistBlock(b, t, key, id, ls, spliceHistDay(blk, bs[i:j], lo, hi), enc)
			return err
		})
	})
	if err == nil && some {
		db.hasHist.Store(true)
	}
	return err
}

// cut is a series' own cut for an import when it has one, else the
// call's.
func cut(own, call int64) int64 {
	if own != 0 {
		return own
	}
	return call
}

// eachBlock calls f with each block of tier t that n buckets (sorted by
// start) touch before `before`: the buckets i..j-1 of block p, whose
// range [lo, hi) is cut at before.
func eachBlock(t *tierState, n int, start func(i int) int64, before int64, f func(i, j int, p, lo, hi int64) error) error {
	for i := 0; i < n && start(i) < before; {
		p := start(i) / t.span
		lo, hi := p*t.span, min((p+1)*t.span, before)
		j := i
		for j < n && start(j) < hi {
			j++
		}
		if err := f(i, j, p, lo, hi); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// importBlocks runs write for each of n series (labels ls(i)) in tier
// with one indexed batch, so that a series given twice reads its own
// earlier write, committed synced, under the lock the downsampler writes
// blocks under (cpMu): a block is read, spliced and written by one of
// them at a time.
func (db *DB) importBlocks(tier, n int, ls func(i int) series.Labels, write func(b *pebble.Batch, t *tierState, i int, id uint64) error) error {
	t, err := db.tierAt(tier)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if err := db.Writable(); err != nil {
		return err
	}
	ms := make([]*memSeries, 0, n)
	defer func() {
		for _, s := range ms {
			if s.pins.Add(-1) == 0 && !s.created.Load() {
				db.dropUnused(s)
			}
		}
	}()
	for i := 0; i < n; i++ {
		s, err := db.getOrCreate(ls(i), false)
		if err != nil {
			return err
		}
		ms = append(ms, s)
	}
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return series.ErrClosed
	}
	db.cpMu.Lock()
	defer db.cpMu.Unlock()
	b := db.pdb.NewIndexedBatch()
	defer b.Close()
	created := map[*memSeries]bool{}
	for i, s := range ms {
		if !s.created.Load() && !created[s] {
			if err := b.Set(seriesKey(s.id), appendLabels(nil, s.lset), nil); err != nil {
				return err
			}
			if err := b.Set(hashKey(s.hash, s.id), nil, nil); err != nil {
				return err
			}
			created[s] = true
		}
		if err := write(b, t, i, s.id); err != nil {
			return err
		}
	}
	if err := db.commit(b, pebble.Sync); err != nil {
		return err
	}
	for s := range created {
		s.created.Store(true)
	}
	return nil
}

// ImportStoredRollups is ImportRollups for blocks as another store keeps
// them (EachStoredRollup): a block that ends by `before` replaces this
// store's block as it is, neither decoded nor encoded; the block that
// straddles `before` is decoded and its buckets before it spliced in as
// ImportRollups does. The tier must have the other store's resolution
// (hence its block span); its sketch blocks are required where this
// tier keeps sketches, and left out where it does not. Checked: each
// block's checksum (a column's, when it is decoded) and that the column
// and sketch blocks hold as many buckets.
func (db *DB) ImportStoredRollups(tier int, ss []rollup.StoredSeries, before int64) error {
	var (
		c        rollup.Columns
		blk, bs  []rollup.Bucket
		key, enc []byte
	)
	return db.importBlocks(tier, len(ss), func(i int) series.Labels { return ss[i].Labels }, func(b *pebble.Batch, t *tierState, i int, id uint64) error {
		ls, before := ss[i].Labels, cut(ss[i].Before, before)
		for _, sb := range ss[i].Blocks {
			if sb.Start%t.span != 0 || sb.Start < 0 {
				return fmt.Errorf("%w: series %s: a %v block starting at %d, not a multiple of its span", series.ErrInvalid, ls, t.Resolution, sb.Start)
			}
			if sb.Start >= before {
				continue
			}
			p := sb.Start / t.span
			n, err := rollup.BlockLen(sb.Columns)
			if err != nil {
				return fmt.Errorf("series %s: %v block %d: %w", ls, t.Resolution, p, err)
			}
			if t.sketches {
				m, err := rollup.SketchBlockLen(sb.Sketches)
				if err != nil {
					return fmt.Errorf("series %s: %v sketch block %d: %w", ls, t.Resolution, p, err)
				}
				if m != n {
					return fmt.Errorf("%w: series %s: %v block %d: %d sketches for %d buckets", rollup.ErrCorrupt, ls, t.Resolution, p, m, n)
				}
			}
			key = rollupKey(key[:0], t.idx, uint32(p), id, sb.Start)
			if sb.Start+t.span <= before {
				if err := b.Set(key, sb.Columns, nil); err != nil {
					return err
				}
				if t.sketches {
					if err := b.Set(sketchKey(nil, key), sb.Sketches, nil); err != nil {
						return err
					}
				}
				if _, err := setPostings(b, postingsPart(t.idx, p), id, ls, nil); err != nil {
					return err
				}
				continue
			}
			// Straddling: its buckets before `before`, spliced.
			c.Reset()
			if err := rollup.DecodeColumns(&c, sb.Columns, rollup.ColAll); err != nil {
				return fmt.Errorf("series %s: %v block %d: %w", ls, t.Resolution, p, err)
			}
			if t.sketches {
				if err := rollup.DecodeSketches(&c, sb.Sketches); err != nil {
					return fmt.Errorf("series %s: %v sketch block %d: %w", ls, t.Resolution, p, err)
				}
			}
			bs = bs[:0]
			for k := range c.Start {
				if c.Start[k] < before {
					bs = append(bs, c.Bucket(k))
				}
			}
			if blk, _, err = getBlock(b, blk[:0], key); err != nil {
				return fmt.Errorf("series %s: %v block %d: %w", ls, t.Resolution, p, err)
			}
			if enc, err = writeBlock(b, t, key, id, ls, spliceDay(blk, bs, sb.Start, before), enc); err != nil {
				return err
			}
		}
		return nil
	})
}
