package storage

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// EachStoredRollup is EachRollup for a copy of the tier to another store
// (a cluster node taking a partition): f gets each selected series'
// blocks covering [mint, maxt] as this store keeps them, neither decoded
// nor encoded again, with their sketch blocks when sketches is set (the
// tier must keep them). A series with days the tier does not hold as
// they are (marked for the downsampler, or with samples only the head
// has) gets its blocks computed as EachRollup computes them and encoded
// as the downsampler would write them. The blocks' memory is f's only
// during the call.
//
// With toFloor, each series' blocks are those before its own raw floor
// (retention rules give series floors of their own), maxt extended to
// the latest floor a series can have, and f gets that floor: a copy
// imports the tier buckets before it and copies the raw samples after
// it. Without, f gets maxt+1.
func (db *DB) EachStoredRollup(tier int, mint, maxt int64, sketches, toFloor bool, shard, shards int, ms []*series.Matcher, f func(ls series.Labels, floor int64, blocks []rollup.StoredBlock) error) (RollupRead, error) {
	var rr RollupRead
	t, err := db.tierAt(tier)
	if err != nil {
		return rr, err
	}
	if sketches && !t.sketches {
		return rr, fmt.Errorf("%w: the %v tier keeps no quantile sketches", series.ErrInvalid, t.Resolution)
	}
	if toFloor {
		maxt = max(maxt, db.LatestRawFloor()-1)
	}
	if mint > maxt {
		return rr, nil
	}
	mint, maxt = max(mint, 0), max(maxt, 0)
	parts, ids, err := db.tierSelect(tier, mint, maxt, shard, shards, ms)
	if err != nil {
		return rr, err
	}
	lo, hi := mint+1, maxt+t.res
	heads := db.headCopies(ids, lo, hi)
	cols := uint(rollup.ColAll)
	if !sketches {
		cols &^= rollup.ColSketch
	}
	r, err := db.newTierReader(t, parts, lo, hi, cols, false)
	if err != nil {
		return rr, err
	}
	defer r.close()
	var (
		c      rollup.Columns
		out    []rollup.StoredBlock
		arena  []byte // the blocks' bytes, reused from series to series
		bounds [][2]int
	)
	for _, id := range ids {
		if err := db.checkClosing(); err != nil {
			return rr, err
		}
		days, err := r.pendingDays(id, heads[id])
		if err != nil {
			return rr, err
		}
		floor := maxt + 1
		if toFloor {
			sf, err := seriesFloorAt(r.rawIt, id)
			if err != nil {
				return rr, err
			}
			floor = int64(max(r.floor, sf)) * msPerDay
			// Days after the floor the copy takes as raw samples.
			kept := days[:0]
			for _, d := range days {
				if int64(d)*msPerDay < floor {
					kept = append(kept, d)
				}
			}
			days = kept
		}
		out, arena, bounds = out[:0], arena[:0], bounds[:0]
		if len(days) == 0 {
			// As stored: the common case, and the copy's whole point.
			for pi, p := range r.parts {
				if p*t.span >= floor {
					break
				}
				col, sk, found, err := r.stored(pi, id, sketches)
				if err != nil {
					return rr, err
				}
				if !found {
					continue
				}
				vs := [][]byte{col}
				if sketches {
					vs = append(vs, sk)
				}
				for _, v := range vs {
					at := len(arena)
					arena = append(arena, v...)
					bounds = append(bounds, [2]int{at, len(arena)})
				}
				out = append(out, rollup.StoredBlock{Start: p * t.span})
			}
		} else {
			// Computed as a read computes them, then encoded a block at
			// a time.
			c.Reset()
			if err := r.blocks(&c, id, cols); err != nil {
				return rr, err
			}
			if err := r.exact(&c, id, days, heads[id]); err != nil {
				return rr, fmt.Errorf("series %d: %w", id, err)
			}
			rr.RawDays += len(days)
			for i := 0; i < len(r.all) && r.all[i].Start < floor; {
				p := r.all[i].Start / t.span
				j := i
				for j < len(r.all) && r.all[j].Start/t.span == p {
					j++
				}
				at := len(arena)
				if arena, err = rollup.AppendBlock(arena, r.all[i:j]); err != nil {
					return rr, fmt.Errorf("series %d: %w", id, err)
				}
				bounds = append(bounds, [2]int{at, len(arena)})
				if sketches {
					at := len(arena)
					arena = rollup.AppendSketches(arena, r.all[i:j])
					bounds = append(bounds, [2]int{at, len(arena)})
				}
				out = append(out, rollup.StoredBlock{Start: p * t.span})
				i = j
			}
		}
		if len(out) == 0 {
			continue
		}
		// The arena grew while the blocks were added: sliced at the end.
		k := 0
		for i := range out {
			out[i].Columns = arena[bounds[k][0]:bounds[k][1]]
			k++
			if sketches {
				out[i].Sketches = arena[bounds[k][0]:bounds[k][1]]
				k++
			}
		}
		ls, err := r.labels(id)
		if err != nil {
			return rr, err
		}
		if err := f(ls, floor, out); err != nil {
			return rr, err
		}
	}
	return rr, nil
}

// LatestRawFloor is the latest a series' own raw floor can be now: the
// store's floor, or the day the shortest raw retention (a rule's or the
// default) starts from.
func (db *DB) LatestRawFloor() int64 {
	shortest := db.opts.Retention
	if db.hasRules(-1) {
		shortest = min(shortest, db.shortestRule(-1))
	}
	day := max(db.opts.Now().UnixMilli()-shortest.Milliseconds(), 0) / msPerDay
	return max(db.RawOldest(), (day+1)*msPerDay)
}

// SeriesRawFloor is the time before which series ls keeps no raw
// samples: the store's raw floor, or its own where a retention rule
// dropped its raw days series by series.
func (db *DB) SeriesRawFloor(ls series.Labels) (int64, error) {
	floor := db.rawFloor.Load()
	id, err := db.lookupStored(ls.Hash(), ls)
	if err != nil || id == 0 {
		return int64(floor) * msPerDay, err
	}
	v, closer, err := db.pdb.Get(floorKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return int64(floor) * msPerDay, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 4 {
		return 0, &CorruptionError{Key: floorKey(id), Err: fmt.Errorf("%d bytes, want 4", len(v))}
	}
	return int64(max(floor, binary.BigEndian.Uint32(v))) * msPerDay, nil
}
