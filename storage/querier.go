package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/series"
)

// Querier reads a time range. It sees every sample committed before it was
// created (and possibly later ones). Not safe for concurrent use; Close it.
type Querier struct {
	db         *DB
	mint, maxt int64
	it         *pebble.Iterator
	itGen      uint64   // db.cpGen when it was created
	dayList    []uint32 // day partitions in the range that hold postings
	daysErr    error
	daysDone   bool
	// With reuse, stored chunks are copied into arena, reused from series
	// to series (ReuseBuffers).
	reuse bool
	arena []byte
	spans []chunkSpan
	refs  []chunkRef
	// histOnly: HistogramsOnly.
	histOnly bool
}

// chunkSpan is a stored chunk's place in Querier.arena.
type chunkSpan struct {
	minT, maxT int64
	off, n     int
}

// ReuseBuffers makes the querier copy the chunks it reads from Pebble
// into buffers reused from series to series: a scan then allocates
// nothing per chunk. A series' iterator is valid only until the next call
// of Next on its set (the query engine reads each series before the
// next; a caller that keeps several iterators must not use this).
func (q *Querier) ReuseBuffers() { q.reuse = true }

// HistogramsOnly makes the querier read native histograms alone: float
// samples are not read, and a series without histograms in the range is
// skipped (a query reads the histograms that a rollup tier, which keeps
// floats only, does not have).
func (q *Querier) HistogramsOnly() { q.histOnly = true }

// Querier returns a reader of [mint, maxt] (milliseconds, inclusive).
func (db *DB) Querier(mint, maxt int64) (*Querier, error) {
	if db.closed.Load() {
		return nil, series.ErrClosed
	}
	if mint < MinTime {
		mint = MinTime
	}
	if maxt > MaxTime {
		maxt = MaxTime
	}
	gen := db.cpGen.Load()
	it, err := db.pdb.NewIter(nil)
	if err != nil {
		return nil, err
	}
	return &Querier{db: db, mint: mint, maxt: maxt, it: it, itGen: gen}, nil
}

// Close releases the querier's resources.
func (q *Querier) Close() error { return q.it.Close() }

// days returns the day partitions of the range that hold any series, found
// by skipping from one day's postings to the next: a range of years with
// data on a few days costs a few seeks. Every chunk lies in a day that has
// postings for its series, so these days are all a query must read.
func (q *Querier) days() ([]uint32, error) {
	if q.daysDone {
		return q.dayList, q.daysErr
	}
	q.daysDone = true
	if q.maxt < q.mint {
		return nil, nil
	}
	// Partitions of both layouts (left-open days, and the closed-left
	// days of chunks written before) that can hold samples in the range.
	first, last := dayOf(q.mint), closedDayOf(q.maxt)
	for d := first; ; {
		if !q.it.SeekGE(binary.BigEndian.AppendUint32([]byte{kindPostings}, d)) {
			break
		}
		k := q.it.Key()
		if len(k) < 5 || k[0] != kindPostings {
			break
		}
		got := binary.BigEndian.Uint32(k[1:])
		if got > last {
			break
		}
		q.dayList = append(q.dayList, got)
		if got == last {
			break
		}
		d = got + 1
	}
	q.daysErr = q.it.Error()
	return q.dayList, q.daysErr
}

// Series is one selected series.
type Series struct {
	Labels series.Labels
	it     series.Iterator
	// Hists are the series' native histogram samples in [mint, maxt], in
	// time order. A series may hold floats and histograms, never both at
	// one timestamp as stored: the histogram then wins. They are the
	// caller's (the samples of a chunk share its spans: change none in
	// place).
	Hists []series.HistSample
}

// Iterator returns the series' samples in [mint, maxt], in time order,
// one per timestamp. Call it once.
func (s *Series) Iterator() series.Iterator { return s.it }

// SeriesSet iterates selected series in ID order.
type SeriesSet struct {
	q   *Querier
	ids []uint64
	i   int
	cur *Series
	err error
}

// Next loads the next series; false at the end or on error (see Err).
func (ss *SeriesSet) Next() bool {
	for ss.err == nil && ss.i < len(ss.ids) {
		id := ss.ids[ss.i]
		ss.i++
		s, err := ss.q.load(id)
		if err != nil {
			ss.err = err
			return false
		}
		if s != nil {
			ss.cur = s
			return true
		}
	}
	return false
}

// At returns the current series.
func (ss *SeriesSet) At() *Series { return ss.cur }

// Err returns the error that stopped Next.
func (ss *SeriesSet) Err() error { return ss.err }

// Len returns the number of candidate series (an upper bound: a candidate
// with no sample in the range is skipped).
func (ss *SeriesSet) Len() int { return len(ss.ids) }

// Select returns the series that have samples in the range and satisfy
// every matcher. At least one matcher must not match the empty string,
// as in Prometheus, so that a query cannot select everything by accident.
func (q *Querier) Select(ms ...*series.Matcher) (*SeriesSet, error) {
	if err := checkMatchers(ms); err != nil {
		return nil, err
	}
	days, err := q.days()
	if err != nil {
		return nil, err
	}
	ids, err := q.selectIn(days, ms)
	if err != nil {
		return nil, err
	}
	return &SeriesSet{q: q, ids: ids}, nil
}

func checkMatchers(ms []*series.Matcher) error {
	for _, m := range ms {
		if !m.Matches("") {
			return nil
		}
	}
	return fmt.Errorf("%w: a selector needs at least one matcher that does not match the empty string", series.ErrInvalid)
}

// selectIn returns the IDs of the series the matchers select in the
// postings partitions parts.
func (q *Querier) selectIn(parts []uint32, ms []*series.Matcher) ([]uint64, error) {
	var ids []uint64
	for _, d := range parts {
		day, err := selectDay(q.it, d, ms)
		if err != nil {
			return nil, fmt.Errorf("select partition %d: %w", d, err)
		}
		ids = union(ids, day)
	}
	return ids, nil
}

// labelParts returns the postings partitions the series and label APIs
// read: the raw days of the range, and, for the part of it whose raw
// days are gone (or may be, for a series a retention rule keeps
// shorter), every tier's partitions there: a series that only a tier
// keeps is listed too.
func (q *Querier) labelParts() ([]uint32, error) {
	days, err := q.days()
	if err != nil {
		return nil, err
	}
	parts := slices.Clone(days)
	db := q.db
	if len(db.tiers) == 0 {
		return parts, nil
	}
	shortest := min(db.opts.Retention, db.shortestRule(-1))
	hi := min(q.maxt, max(int64(db.rawFloor.Load())*msPerDay, db.opts.Now().UnixMilli()-shortest.Milliseconds()))
	if q.mint > hi {
		return parts, nil
	}
	for _, t := range db.tiers {
		got, err := tierParts(q.it, t.idx, q.mint/t.span, hi/t.span)
		if err != nil {
			return nil, err
		}
		for _, p := range got {
			parts = append(parts, postingsPart(t.idx, p))
		}
	}
	return parts, nil
}

// shardOf is the shard of shards that reads series id. The parts go by
// series ID, not by position in the selection: each shard's Querier sees
// the index as of its own creation, and a series created in between would
// shift the positions, so that one series was read by two shards (a
// duplicate label set in the answer) or by none.
func shardOf(id uint64, shards int) int {
	// Multiplicative hashing spreads IDs that share a stride (series
	// created in pairs, a selection of every other one).
	return int((id * 0x9E3779B97F4A7C15 >> 32) % uint64(shards))
}

// SelectShard is Select restricted to the shard-th of shards parts of the
// selection (see shardOf): several goroutines, each with its own Querier,
// read one selection in parallel.
func (q *Querier) SelectShard(shard, shards int, ms ...*series.Matcher) (*SeriesSet, error) {
	if shards < 1 || shard < 0 || shard >= shards {
		return nil, fmt.Errorf("%w: shard %d of %d", series.ErrInvalid, shard, shards)
	}
	set, err := q.Select(ms...)
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, id := range set.ids {
		if shardOf(id, shards) == shard {
			ids = append(ids, id)
		}
	}
	set.ids = ids
	return set, nil
}

// Series is Select as a series.Set, the shape the query engine reads.
func (q *Querier) Series(ms ...*series.Matcher) (series.Set, error) {
	set, err := q.Select(ms...)
	if err != nil {
		return nil, err
	}
	return setView{set}, nil
}

// SeriesShard is SelectShard as a series.Set.
func (q *Querier) SeriesShard(shard, shards int, ms ...*series.Matcher) (series.Set, error) {
	set, err := q.SelectShard(shard, shards, ms...)
	if err != nil {
		return nil, err
	}
	return setView{set}, nil
}

// setView shows a SeriesSet as a series.Set.
type setView struct{ *SeriesSet }

func (v setView) At() (series.Labels, series.Iterator) {
	s := v.SeriesSet.At()
	return s.Labels, s.Iterator()
}

// Hists returns the current series' native histogram samples (see
// series.HistSet).
func (v setView) Hists() []series.HistSample { return v.SeriesSet.At().Hists }

// load gathers one series' chunks from Pebble and the head; nil if it has
// no sample in the range.
func (q *Querier) load(id uint64) (*Series, error) {
	// The head first, then Pebble: a checkpoint stores chunks in Pebble
	// before it drops them from the head, so reading in this order (with a
	// Pebble view refreshed after any such drop) never misses a chunk in
	// flight. Seeing one in both places is harmless: the merge dedups.
	if q.histOnly {
		return q.loadHists(id)
	}
	var lset series.Labels
	var mem []chunkRef
	var flushing, ooo []series.Sample
	ms := q.db.series.getByID(id)
	if s := ms; s != nil {
		lset = s.lset
		s.mu.Lock()
		for _, c := range s.sealed {
			if c.maxT >= q.mint && c.minT <= q.maxt {
				mem = append(mem, chunkRef{c.minT, c.maxT, c.b})
			}
		}
		if s.head != nil && s.head.Count() > 0 && s.head.MaxT() >= q.mint && s.head.MinT() <= q.maxt {
			mem = append(mem, chunkRef{s.head.MinT(), s.head.MaxT(), append([]byte(nil), s.head.Bytes()...)})
		}
		if c, ok := s.pendChunkLocked(); ok && c.maxT >= q.mint && c.minT <= q.maxt {
			mem = append(mem, c)
		}
		flushing = clipSamples(s.oooFlushing, q.mint, q.maxt)
		ooo = clipSamples(s.ooo, q.mint, q.maxt)
		s.mu.Unlock()
	} else {
		var err error
		if lset, err = q.db.storedLabels(id); errors.Is(err, pebble.ErrNotFound) {
			return nil, nil // collected by retention since the index was read
		} else if err != nil {
			return nil, err
		}
	}

	if err := q.refreshIter(); err != nil {
		return nil, err
	}
	// Pebble's values live until the iterator moves: stored chunks are
	// copied, each on its own or, with reuse, into the arena (offsets
	// first, as the arena may grow).
	var stored []chunkRef
	arena, spans := q.arena[:0], q.spans[:0]
	days, err := q.days()
	if err != nil {
		return nil, err
	}
	for _, d := range days {
		err := q.eachChunk(kindChunk, d, id, func(_ []byte, minT, maxT int64, chk []byte) error {
			if q.reuse {
				spans = append(spans, chunkSpan{minT, maxT, len(arena), len(chk)})
				arena = append(arena, chk...)
			} else {
				stored = append(stored, chunkRef{minT, maxT, append([]byte(nil), chk...)})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}

	if q.reuse {
		q.arena, q.spans = arena, spans
		stored = q.refs[:0]
		for _, sp := range spans {
			stored = append(stored, chunkRef{sp.minT, sp.maxT, arena[sp.off : sp.off+sp.n]})
		}
		q.refs = stored
	}

	var its []series.Iterator
	if len(stored) > 0 && len(mem) > 0 {
		// The usual case: stored chunks, then the head's. A stored chunk
		// starting at or after the head's first chunk is an older copy of
		// head data (a checkpointed open chunk), which the head's copy
		// supersedes; late samples are stored before the head. When
		// nothing straddles the boundary, one chain reads both and the
		// merge (a quarter of a scan's time) is not needed.
		headStart := mem[0].minT
		n := len(stored)
		for n > 0 && stored[n-1].minT >= headStart {
			n--
		}
		if n == 0 || stored[n-1].maxT < headStart {
			stored, mem = append(stored[:n:n], mem...), nil
		}
	}
	if len(stored) > 0 {
		// Keys order chunks by day, then start: in time order, but for a
		// day of the older, closed-left layout next to one of the
		// current layout, which may hold the same midnight sample.
		its = appendChains(its, stored)
	}
	if len(mem) > 0 {
		its = append(its, newChainIter(mem))
	}
	if len(flushing) > 0 {
		its = append(its, series.SliceIterator(flushing))
	}
	if len(ooo) > 0 {
		its = append(its, series.SliceIterator(ooo))
	}
	var hists []series.HistSample
	if q.db.hasHist.Load() {
		if hists, err = q.histograms(id, ms, days); err != nil {
			return nil, err
		}
	}
	var it series.Iterator
	switch len(its) {
	case 0:
		if len(hists) > 0 {
			return &Series{Labels: lset, it: series.SliceIterator(nil), Hists: hists}, nil
		}
		return nil, nil
	case 1:
		it = its[0]
	default:
		it = &mergeIter{its: its, ok: make([]bool, len(its))}
	}
	return &Series{Labels: lset, it: &clipIter{it: it, mint: q.mint, maxt: q.maxt}, Hists: hists}, nil
}

// eachChunk calls keep with each chunk of kind (kindChunk, kindHistChunk)
// of series id in day partition d that reaches into the querier's range,
// in time order: the one starting before mint, then those from mint on.
// The key and chunk are Pebble's, valid until keep returns.
func (q *Querier) eachChunk(kind byte, d uint32, id uint64, keep func(k []byte, minT, maxT int64, chk []byte) error) error {
	// Keys built in a stack buffer: two per series and day.
	var kb [2 * 21]byte
	prefix := chunkKey(kb[:0], d, id, 0)[:13]
	from := chunkKey(kb[21:21], d, id, q.mint)
	prefix[0], from[0] = kind, kind
	visit := func() error {
		k := q.it.Key()
		maxT, chk, err := parseChunkValue(k, q.it.Value())
		if err != nil {
			return fmt.Errorf("series %d: %w", id, err)
		}
		_, _, minT, _ := parseChunkKey(k)
		if maxT < q.mint || minT > q.maxt {
			return nil
		}
		return keep(k, minT, maxT, chk)
	}
	if q.it.SeekLT(from) && len(q.it.Key()) == 21 && string(q.it.Key()[:13]) == string(prefix) {
		if err := visit(); err != nil {
			return err
		}
	}
	for valid := q.it.SeekGE(from); valid && len(q.it.Key()) >= 13 && string(q.it.Key()[:13]) == string(prefix); valid = q.it.Next() {
		_, _, minT, _ := parseChunkKey(q.it.Key())
		if minT > q.maxt {
			break
		}
		if err := visit(); err != nil {
			return err
		}
	}
	return q.it.Error()
}

// refreshIter makes the Pebble view newer than any checkpoint that
// dropped chunks from the head since it was taken.
func (q *Querier) refreshIter() error {
	if gen := q.db.cpGen.Load(); gen != q.itGen {
		it, err := q.db.pdb.NewIter(nil)
		if err != nil {
			return err
		}
		q.it.Close()
		q.it, q.itGen = it, gen
	}
	return nil
}

// appendChains appends iterators over chunks (ordered by start) to its:
// one chain when no chunk overlaps the one before it, as is the rule,
// else as many as it takes for none to overlap within a chain, merged.
func appendChains(its []series.Iterator, chunks []chunkRef) []series.Iterator {
	overlap := false
	for i := 1; i < len(chunks); i++ {
		if chunks[i].minT <= chunks[i-1].maxT {
			overlap = true
			break
		}
	}
	if !overlap {
		return append(its, newChainIter(chunks))
	}
	var chains [][]chunkRef
	for _, c := range chunks {
		placed := false
		for i := range chains {
			if chains[i][len(chains[i])-1].maxT < c.minT {
				chains[i] = append(chains[i], c)
				placed = true
				break
			}
		}
		if !placed {
			chains = append(chains, []chunkRef{c})
		}
	}
	for _, ch := range chains {
		its = append(its, newChainIter(ch))
	}
	return its
}

func clipSamples(s []series.Sample, mint, maxt int64) []series.Sample {
	i := sort.Search(len(s), func(i int) bool { return s[i].T >= mint })
	j := sort.Search(len(s), func(j int) bool { return s[j].T > maxt })
	if i >= j {
		return nil
	}
	return slices.Clone(s[i:j])
}

// LabelNames returns the label names of series with samples in the range
// (by day partition), sorted. With matchers, only the series they select
// count (as in Prometheus's /api/v1/labels?match[]=).
func (q *Querier) LabelNames(ms ...*series.Matcher) ([]string, error) {
	set := map[string]struct{}{}
	if len(ms) > 0 {
		err := q.eachSelected(ms, func(ls series.Labels) {
			for _, l := range ls {
				set[l.Name] = struct{}{}
			}
		})
		return sortedKeys(set), err
	}
	parts, err := q.labelParts()
	if err != nil {
		return nil, err
	}
	for _, d := range parts {
		if err := labelNamesDay(q.it, d, set); err != nil {
			return nil, err
		}
	}
	return sortedKeys(set), nil
}

// LabelValues returns the values of label name in the range, sorted. With
// matchers, only the series they select count.
func (q *Querier) LabelValues(name string, ms ...*series.Matcher) ([]string, error) {
	set := map[string]struct{}{}
	if len(ms) > 0 {
		err := q.eachSelected(ms, func(ls series.Labels) {
			if v := ls.Get(name); v != "" {
				set[v] = struct{}{}
			}
		})
		return sortedKeys(set), err
	}
	parts, err := q.labelParts()
	if err != nil {
		return nil, err
	}
	for _, d := range parts {
		if err := labelValuesDay(q.it, d, name, set); err != nil {
			return nil, err
		}
	}
	return sortedKeys(set), nil
}

// SelectLabels returns the label sets of the series the matchers select
// in the range's day partitions, in ID order, reading no chunks (as
// Prometheus's /api/v1/series, a series counts if its day partition
// overlaps the range). The label sets must not be modified.
func (q *Querier) SelectLabels(ms ...*series.Matcher) ([]series.Labels, error) {
	var out []series.Labels
	err := q.eachSelected(ms, func(ls series.Labels) { out = append(out, ls) })
	return out, err
}

// eachSelected calls f with the labels of every series the matchers
// select in the range's day partitions, reading no chunks.
func (q *Querier) eachSelected(ms []*series.Matcher, f func(series.Labels)) error {
	if err := checkMatchers(ms); err != nil {
		return err
	}
	parts, err := q.labelParts()
	if err != nil {
		return err
	}
	ids, err := q.selectIn(parts, ms)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if s := q.db.series.getByID(id); s != nil {
			f(s.lset)
			continue
		}
		ls, err := q.db.storedLabels(id)
		if errors.Is(err, pebble.ErrNotFound) {
			continue // collected by retention since the index was read
		}
		if err != nil {
			return err
		}
		f(ls)
	}
	return nil
}

func sortedKeys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
