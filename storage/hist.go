package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/series"
)

// Native histogram samples share the float samples' series, postings,
// log and checkpoints, and keep their own chunks ('N' keys, chunk format
// EncHistogram / EncFloatHistogram). Unlike floats they have one path
// for in-order and late samples alike: the head keeps them sorted until
// a checkpoint merges each day's into that day's stored chunks,
// re-encoding the newest stored chunk when it has room, so a day ends
// in full chunks whatever order its samples came in. A histogram sample
// is a few hundred bytes in memory, a few dozen stored: the head holds a
// checkpoint interval's worth.
//
// Rollup tiers do not keep histograms yet, so a histogram sample older
// than raw retention is refused even when a tier would keep a float.

type pendingHist struct {
	s *memSeries
	t int64
	h *series.Histogram
}

// AppendHistogram adds one native histogram sample of the series ls
// (sorted by name), as Append does a float. h is copied. A histogram
// that Validate refuses, or a time outside what raw retention keeps, is
// refused with an error naming the series.
func (a *Appender) AppendHistogram(ls series.Labels, t int64, h *series.Histogram) error {
	return a.appendHistogram(ls, t, h, true)
}

// AppendHistogramOwned is AppendHistogram without the copy: the appender
// takes h, which the caller must not change afterwards (a decoder that
// made it for this request).
func (a *Appender) AppendHistogramOwned(ls series.Labels, t int64, h *series.Histogram) error {
	return a.appendHistogram(ls, t, h, false)
}

func (a *Appender) appendHistogram(ls series.Labels, t int64, h *series.Histogram, copy bool) error {
	if err := a.checkTime(ls, t); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return fmt.Errorf("series %s at %d: %w", ls, t, err)
	}
	s, err := a.db.getOrCreate(ls, !a.noLimits)
	if err != nil {
		return err
	}
	a.db.hasHist.Store(true)
	if copy {
		h = h.Clone()
	}
	a.hists = append(a.hists, pendingHist{s, t, h})
	return nil
}

// walRecordV2 is a log record that holds histograms (part of the on-disk
// format: never change). Records of floats only stay walRecordV1.
//
//	byte 0     2
//	then       walRecordV1's body: uvarint count, the float samples
//	uvarint    histogram count
//	per sample uvarint series ID, varint timestamp delta from the previous
//	           histogram of the record (the first from 0), the histogram
//	           (series.AppendHistogramBinary)
const walRecordV2 = 2

func (a *Appender) encodeHists(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(a.hists)))
	prev := int64(0)
	for _, p := range a.hists {
		dst = binary.AppendUvarint(dst, p.s.id)
		dst = binary.AppendVarint(dst, p.t-prev)
		prev = p.t
		dst = series.AppendHistogramBinary(dst, p.h)
	}
	return dst
}

// applyHistRecord applies the histogram part of a walRecordV2.
func (db *DB) applyHistRecord(rec []byte, posts map[postedKey]struct{}) (int64, error) {
	cnt, k := binary.Uvarint(rec)
	if k <= 0 {
		return 0, errors.New("bad histogram count")
	}
	rec = rec[k:]
	prev, n := int64(0), int64(0)
	for i := uint64(0); i < cnt; i++ {
		id, k1 := binary.Uvarint(rec)
		if k1 <= 0 {
			return n, errors.New("truncated histogram")
		}
		dt, k2 := binary.Varint(rec[k1:])
		if k2 <= 0 {
			return n, errors.New("truncated histogram")
		}
		h, k3, err := series.ReadHistogramBinary(rec[k1+k2:])
		if err != nil {
			return n, err
		}
		rec = rec[k1+k2+k3:]
		t := prev + dt
		prev = t
		s, err := db.seriesByID(id)
		if err != nil {
			return n, err
		}
		db.hasHist.Store(true)
		db.applyHist(s, t, h)
		posts[postedKey{id, dayOf(t)}] = struct{}{}
		n++
	}
	if len(rec) != 0 {
		return n, fmt.Errorf("%d bytes after the histograms", len(rec))
	}
	return n, nil
}

// applyHist adds one committed histogram to the head; a sample at a time
// already there replaces it. Called with db.applyMu held, in log order.
func (db *DB) applyHist(s *memSeries, t int64, h *series.Histogram) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.touched = db.cpCount.Load()
	s.hist = insertHist(s.hist, series.HistSample{T: t, H: h})
}

func insertHist(hs []series.HistSample, x series.HistSample) []series.HistSample {
	if n := len(hs); n == 0 || hs[n-1].T < x.T {
		return append(hs, x)
	}
	i := sort.Search(len(hs), func(i int) bool { return hs[i].T >= x.T })
	if hs[i].T == x.T {
		hs[i] = x
		return hs
	}
	hs = append(hs, series.HistSample{})
	copy(hs[i+1:], hs[i:])
	hs[i] = x
	return hs
}

func (s *memSeries) histEmptyLocked() bool { return len(s.hist) == 0 && len(s.histFlushing) == 0 }

// mergeHists merges two sorted, unique-by-time runs; on equal timestamps
// the sample of newer wins.
func mergeHists(older, newer []series.HistSample) []series.HistSample {
	return mergeByTime(older, newer, func(s series.HistSample) int64 { return s.T })
}

// readHistChunk appends the samples of a stored histogram chunk, the
// caller's (chunk.AppendHistograms).
func readHistChunk(dst []series.HistSample, key, chk []byte) ([]series.HistSample, error) {
	dst, err := chunk.AppendHistograms(dst, chk)
	if err != nil {
		return dst, &CorruptionError{Key: append([]byte(nil), key...), Err: err}
	}
	return dst, nil
}

// histChunkRoom says whether a stored chunk may take more samples, so
// that live data extends it rather than starting chunks of one
// checkpoint's samples each.
func (db *DB) histChunkRoom(chk []byte, minT, t int64) bool {
	return len(chk) >= 3 && int(binary.BigEndian.Uint16(chk[1:3])) < db.opts.ChunkSamples &&
		t-minT < db.opts.ChunkSpan.Milliseconds()
}

// mergeHistDay merges a day's histogram samples of series s (sorted)
// into the stored chunks they overlap, and into the chunk before them
// when it has room, re-cutting the result into chunks.
func (db *DB) mergeHistDay(b *pebble.Batch, s *memSeries, day uint32, late []series.HistSample, cut int64) error {
	minO, maxO := late[0].T, late[len(late)-1].T
	prefix := histChunkKey(nil, day, s.id, 0)[:13]
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	var old []series.HistSample
	take := func(chk []byte) error {
		k := append([]byte(nil), it.Key()...)
		if old, err = readHistChunk(old, k, chk); err != nil {
			return err
		}
		b.Delete(k, nil)
		return nil
	}
	if it.SeekLT(histChunkKey(nil, day, s.id, minO)) {
		maxT, chk, err := parseChunkValue(it.Key(), it.Value())
		if err != nil {
			return err
		}
		_, _, minT, _ := parseChunkKey(it.Key())
		if maxT >= minO || db.histChunkRoom(chk, minT, minO) {
			if err := take(chk); err != nil {
				return err
			}
		}
	}
	for valid := it.SeekGE(histChunkKey(nil, day, s.id, minO)); valid; valid = it.Next() {
		_, _, minT, _ := parseChunkKey(it.Key())
		if minT > maxO {
			break
		}
		_, chk, err := parseChunkValue(it.Key(), it.Value())
		if err != nil {
			return err
		}
		if err := take(chk); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	all := mergeHists(old, late)
	var key, val []byte
	put := func(a *chunk.HistogramAppender, minT, maxT int64) {
		if a.Count() == 0 || maxT < cut {
			return
		}
		key = histChunkKey(key[:0], day, s.id, minT)
		val = appendChunkValue(val[:0], minT, maxT, a.Bytes())
		b.Set(key, val, nil)
		db.stats.ChunksWritten.Add(1)
	}
	all = chunk.WidenLayouts(all, db.opts.ChunkSamples, db.opts.ChunkSpan.Milliseconds())
	a := chunk.NewHistogramAppender()
	var minT, maxT int64
	for _, x := range all {
		if a.Count() > 0 && (a.Count() >= db.opts.ChunkSamples || x.T-minT >= db.opts.ChunkSpan.Milliseconds()) {
			put(a, minT, maxT)
			a = chunk.NewHistogramAppender()
		}
		err := a.Append(x.T, x.H)
		if errors.Is(err, chunk.ErrLayout) {
			put(a, minT, maxT)
			a = chunk.NewHistogramAppender()
			err = a.Append(x.T, x.H)
		}
		if err != nil {
			return fmt.Errorf("histogram at %d: %w", x.T, err)
		}
		if a.Count() == 1 {
			minT = x.T
		}
		maxT = x.T
	}
	put(a, minT, maxT)
	if day > s.histLastDay {
		s.histLastDay = day
		b.Set(histLastKey(s.id), binary.BigEndian.AppendUint32(nil, day), nil)
	}
	return nil
}

// histograms returns the histogram samples of series id in [mint, maxt]:
// the stored chunks of days, then the head's (s, when in the head), the
// newer copy of a timestamp winning.
func (q *Querier) histograms(id uint64, s *memSeries, days []uint32) ([]series.HistSample, error) {
	var mem []series.HistSample
	if s != nil {
		s.mu.Lock()
		mem = mergeHists(clipHists(s.histFlushing, q.mint, q.maxt), clipHists(s.hist, q.mint, q.maxt))
		if len(mem) > 0 {
			// Copies: the head's slices change under later appends, and
			// the caller owns what it is given.
			own := make([]series.HistSample, len(mem))
			for i, x := range mem {
				own[i] = series.HistSample{T: x.T, H: x.H.Clone()}
			}
			mem = own
		}
		s.mu.Unlock()
	}
	var stored []series.HistSample
	for _, d := range days {
		err := q.eachChunk(kindHistChunk, d, id, func(k []byte, _, _ int64, chk []byte) error {
			n := len(stored)
			var err error
			if stored, err = readHistChunk(stored, k, chk); err != nil {
				return err
			}
			// Chunks of a day do not overlap, and days are in order, but a
			// chunk may reach outside the range.
			clipped := clipHists(stored[n:], q.mint, q.maxt)
			stored = append(stored[:n], clipped...)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return mergeHists(stored, mem), nil
}

func clipHists(hs []series.HistSample, mint, maxt int64) []series.HistSample {
	i := sort.Search(len(hs), func(i int) bool { return hs[i].T >= mint })
	j := sort.Search(len(hs), func(i int) bool { return hs[i].T > maxt })
	return hs[i:j]
}

// anyHistChunk reports whether the store holds a histogram chunk or a
// histogram rollup block, so that queries of a store without histograms
// skip looking for them.
func anyHistChunk(pdb *pebble.DB) (bool, error) {
	// Or a histogram rollup block: once raw retention dropped every
	// histogram chunk (or a cluster copy imported only blocks), the
	// tiers still hold histograms.
	for _, kind := range []byte{kindHistChunk, kindHistRollup} {
		it, err := pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kind}, UpperBound: []byte{kind + 1}})
		if err != nil {
			return false, err
		}
		found := it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil || found {
			return found, err
		}
	}
	return false, nil
}

// HasHistograms reports whether the store holds native histograms (or a
// commit brought some since it opened).
func (db *DB) HasHistograms() bool { return db.hasHist.Load() }

// loadHists is load for HistogramsOnly: the series' histograms in the
// range, nil when it has none.
func (q *Querier) loadHists(id uint64) (*Series, error) {
	if !q.db.hasHist.Load() {
		return nil, nil
	}
	var lset series.Labels
	ms := q.db.series.getByID(id)
	if ms != nil {
		lset = ms.lset
	} else {
		var err error
		if lset, err = q.db.storedLabels(id); errors.Is(err, pebble.ErrNotFound) {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
	}
	if err := q.refreshIter(); err != nil {
		return nil, err
	}
	days, err := q.days()
	if err != nil {
		return nil, err
	}
	hists, err := q.histograms(id, ms, days)
	if err != nil || len(hists) == 0 {
		return nil, err
	}
	return &Series{Labels: lset, it: series.SliceIterator(nil), Hists: hists}, nil
}
