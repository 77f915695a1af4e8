package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/series"
)

// Roll markers are the downsampler's work list, one key a series and day
// ('Q' seriesID day -> generation). Whatever writes raw chunks into
// Pebble (a checkpoint storing the head's chunks, merging late samples
// into stored ones, converting a legacy directory) sets the marker of
// every day it touched in the same batch, with a fresh generation. The
// downsampler rolls a marked day up from what Pebble holds and deletes
// the marker only if its generation is still the one it read, under
// cpMu, which every marker writer holds: a day written again while it was
// being rolled up keeps its marker and is rolled up again. A day whose
// marker is set (or whose samples are still only in the head) is computed
// from its raw samples when a query reads the tier, so tiers are exact
// however far the downsampler is behind.
//
// The generation is the clock in nanoseconds, made strictly increasing:
// it also tells how long the day has gone without a write (the
// downsampler waits for a quiet day).

// nextGen returns a generation greater than every one before it.
func (db *DB) nextGen() uint64 {
	now := uint64(max(db.opts.Now().UnixNano(), 0))
	for {
		old := db.gen.Load()
		n := max(old+1, now)
		if db.gen.CompareAndSwap(old, n) {
			return n
		}
	}
}

// markWriter sets the roll markers of the series' days a checkpoint
// writes, once per day and batch.
//
// Every batch needs a generation of its own (newBatch): the downsampler
// may read a snapshot between two batches of one checkpoint, and a
// marker the second batch set again with the first one's generation
// would look unchanged to it.
type markWriter struct {
	db   *DB
	gen  uint64
	done map[uint64]uint32 // series -> last day marked in this batch + 1
	k, v []byte
}

func (db *DB) newMarkWriter() *markWriter {
	if len(db.tiers) == 0 {
		return nil
	}
	m := &markWriter{db: db, done: map[uint64]uint32{}}
	m.newBatch()
	return m
}

// newBatch starts the markers of the next batch.
func (m *markWriter) newBatch() {
	if m == nil {
		return
	}
	m.gen = m.db.nextGen()
	clear(m.done)
}

// mark marks the days of samples in [minT, maxT] of series id.
func (m *markWriter) mark(b *pebble.Batch, id uint64, minT, maxT int64) error {
	if m == nil {
		return nil
	}
	m.v = binary.BigEndian.AppendUint64(m.v[:0], m.gen)
	for d := dayOf(minT); d <= dayOf(maxT); d++ {
		if m.done[id] == d+1 {
			continue
		}
		m.done[id] = d + 1
		m.k = rollMarkKey(m.k[:0], id, d)
		if err := b.Set(m.k, m.v, nil); err != nil {
			return err
		}
	}
	return nil
}

// postTiers writes series ls's postings in the partition of day of every
// tier that keeps it: a tier query finds a series through its tier's
// postings, before the day is rolled up as after its raw days are gone.
// Written with the raw postings of the day, in the commit's batch.
func (db *DB) postTiers(b *pebble.Batch, id uint64, ls series.Labels, day uint32, now int64, buf []byte) ([]byte, error) {
	return db.postTiersOf(b, nil, id, ls, day, now, buf)
}

// postTiersOf is postTiers, skipping the partitions head series s wrote
// its postings in lately (s may be nil; else called with s.postMu held).
func (db *DB) postTiersOf(b *pebble.Batch, s *memSeries, id uint64, ls series.Labels, day uint32, now int64, buf []byte) ([]byte, error) {
	for _, t := range db.tiers {
		part := int64(day) * msPerDay / t.span
		k := postedKeyOf(t.idx, uint32(part))
		if s != nil && s.posted.has(k) {
			continue
		}
		if !db.keeps(t.idx, ls, day, now) {
			continue
		}
		if s != nil {
			s.posted.add(k)
		}
		var err error
		if buf, err = setPostings(b, postingsPart(t.idx, part), id, ls, buf); err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// The raw floor: every raw day partition before it has been dropped by
// retention (after the tiers took in its samples). A day at or after the
// floor (and after the series' own floor, 'F', set by a retention rule)
// holds all of its raw samples, and the downsampler computes the day's
// buckets from them, replacing what the tiers held. Chunks in a day before
// the floor hold samples that came after the day was dropped: the
// downsampler adds them to the tiers' buckets (merge mode) and deletes
// them. The floor only grows, in the same batch as the drop.

func floorMetaKey() []byte { return metaKey("raw-floor") }

// readFloor reads the raw floor from r.
func readFloor(r pebble.Reader) (uint32, bool, error) {
	v, closer, err := r.Get(floorMetaKey())
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	if len(v) != 4 {
		return 0, false, &CorruptionError{Key: floorMetaKey(), Err: fmt.Errorf("%d bytes, want 4", len(v))}
	}
	return binary.BigEndian.Uint32(v), true, nil
}

// seriesFloor reads series id's own floor from r (0: none).
func seriesFloor(r pebble.Reader, id uint64) (uint32, error) {
	v, closer, err := r.Get(floorKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 4 {
		return 0, &CorruptionError{Key: floorKey(id), Err: fmt.Errorf("%d bytes, want 4", len(v))}
	}
	return binary.BigEndian.Uint32(v), nil
}

// seriesFloorAt is seriesFloor through an iterator of a view.
func seriesFloorAt(it *pebble.Iterator, id uint64) (uint32, error) {
	k := floorKey(id)
	if !it.SeekGE(k) || !bytes.Equal(it.Key(), k) {
		return 0, it.Error()
	}
	if len(it.Value()) != 4 {
		return 0, &CorruptionError{Key: k, Err: fmt.Errorf("%d bytes, want 4", len(it.Value()))}
	}
	return binary.BigEndian.Uint32(it.Value()), nil
}

// floorOf is series s's effective floor: the raw floor or its own.
func (db *DB) floorOf(s *memSeries) uint32 {
	return max(db.rawFloor.Load(), s.floorDay.Load())
}

// parseRollMark splits a marker key and value.
func parseRollMark(k, v []byte) (id uint64, day uint32, gen uint64, ok bool) {
	if len(k) != 13 || k[0] != kindRollMark || len(v) != 8 {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint32(k[9:]), binary.BigEndian.Uint64(v), true
}
