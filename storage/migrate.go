package storage

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/series"
)

// loadFloors reads the raw floor, converting a directory that has none
// (new, or written before roll markers), and notes whether any series
// has a floor of its own.
func (db *DB) loadFloors() error {
	f, ok, err := readFloor(db.pdb)
	if err != nil {
		return err
	}
	if !ok {
		if err := db.convertLegacy(); err != nil {
			return fmt.Errorf("convert the first downsampler's state to roll markers: %w", err)
		}
		if f, _, err = readFloor(db.pdb); err != nil {
			return err
		}
	}
	db.rawFloor.Store(f)
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kindFloor}, UpperBound: []byte{kindFloor + 1}})
	if err != nil {
		return err
	}
	db.seriesFloors.Store(it.First())
	return it.Close()
}

// convertLegacy turns a directory of the first downsampler (tier
// watermarks, per-bucket dirty markers 'D', samples for the tiers only
// 'B') into roll markers, and records the raw floor. A new directory
// only gets its floor (0: no day was ever dropped).
//
// The first downsampler's blocks before its first tier's watermark are
// complete; the days from the watermark on, and the days of dirty
// markers, get roll markers. Its 'B' samples become chunks of their days
// (before the floor: the downsampler merges them).
func (db *DB) convertLegacy() error {
	it, err := db.pdb.NewIter(nil)
	if err != nil {
		return err
	}
	defer it.Close()
	b := db.pdb.NewBatch()
	defer b.Close()
	setFloor := func(f uint32) error {
		b.Set(floorMetaKey(), binary.BigEndian.AppendUint32(nil, f), nil)
		return db.commit(b, pebble.Sync)
	}
	if !it.SeekGE([]byte{kindSeries}) || it.Key()[0] != kindSeries {
		return setFloor(0) // no series: a new directory
	}
	// The floor: the first raw day with postings; none: the retention
	// cutoff (every raw day before it was dropped, or never had data).
	now := db.opts.Now().UnixMilli()
	floor := uint32(max(now-db.opts.Retention.Milliseconds(), 0) / msPerDay)
	if it.SeekGE([]byte{kindPostings}) && it.Key()[0] == kindPostings && len(it.Key()) >= 5 {
		if d := binary.BigEndian.Uint32(it.Key()[1:]); d < rollupPartBase {
			floor = d
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	started := time.Now()
	marked := map[[2]uint64]bool{} // (id, day)
	mark := func(id uint64, day uint32) {
		marked[[2]uint64{id, uint64(day)}] = true
	}
	gen := binary.BigEndian.AppendUint64(nil, db.nextGen())

	// Days from the first tier's watermark on were not rolled up.
	if len(db.tiers) > 0 {
		wm := int64(MinTime)
		if v, closer, err := db.pdb.Get(metaKey(fmt.Sprintf("rollup-watermark-%d", db.tiers[0].res))); err == nil {
			if len(v) == 8 {
				wm = int64(binary.BigEndian.Uint64(v))
			}
			closer.Close()
		}
		from := dayOf(wm + 1)
		if wm > 0 {
			from = closedDayOf(wm) // a partition of the older layout holds the sample closing the day before
			if from > 0 {
				from--
			}
		}
		for d := max(from, floor); ; {
			if !it.SeekGE(binary.BigEndian.AppendUint32([]byte{kindPostings}, d)) || it.Key()[0] != kindPostings || len(it.Key()) < 5 {
				break
			}
			got := binary.BigEndian.Uint32(it.Key()[1:])
			if got >= rollupPartBase {
				break
			}
			ids, err := selectDay(it, got, nil)
			if err != nil {
				return err
			}
			for _, id := range ids {
				mark(id, got)
				if got > 0 {
					mark(id, got-1)
				}
			}
			d = got + 1
		}
	}
	// Dirty markers: the days their buckets cover.
	for valid := it.SeekGE([]byte{kindDirty}); valid && it.Key()[0] == kindDirty; valid = it.Next() {
		k := it.Key()
		if len(k) != 18 && len(k) != 26 || int(k[1]) >= len(db.tiers) {
			continue
		}
		start := int64(binary.BigEndian.Uint64(k[2:]))
		id := binary.BigEndian.Uint64(k[10:])
		for d := dayOf(start + 1); d <= dayOf(start+db.tiers[k[1]].res); d++ {
			mark(id, d)
		}
	}
	// Samples for the tiers only: chunks of their days.
	var key, val []byte
	var cur []series.Sample
	var curID uint64
	writeChunks := func() {
		for len(cur) > 0 {
			a := chunk.NewAppender()
			d := dayOf(cur[0].T)
			n := 0
			for n < len(cur) && n < 120 && dayOf(cur[n].T) == d {
				a.Append(cur[n].T, cur[n].V)
				n++
			}
			key = chunkKey(key[:0], d, curID, a.MinT())
			val = appendChunkValue(val[:0], a.MinT(), a.MaxT(), chunk.Optimize(a.Bytes()))
			b.Set(key, val, nil)
			mark(curID, d)
			cur = cur[n:]
		}
	}
	nb := 0
	for valid := it.SeekGE([]byte{kindBackfill}); valid && it.Key()[0] == kindBackfill; valid = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != 17 || len(v) != 8 {
			continue
		}
		id, t := binary.BigEndian.Uint64(k[1:]), int64(binary.BigEndian.Uint64(k[9:]))
		if id != curID {
			writeChunks()
			curID = id
		}
		cur = append(cur, series.Sample{T: t, V: math.Float64frombits(binary.LittleEndian.Uint64(v))})
		nb++
	}
	writeChunks()
	if err := it.Error(); err != nil {
		return err
	}
	labels := map[uint64]series.Labels{}
	for m := range marked {
		id, day := m[0], uint32(m[1])
		b.Set(rollMarkKey(nil, id, day), gen, nil)
		ls, ok := labels[id]
		if !ok {
			if ls, err = db.storedLabels(id); err != nil {
				continue // a marker of a series collected since: nothing to roll up
			}
			labels[id] = ls
		}
		if _, err := db.postTiers(b, id, ls, day, now, nil); err != nil {
			return err
		}
	}
	for _, kind := range []byte{kindDirty, kindBackfill} {
		b.DeleteRange([]byte{kind}, []byte{kind + 1}, nil)
	}
	wmPrefix := metaKey("rollup-watermark-")
	b.DeleteRange(wmPrefix, prefixEnd(wmPrefix), nil)
	if err := setFloor(floor); err != nil {
		return err
	}
	if len(marked) > 0 || nb > 0 {
		db.opts.Logger.Info("converted the rollup state to roll markers", "series_days", len(marked), "tier_samples", nb,
			"raw_floor", dayString(floor), "took", time.Since(started).Round(time.Millisecond))
	}
	return nil
}
