package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// RollupSeries is one series' buckets of a tier.
type RollupSeries struct {
	Labels  series.Labels
	Buckets []rollup.Bucket
}

// Rollups returns the buckets of tier (an index into Options.Tiers) that
// start in [mint, maxt], of the series the matchers select (all series
// with a metric name when there are none), in series ID order: what a
// query reads, days not rolled up yet computed from their raw samples.
// Tests and tools use it; queries stream with EachRollup.
func (db *DB) Rollups(tier int, mint, maxt int64, ms ...*series.Matcher) ([]RollupSeries, error) {
	var out []RollupSeries
	cols := uint(rollup.ColAll)
	if tier >= 0 && tier < len(db.tiers) && !db.tiers[tier].sketches {
		cols &^= rollup.ColSketch
	}
	_, err := db.EachRollup(tier, mint, maxt, cols, 0, 1, ms, func(ls series.Labels, c *rollup.Columns) error {
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

// RollupRead says how a tier read was answered.
type RollupRead struct {
	// RawDays counts the series-days not rolled up yet (or changed since)
	// that were computed from their raw samples.
	RawDays int
}

// headCopy is what the head holds of a series that Pebble does not yet:
// sealed chunks, the open chunk if it changed since its last copy, and
// late samples. Copied before the Pebble view is taken, it completes that
// view: what leaves the head afterwards is in the view, with its marker.
type headCopy struct {
	chunks []chunkRef
	late   []series.Sample // flushing, then newer late samples over them
	days   []uint32        // the days they touch, sorted
}

// unstoredLocked copies s's unstored data that touches [lo, hi]; ok is
// false when there is none. Called with s.mu held.
func (s *memSeries) unstoredLocked(lo, hi int64) (hc headCopy, ok bool) {
	addDays := func(minT, maxT int64) {
		for d := dayOf(max(minT, lo)); d <= dayOf(min(maxT, hi)); d++ {
			hc.days = append(hc.days, d)
		}
	}
	for _, c := range s.sealed {
		if c.maxT >= lo && c.minT <= hi {
			hc.chunks = append(hc.chunks, chunkRef{c.minT, c.maxT, c.b})
			addDays(c.minT, c.maxT)
		}
	}
	if s.headDirty && s.head != nil && s.head.Count() > 0 && s.head.MaxT() >= lo && s.head.MinT() <= hi {
		hc.chunks = append(hc.chunks, chunkRef{s.head.MinT(), s.head.MaxT(), append([]byte(nil), s.head.Bytes()...)})
		addDays(s.head.MinT(), s.head.MaxT())
	}
	if c, ok := s.pendChunkLocked(); ok && c.maxT >= lo && c.minT <= hi {
		hc.chunks = append(hc.chunks, c)
		addDays(c.minT, c.maxT)
	}
	flushing, late := clipSamples(s.oooFlushing, lo, hi), clipSamples(s.ooo, lo, hi)
	hc.late = mergeSamples(flushing, late)
	for _, p := range hc.late {
		hc.days = append(hc.days, dayOf(p.T))
	}
	if len(hc.days) == 0 {
		return hc, false
	}
	slices.Sort(hc.days)
	hc.days = slices.Compact(hc.days)
	return hc, true
}

// samples returns the copied samples in [mint, maxt], in time order, later
// writes winning.
func (hc *headCopy) samples(mint, maxt int64) ([]series.Sample, error) {
	var out []series.Sample
	var cit chunk.Iterator
	for _, c := range hc.chunks {
		if c.maxT < mint || c.minT > maxt {
			continue
		}
		var ss []series.Sample
		cit.Reset(c.b)
		for cit.Next() {
			t, v := cit.At()
			if t >= mint && t <= maxt {
				ss = append(ss, series.Sample{T: t, V: v})
			}
		}
		if err := cit.Err(); err != nil {
			return nil, err
		}
		out = mergeSamples(out, ss)
	}
	return mergeSamples(out, clipSamples(hc.late, mint, maxt)), nil
}

// EachRollup calls f with each series the matchers select that has
// buckets of tier in the blocks covering [mint, maxt], and those blocks'
// buckets (columns reused from call to call; buckets outside the range
// may be there: the caller's windows skip them), found through the
// tier's own postings so that series are there after their raw days are
// gone. Only the columns in cols (rollup.Col*) are decoded. shard of
// shards: the part of the selection to read (0 of 1: all), so that
// several goroutines can share it.
//
// The buckets are exact whatever the downsampler has done: a day that is
// marked for it, or that the head holds samples of that Pebble does not
// yet, is computed from its raw samples (replacing the tier's buckets of
// the day, or, for a day whose raw partition was dropped, adding the
// samples that came since to them), the way the downsampler will.
func (db *DB) EachRollup(tier int, mint, maxt int64, cols uint, shard, shards int, ms []*series.Matcher, f func(series.Labels, *rollup.Columns) error) (RollupRead, error) {
	var rr RollupRead
	t, err := db.tierAt(tier)
	if err != nil {
		return rr, err
	}
	if mint > maxt {
		return rr, nil
	}
	if cols&rollup.ColSketch != 0 && !t.sketches {
		return rr, fmt.Errorf("%w: the %v tier keeps no quantile sketches", series.ErrInvalid, t.Resolution)
	}
	mint, maxt = max(mint, 0), max(maxt, 0)
	parts, ids, err := db.tierSelect(tier, mint, maxt, shard, shards, ms)
	if err != nil {
		return rr, err
	}
	// Samples in (mint, maxt + res] make the buckets starting in [mint,
	// maxt]: the head's part of them first, then the Pebble view.
	lo, hi := mint+1, maxt+t.res
	heads := db.headCopies(ids, lo, hi)
	r, err := db.newTierReader(t, parts, lo, hi, cols, false)
	if err != nil {
		return rr, err
	}
	defer r.close()
	var c rollup.Columns
	for _, id := range ids {
		if err := db.checkClosing(); err != nil {
			return rr, err
		}
		c.Reset()
		if err := r.blocks(&c, id, cols); err != nil {
			return rr, err
		}
		days, err := r.pendingDays(id, heads[id])
		if err != nil {
			return rr, err
		}
		if len(days) > 0 {
			if err := r.exact(&c, id, days, heads[id]); err != nil {
				return rr, fmt.Errorf("series %d: %w", id, err)
			}
			rr.RawDays += len(days)
		}
		if c.Len() == 0 {
			continue
		}
		ls, err := r.labels(id)
		if err != nil {
			return rr, err
		}
		if err := f(ls, &c); err != nil {
			return rr, err
		}
	}
	return rr, nil
}

// tierAt is tier (an index into Options.Tiers), or an error naming it.
func (db *DB) tierAt(tier int) (*tierState, error) {
	if tier < 0 || tier >= len(db.tiers) {
		return nil, fmt.Errorf("%w: no rollup tier %d (%d configured)", series.ErrInvalid, tier, len(db.tiers))
	}
	return db.tiers[tier], nil
}

// headCopies copies what the head holds of series ids in [lo, hi] that
// Pebble does not yet, before a tier read's view is taken.
func (db *DB) headCopies(ids []uint64, lo, hi int64) map[uint64]*headCopy {
	heads := map[uint64]*headCopy{}
	for _, id := range ids {
		if s := db.series.getByID(id); s != nil {
			s.mu.Lock()
			hc, ok := s.unstoredLocked(lo, hi)
			s.mu.Unlock()
			if ok {
				heads[id] = &hc
			}
		}
	}
	return heads
}

// tierSelect returns the partitions of tier holding [mint, maxt] that
// have postings, and the IDs of the series the matchers select in them
// (the shard-th of shards part).
func (db *DB) tierSelect(tier int, mint, maxt int64, shard, shards int, ms []*series.Matcher) ([]int64, []uint64, error) {
	t := db.tiers[tier]
	sel, err := db.pdb.NewIter(nil)
	if err != nil {
		return nil, nil, err
	}
	defer sel.Close()
	parts, err := tierParts(sel, tier, mint/t.span, maxt/t.span)
	if err != nil {
		return nil, nil, err
	}
	var ids []uint64
	for _, p := range parts {
		got, err := selectDay(sel, postingsPart(tier, p), ms)
		if err != nil {
			return nil, nil, err
		}
		ids = union(ids, got)
	}
	if shards > 1 {
		mine := ids[:0:0]
		for _, id := range ids {
			if blockShardOf(id, shards) == shard {
				mine = append(mine, id)
			}
		}
		ids = mine
	}
	return parts, ids, nil
}

// tierReader reads one tier's blocks from one Pebble view, with an
// iterator clone per key range, each only moving forward as series IDs
// grow (Pebble turns that into steps from where it stands instead of a
// descent from the top of the LSM).
type tierReader struct {
	db     *DB
	t      *tierState
	cols   uint
	it     *pebble.Iterator
	lo, hi int64 // the samples the buckets read hold: (mint, maxt + res]

	parts         []int64
	colIts        []*pebble.Iterator
	skIts         []*pebble.Iterator
	lblIt, markIt *pebble.Iterator
	rawIt         *pebble.Iterator // for days computed from raw samples
	floor         uint32
	key, sk, tmp  []byte
	all           []rollup.Bucket
	day           [][]rollup.Bucket
	buf           []series.Sample
	// hist: the reader reads histogram blocks (colIts over them).
	hist bool
}

// newTierReader opens a reader of tier t's blocks in parts (histogram
// blocks with hist) over a new view of the store; close releases it.
func (db *DB) newTierReader(t *tierState, parts []int64, lo, hi int64, cols uint, hist bool) (*tierReader, error) {
	it, err := db.pdb.NewIter(nil)
	if err != nil {
		return nil, err
	}
	r := &tierReader{db: db, t: t, cols: cols, it: it, lo: lo, hi: hi, hist: hist}
	if err := r.open(parts); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *tierReader) open(parts []int64) error {
	r.parts = parts
	r.colIts = make([]*pebble.Iterator, len(parts))
	r.skIts = make([]*pebble.Iterator, len(parts))
	clone := func(lo, hi []byte) (*pebble.Iterator, error) {
		return r.it.Clone(pebble.CloneOptions{IterOptions: &pebble.IterOptions{LowerBound: lo, UpperBound: hi}})
	}
	var err error
	for i, p := range parts {
		lo := rollupKey(nil, r.t.idx, uint32(p), 0, 0)
		hi := rollupKey(nil, r.t.idx, uint32(p)+1, 0, 0)
		if r.hist {
			lo, hi = histRollupKey(nil, r.t.idx, uint32(p), 0, 0), histRollupKey(nil, r.t.idx, uint32(p)+1, 0, 0)
		}
		if r.colIts[i], err = clone(lo, hi); err != nil {
			return err
		}
		if r.cols&rollup.ColSketch != 0 {
			if r.skIts[i], err = clone(sketchKey(nil, lo), sketchKey(nil, hi)); err != nil {
				return err
			}
		}
	}
	if r.lblIt, err = clone([]byte{kindSeries}, []byte{kindSeries + 1}); err != nil {
		return err
	}
	if r.markIt, err = clone([]byte{kindRollMark}, []byte{kindRollMark + 1}); err != nil {
		return err
	}
	if r.rawIt, err = clone(nil, nil); err != nil {
		return err
	}
	// The floor of this view.
	if r.rawIt.SeekGE(floorMetaKey()) && bytes.Equal(r.rawIt.Key(), floorMetaKey()) && len(r.rawIt.Value()) == 4 {
		r.floor = binary.BigEndian.Uint32(r.rawIt.Value())
	}
	return r.rawIt.Error()
}

func (r *tierReader) close() {
	for _, it := range append(append(append([]*pebble.Iterator{}, r.colIts...), r.skIts...), r.lblIt, r.markIt, r.rawIt, r.it) {
		if it != nil {
			it.Close()
		}
	}
}

// blocks decodes series id's blocks (the columns in cols) into c.
func (r *tierReader) blocks(c *rollup.Columns, id uint64, cols uint) error {
	t := r.t
	for pi, p := range r.parts {
		col, sk, found, err := r.stored(pi, id, cols&rollup.ColSketch != 0)
		if err != nil {
			return err
		}
		if !found {
			continue
		}
		if err := rollup.DecodeColumns(c, col, cols); err != nil {
			return fmt.Errorf("series %d: %v block %d: %w", id, t.Resolution, p, err)
		}
		if sk != nil {
			if err := rollup.DecodeSketches(c, sk); err != nil {
				return fmt.Errorf("series %d: %v block %d: %w", id, t.Resolution, p, err)
			}
		}
	}
	return nil
}

// stored returns series id's column block of the reader's pi-th
// partition as the store keeps it, and its sketch block with sketches;
// found is false when the series has no block there. The bytes are the
// iterators': valid until they move.
func (r *tierReader) stored(pi int, id uint64, sketches bool) (col, sk []byte, found bool, err error) {
	t, p := r.t, r.parts[pi]
	r.key = rollupKey(r.key[:0], t.idx, uint32(p), id, p*t.span)
	it := r.colIts[pi]
	if !seekForward(it, r.key) || !bytes.Equal(it.Key(), r.key) {
		return nil, nil, false, it.Error()
	}
	if !sketches {
		return it.Value(), nil, true, nil
	}
	r.sk = sketchKey(r.sk[:0], r.key)
	sit := r.skIts[pi]
	if !seekForward(sit, r.sk) || !bytes.Equal(sit.Key(), r.sk) {
		if err := sit.Error(); err != nil {
			return nil, nil, false, err
		}
		return nil, nil, false, fmt.Errorf("series %d: %v block %d: %w: no sketch block", id, t.Resolution, p, rollup.ErrCorrupt)
	}
	return it.Value(), sit.Value(), true, nil
}

// pendingDays returns the days of series id in the range that the tier
// does not hold as they are: marked for the downsampler, or with samples
// only the head has.
func (r *tierReader) pendingDays(id uint64, hc *headCopy) ([]uint32, error) {
	first, last := dayOf(r.lo), dayOf(r.hi)
	var days []uint32
	r.key = rollMarkKey(r.key[:0], id, first)
	for valid := seekForward(r.markIt, r.key); valid; valid = r.markIt.Next() {
		k := r.markIt.Key()
		if len(k) != 13 || binary.BigEndian.Uint64(k[1:]) != id {
			break
		}
		d := binary.BigEndian.Uint32(k[9:])
		if d > last {
			break
		}
		days = append(days, d)
	}
	if err := r.markIt.Error(); err != nil {
		return nil, err
	}
	if hc != nil {
		days = append(days, hc.days...)
		slices.Sort(days)
		days = slices.Compact(days)
	}
	return days, nil
}

// exact recomputes series id's buckets of the given days in c, the way
// the downsampler will: replacing a whole day's buckets from its raw
// samples, or adding the samples that came after the day was dropped.
func (r *tierReader) exact(c *rollup.Columns, id uint64, days []uint32, hc *headCopy) error {
	t := r.t
	// Every column of the series' blocks, to splice whole buckets.
	var full rollup.Columns
	if err := r.blocks(&full, id, rollup.ColAll&^rollup.ColSketch|r.cols&rollup.ColSketch); err != nil {
		return err
	}
	r.all = r.all[:0]
	for i := range full.Start {
		r.all = append(r.all, full.Bucket(i))
	}
	sf, err := seriesFloorAt(r.rawIt, id)
	if err != nil {
		return err
	}
	floor := max(r.floor, sf)
	for _, d := range days {
		dlo, dhi := int64(d)*msPerDay, int64(d+1)*msPerDay
		var head []series.Sample
		if d < floor {
			// Merge mode: the unmerged chunks of the partition, and the
			// head's samples of it.
			var stored []series.Sample
			if stored, _, err = readPartition(r.rawIt, id, d, r.buf[:0], nil); err != nil {
				return err
			}
			if hc != nil {
				if head, err = hc.samples(dlo+1, dhi); err != nil {
					return err
				}
			}
			r.all = addLate(r.all, mergeSamples(slices.Clone(stored), head), t.res, r.lo-1, r.hi)
			continue
		}
		if r.buf, err = readRaw(r.rawIt, id, dlo+1, dhi, r.buf[:0]); err != nil {
			return err
		}
		ss := r.buf
		if hc != nil {
			if head, err = hc.samples(dlo+1, dhi); err != nil {
				return err
			}
			ss = mergeSamples(slices.Clone(ss), head)
		}
		r.day = dayBuckets(r.db.tiers[:t.idx+1], ss, r.day, r.cols&rollup.ColSketch != 0)
		r.all = spliceDay(r.all, r.day[t.idx], dlo, dhi)
	}
	c.SetBuckets(r.all, r.cols)
	return nil
}

// labels returns series id's labels: from the head's series when it has
// them, else through an iterator that, like the blocks', only moves
// forward (a Get per series cost 5 us, more than its blocks).
func (r *tierReader) labels(id uint64) (series.Labels, error) {
	if s := r.db.series.getByID(id); s != nil {
		return s.lset, nil
	}
	r.tmp = binary.BigEndian.AppendUint64(append(r.tmp[:0], kindSeries), id)
	if !seekForward(r.lblIt, r.tmp) || !bytes.Equal(r.lblIt.Key(), r.tmp) {
		if err := r.lblIt.Error(); err != nil {
			return nil, fmt.Errorf("labels of series %d: %w", id, err)
		}
		return nil, fmt.Errorf("labels of series %d: %w", id, pebble.ErrNotFound)
	}
	return decodeLabels(r.tmp, r.lblIt.Value())
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
