package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
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

// tierState is a tier's configuration and counters.
type tierState struct {
	Tier
	idx       int
	res, span int64 // ms
	// sketches: the tier stores a quantile sketch per bucket. The finest
	// of several tiers does not: a 5-minute bucket holds few samples,
	// and its sketch cost more than the raw samples (issue 13), while
	// quantile_over_time over short windows reads raw samples anyway.
	sketches bool
	buckets  atomic.Int64 // buckets written, for /metrics
}

func validateTiers(ts []Tier) error {
	if len(ts) > 8 {
		return fmt.Errorf("%d rollup tiers: at most 8", len(ts))
	}
	for i, t := range ts {
		if t.Resolution < time.Minute || t.Resolution%time.Second != 0 {
			return fmt.Errorf("rollup tier %d: resolution %v must be whole seconds, at least 1m", i, t.Resolution)
		}
		// Every tier is computed from the raw samples of one day at a
		// time: a bucket must not straddle two days.
		if (24*time.Hour)%t.Resolution != 0 {
			return fmt.Errorf("rollup tier %v: the resolution must divide a day (1m, 5m, 10m, 15m, 30m, 1h, 2h, ... 1d)", t.Resolution)
		}
		if t.Retention <= 0 {
			return fmt.Errorf("rollup tier %v: retention %v must be positive", t.Resolution, t.Retention)
		}
		if i > 0 {
			prev := ts[i-1].Resolution
			if t.Resolution <= prev || t.Resolution%prev != 0 {
				return fmt.Errorf("rollup tier %v after %v: each resolution must be a multiple of the previous one", t.Resolution, prev)
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

// postingsPart is the postings partition of tier partition part.
func postingsPart(tier int, part int64) uint32 {
	return rollupPartBase | uint32(tier)<<24 | uint32(part)&0xffffff
}

func (db *DB) initRollups() {
	for i, t := range db.opts.Tiers {
		ts := &tierState{Tier: t, idx: i, res: t.Resolution.Milliseconds()}
		ts.span = blockBuckets * ts.res
		ts.sketches = i > 0 || len(db.opts.Tiers) == 1
		db.tiers = append(db.tiers, ts)
	}
}

// settledBefore is the start of the first day that is not over: days
// before it ended RollupDelay ago or more, and the downsampler rolls them
// up (the day in progress is read from raw samples).
func (db *DB) settledBefore(now int64) int64 {
	return max(now-db.opts.RollupDelay.Milliseconds(), 0) / msPerDay * msPerDay
}

// TierInfo describes a tier to the query planner.
type TierInfo struct {
	Resolution time.Duration
	// Watermark: the tier answers buckets starting before it (ms), exactly:
	// a day not yet rolled up is computed from its raw samples when read.
	Watermark int64
	Oldest    int64 // ms: the tier's retention cutoff
	Sketches  bool  // quantile_over_time can read the tier
}

// Tiers describes the rollup tiers, finest first.
func (db *DB) Tiers() []TierInfo {
	out := make([]TierInfo, len(db.tiers))
	now := db.opts.Now().UnixMilli()
	for i, t := range db.tiers {
		out[i] = TierInfo{t.Resolution, db.settledBefore(now), now - t.Retention.Milliseconds(), t.sketches}
	}
	return out
}

// RawOldest is the time before which every series' raw samples are gone
// (the raw floor: retention drops a day once the tiers have it). Samples
// written since for such a day wait for the downsampler to merge them.
func (db *DB) RawOldest() int64 { return int64(db.rawFloor.Load()) * msPerDay }

// oldestKept is the time before which no tier, and no retention rule of
// one, keeps a sample: older samples are refused.
func (db *DB) oldestKept(now int64) int64 {
	_, longest := db.tierRetention(-1)
	oldest := now - longest.Milliseconds()
	for _, t := range db.tiers {
		_, l := db.tierRetention(t.idx)
		oldest = min(oldest, now-l.Milliseconds())
	}
	return max(oldest, MinTime)
}

// keeps reports whether tier (-1: raw) keeps the day of series ls.
func (db *DB) keeps(tier int, ls series.Labels, day uint32, now int64) bool {
	def, _ := db.tierRetention(tier)
	return int64(day+1)*msPerDay > now-db.retentionOf(tier, ls, def).Milliseconds()
}

// sketchKey is the key of the sketch block of the column block at key:
// the same key under its own kind, so that the tier's column blocks lie
// together in Pebble's data blocks (and its cache) without the sketches.
func sketchKey(dst, key []byte) []byte {
	dst = append(dst, key...)
	dst[len(dst)-len(key)] = kindSketch
	return dst
}

// getBlock reads the block at key (columns, and sketches where the tier
// keeps them) from r into dst; found is false when there is none.
func getBlock(r pebble.Reader, dst []rollup.Bucket, key []byte) (out []rollup.Bucket, found bool, err error) {
	cols, c1, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return dst, false, nil
	}
	if err != nil {
		return dst, false, err
	}
	defer c1.Close()
	var c rollup.Columns
	if err := rollup.DecodeColumns(&c, cols, rollup.ColAll); err != nil {
		return dst, false, err
	}
	sk, c2, err := r.Get(sketchKey(nil, key))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		// A tier without sketches.
	case err != nil:
		return dst, false, fmt.Errorf("sketches of a rollup block: %w", err)
	default:
		defer c2.Close()
		if err := rollup.DecodeSketches(&c, sk); err != nil {
			return dst, false, err
		}
	}
	for i := range c.Start {
		dst = append(dst, c.Bucket(i))
	}
	return dst, true, nil
}

// writeBlock sets (or, with no buckets, deletes) the column and sketch
// blocks of series id at key in b, with the series' postings of the
// tier's partition, so that a selection finds it after its raw days are
// gone. enc is scratch space (the batch copies what it is given),
// returned for reuse.
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
	if t.sketches {
		enc = rollup.AppendSketches(enc[:0], bs)
		if err := b.Set(sketchKey(nil, key), enc, nil); err != nil {
			return enc, err
		}
	}
	_, err = setPostings(b, postingsPart(t.idx, int64(binary.BigEndian.Uint32(key[2:]))), id, ls, nil)
	return enc, err
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
		for _, kind := range tierKinds {
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

// tiersMetaKey holds the tiers' resolutions and retentions, so that a
// restart with other resolutions is refused (blocks are kept by tier
// index) and `headroom check --tiers` knows them offline.
func tiersMetaKey() []byte { return metaKey("tiers") }

func encodeTiers(ts []Tier) []byte {
	b := []byte{byte(len(ts))}
	for _, t := range ts {
		b = binary.AppendUvarint(b, uint64(t.Resolution.Milliseconds()))
		b = binary.AppendUvarint(b, uint64(t.Retention.Milliseconds()))
	}
	return b
}

func decodeTiers(b []byte) ([]Tier, error) {
	bad := &CorruptionError{Key: tiersMetaKey(), Err: errors.New("bad tier list")}
	if len(b) < 1 {
		return nil, bad
	}
	n, b := int(b[0]), b[1:]
	var out []Tier
	for i := 0; i < n; i++ {
		r, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, bad
		}
		b = b[k:]
		ret, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, bad
		}
		b = b[k:]
		out = append(out, Tier{time.Duration(r) * time.Millisecond, time.Duration(ret) * time.Millisecond})
	}
	return out, nil
}

// storedTiers reads the tiers a directory was last opened with (nil: not
// recorded).
func storedTiers(r pebble.Reader) ([]Tier, error) {
	v, closer, err := r.Get(tiersMetaKey())
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return decodeTiers(v)
}

// checkTierConfig refuses tiers whose resolutions differ from those the
// directory's blocks were written with (a coarser tier may be added at
// the end, and retentions may change), and records the new list.
// Without tiers, the stored list stays: the blocks are kept as they are.
func (db *DB) checkTierConfig() error {
	old, err := storedTiers(db.pdb)
	if err != nil {
		return err
	}
	if len(db.opts.Tiers) == 0 {
		return nil
	}
	names := func(ts []Tier) string {
		var s []string
		for _, t := range ts {
			s = append(s, t.Resolution.String())
		}
		return strings.Join(s, ",")
	}
	for i := range min(len(old), len(db.opts.Tiers)) {
		if old[i].Resolution != db.opts.Tiers[i].Resolution {
			return fmt.Errorf("the data directory's rollup tiers are %s; the options say %s: a tier's resolution cannot change (tiers may be added after the coarsest)", names(old), names(db.opts.Tiers))
		}
	}
	if len(old) > len(db.opts.Tiers) {
		return fmt.Errorf("the data directory's rollup tiers are %s; the options say %s: tiers cannot be removed (turn downsampling off instead)", names(old), names(db.opts.Tiers))
	}
	if enc := encodeTiers(db.opts.Tiers); old == nil || !bytes.Equal(enc, encodeTiers(old)) {
		b := db.pdb.NewBatch()
		defer b.Close()
		b.Set(tiersMetaKey(), enc, nil)
		return db.commit(b, pebble.Sync)
	}
	return nil
}
