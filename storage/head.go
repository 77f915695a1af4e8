package storage

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/series"
)

const seriesStripes = 64

// seriesMap finds in-memory series by label hash and by ID. Striped so
// that concurrent appenders rarely meet on a lock.
type seriesMap struct {
	stripes [seriesStripes]struct {
		mu     sync.RWMutex
		byHash map[uint64][]*memSeries
		byID   map[uint64]*memSeries
	}
	n atomic.Int64
	// extra is the series' label bytes beyond the first KiB each, in
	// KiB: the active-series limit counts them as series, since a series
	// with 60 KiB of labels holds the memory of sixty.
	extra atomic.Int64

	// perMetric counts head series by metric name, for the per-metric
	// active-series limit; changed only when a series enters or leaves
	// the head, which is rare next to appends.
	metricMu  sync.Mutex
	perMetric map[string]int
}

func newSeriesMap() *seriesMap {
	m := &seriesMap{perMetric: map[string]int{}}
	for i := range m.stripes {
		m.stripes[i].byHash = map[uint64][]*memSeries{}
		m.stripes[i].byID = map[uint64]*memSeries{}
	}
	return m
}

func (m *seriesMap) len() int { return int(m.n.Load()) }

// weight is what a series counts for against the active-series limit.
func seriesWeight(ls series.Labels) int64 {
	n := 0
	for _, l := range ls {
		n += len(l.Name) + len(l.Value)
	}
	return int64(n / 1024)
}

// memKey hashes a label set for the in-memory series map, which is probed
// once per appended sample: see series.Labels.MemHash.
func memKey(ls series.Labels) uint64 { return ls.MemHash() }

// getByHash returns the series with labels ls, pinned (see memSeries.pins),
// or nil.
func (m *seriesMap) getByHash(h uint64, ls series.Labels) *memSeries {
	st := &m.stripes[h%seriesStripes]
	st.mu.RLock()
	defer st.mu.RUnlock()
	for _, s := range st.byHash[h] {
		if s.lset.Equal(ls) {
			s.pins.Add(1)
			return s
		}
	}
	return nil
}

// has reports whether a series with labels ls is in the map, without
// pinning it.
func (m *seriesMap) has(h uint64, ls series.Labels) bool {
	st := &m.stripes[h%seriesStripes]
	st.mu.RLock()
	defer st.mu.RUnlock()
	for _, s := range st.byHash[h] {
		if s.lset.Equal(ls) {
			return true
		}
	}
	return false
}

func (m *seriesMap) getByID(id uint64) *memSeries {
	st := &m.stripes[id%seriesStripes]
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.byID[id]
}

// add inserts s unless a series with the same labels is there already, and
// returns the one in the map, pinned if pin is set.
func (m *seriesMap) add(s *memSeries, pin bool) *memSeries {
	st := &m.stripes[s.mkey%seriesStripes]
	st.mu.Lock()
	for _, o := range st.byHash[s.mkey] {
		if o.lset.Equal(s.lset) {
			if pin {
				o.pins.Add(1)
			}
			st.mu.Unlock()
			return o
		}
	}
	if pin {
		s.pins.Add(1)
	}
	st.byHash[s.mkey] = append(st.byHash[s.mkey], s)
	st.mu.Unlock()
	st2 := &m.stripes[s.id%seriesStripes]
	st2.mu.Lock()
	st2.byID[s.id] = s
	st2.mu.Unlock()
	m.n.Add(1)
	m.extra.Add(seriesWeight(s.lset))
	m.metricMu.Lock()
	m.perMetric[s.lset.Get(series.MetricName)]++
	m.metricMu.Unlock()
	return s
}

// metricSeries returns the number of head series of one metric name.
func (m *seriesMap) metricSeries(name string) int {
	m.metricMu.Lock()
	defer m.metricMu.Unlock()
	return m.perMetric[name]
}

// topMetric returns the metric name with the most head series.
func (m *seriesMap) topMetric() (string, int) {
	m.metricMu.Lock()
	defer m.metricMu.Unlock()
	best, n := "", 0
	for name, c := range m.perMetric {
		if c > n || (c == n && name < best) {
			best, n = name, c
		}
	}
	return best, n
}

// evict removes s from the head if canEvict, called with s.mu held, still
// allows it and no appender holds it. Holding the hash stripe's write lock
// while checking pins keeps getByHash from handing s out meanwhile.
func (m *seriesMap) evict(s *memSeries, canEvict func() bool) bool {
	st := &m.stripes[s.mkey%seriesStripes]
	st.mu.Lock()
	// dead before the pins are read, and an appender by reference pins
	// before it reads dead (AppendRef): one of the two sees the other.
	s.dead.Store(true)
	if s.pins.Load() != 0 {
		s.dead.Store(false)
		st.mu.Unlock()
		return false
	}
	s.mu.Lock()
	ok := canEvict()
	s.mu.Unlock()
	if !ok {
		s.dead.Store(false)
		st.mu.Unlock()
		return false
	}
	list := st.byHash[s.mkey]
	for i, o := range list {
		if o == s {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(st.byHash, s.mkey)
	} else {
		st.byHash[s.mkey] = list
	}
	st.mu.Unlock()
	// The ID stripe may be the hash stripe: never hold both. A series
	// loaded again meanwhile under the same ID is another object: keep it.
	st2 := &m.stripes[s.id%seriesStripes]
	st2.mu.Lock()
	if st2.byID[s.id] == s {
		delete(st2.byID, s.id)
	}
	st2.mu.Unlock()
	m.n.Add(-1)
	m.extra.Add(-seriesWeight(s.lset))
	name := s.lset.Get(series.MetricName)
	m.metricMu.Lock()
	if m.perMetric[name]--; m.perMetric[name] <= 0 {
		delete(m.perMetric, name)
	}
	m.metricMu.Unlock()
	return true
}

// all returns every series in the head (a copy of the pointers).
func (m *seriesMap) all() []*memSeries {
	var out []*memSeries
	for i := range m.stripes {
		st := &m.stripes[i]
		st.mu.RLock()
		for _, s := range st.byID {
			out = append(out, s)
		}
		st.mu.RUnlock()
	}
	return out
}

// sealedChunk is a full chunk waiting for the next checkpoint to store it.
type sealedChunk struct {
	minT, maxT int64
	b          []byte // immutable
}

// memSeries is the head of one series.
type memSeries struct {
	// Immutable.
	id   uint64
	hash uint64 // Labels.Hash: the on-disk 'H' key
	mkey uint64 // memKey: the in-memory map's key
	lset series.Labels

	// created is set once the series' 'S' and 'H' keys are durable;
	// postedDay is the newest day whose postings are durable (+1, 0: none).
	created   atomic.Bool
	postedDay atomic.Uint32
	// pins counts samples of this series in appenders, not yet applied or
	// rolled back: a pinned series is never evicted from the head.
	pins atomic.Int32
	// floorDay is the series' own raw floor ('F', set by a retention
	// rule; 0: none): its raw days before it were dropped.
	floorDay atomic.Uint32
	// dead: evicted from the head (or being), see seriesMap.evict.
	dead atomic.Bool
	// posted remembers the postings partitions (raw days, tier
	// partitions) the series wrote its postings in lately, so that a
	// backfill in any order writes them about once, not with every
	// commit: a shuffled backfill wrote some 280 bytes of postings a
	// sample, and Pebble's compactions of them were most of its CPU.
	postMu sync.Mutex
	posted postedCache

	mu sync.Mutex
	// Guarded by mu.
	head      *chunk.Appender // open chunk; nil when none
	headDirty bool            // changed since the last checkpoint copy
	sealed    []sealedChunk   // oldest first
	// storedMaxT is the newest timestamp in sealed or stored chunks: a
	// sample at or before it, and before the open chunk, is out of order.
	storedMaxT int64
	// ooo holds out-of-order samples, sorted, unique by timestamp, until a
	// checkpoint merges them into stored chunks; oooFlushing holds the ones
	// a running checkpoint is merging. Newer writes win: ooo over
	// oooFlushing over chunks.
	ooo         []series.Sample
	oooFlushing []series.Sample
	// pend is a reorder window: the newest samples, sorted, all after the
	// open chunk's, not yet appended to it. Concurrent writers of one
	// series (a remote-write client's shards, several clients) deliver
	// its samples a little out of order; without the window each such
	// sample re-encoded the open chunk (a third of the server's CPU in
	// the fleet benchmark). It is allocated at a series' first sample
	// inside its open chunk's range, and emptied into the chunk at each
	// checkpoint, so that the checkpointed copy holds every sample the
	// checkpoint covers.
	pend []series.Sample
	// hist holds native histogram samples, sorted and unique by time,
	// until a checkpoint merges them into the stored histogram chunks of
	// their day ('N'); histFlushing the ones a running checkpoint is
	// merging. In-order and late samples take this one path (hist.go).
	hist, histFlushing []series.HistSample
	histLastDay        uint32 // newest day known to be recorded under 'L' id 'N'
	lastChunkDay       uint32 // newest day known to be recorded under 'L'
	// touched is the checkpoint count when a sample was last applied; a
	// series untouched for HeadIdleTimeout is evicted from the head.
	touched uint64
}

// getOrCreate returns the head series for ls, pinned, loading it from the
// index or allocating a new ID. Labels are validated only on a miss: a
// label set in the map has passed validation already. limits says
// whether the active-series limits refuse a series new to the head.
func (db *DB) getOrCreate(ls series.Labels, limits bool) (*memSeries, error) {
	mk := memKey(ls)
	if s := db.series.getByHash(mk, ls); s != nil {
		return s, nil
	}
	if err := ls.Validate(); err != nil {
		return nil, err
	}
	if limits {
		if err := db.checkSeriesLimits(ls); err != nil {
			return nil, err
		}
	}
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return nil, series.ErrClosed
	}
	// Series garbage collection must not delete the keys of a series that
	// is being brought back into the head.
	db.gcMu.RLock()
	defer db.gcMu.RUnlock()
	h := ls.Hash()
	id, err := db.lookupStored(h, ls)
	if err != nil {
		return nil, err
	}
	s := &memSeries{hash: h, mkey: mk, lset: ls.Copy(), storedMaxT: minInt64}
	if id != 0 {
		s.id = id
		s.created.Store(true)
		if err := db.loadSeriesFloor(s); err != nil {
			return nil, err
		}
		if err := db.loadHead(s); err != nil {
			return nil, err
		}
	} else {
		s.id = db.nextID.Add(1)
		db.stats.SeriesCreated.Add(1)
	}
	return db.series.add(s, true), nil
}

// checkSeriesLimits refuses a series that would enter the head beyond the
// active-series limits. Concurrent creators may overshoot a limit by at
// most their number: the check and the insert are not one step, which
// keeps the hot path free of a global lock.
func (db *DB) checkSeriesLimits(ls series.Labels) error {
	if max := db.opts.MaxActiveSeries; max > 0 {
		if n := db.series.len() + int(db.series.extra.Load()) + int(seriesWeight(ls)); n >= max {
			return errTooMany(ls, n+1, max)
		}
	}
	if max := db.opts.MaxActiveSeriesPerMetric; max > 0 {
		name := ls.Get(series.MetricName)
		if n := db.series.metricSeries(name); n >= max {
			return errTooManyOfMetric(ls, name, n+1, max)
		}
	}
	return nil
}

func errTooMany(ls series.Labels, n, limit int) error {
	return fmt.Errorf("%w: series %s would make %d active series (a series counts once more for each KiB of its labels past the first), the limit is %d", series.ErrTooManySeries, ls, n, limit)
}

func errTooManyOfMetric(ls series.Labels, name string, n, limit int) error {
	return fmt.Errorf("%w: series %s would make %d active series of metric %q, the limit is %d", series.ErrTooManySeries, ls, n, name, limit)
}

// CheckNewSeries refuses, as Append would, label sets that would bring
// the head past its active-series limits, taking them in order: a
// cluster node asks the owners of a write's new series before it
// publishes the write, and the owners then apply it past their limits
// (Appender.SkipSeriesLimits). Series in the head already pass; a
// stored series not in the head counts as new, as it does for Append.
// refused lists the indexes of lss that would pass a limit (each left
// out of the count, so that the write may be taken without them), err
// the first one's refusal (nil when none). Like checkSeriesLimits it is
// a snapshot: concurrent writers may overshoot a limit by what they
// bring in meanwhile.
//
// A write checked in parts passes prior, the sum of what the earlier
// parts counted: its new series so far, against the total limit (the
// per-metric limit counts each part alone).
func (db *DB) CheckNewSeries(lss []series.Labels, prior int) (refused []int, counted int, err error) {
	if db.closed.Load() {
		return nil, 0, series.ErrClosed
	}
	maxAll, maxMetric := db.opts.MaxActiveSeries, db.opts.MaxActiveSeriesPerMetric
	if maxAll <= 0 && maxMetric <= 0 {
		return nil, 0, nil
	}
	n := db.series.len() + int(db.series.extra.Load()) + prior
	perMetric := map[string]int{}
	refuse := func(i int, e error) {
		refused = append(refused, i)
		if err == nil {
			err = e
		}
	}
	for i, ls := range lss {
		if db.series.has(memKey(ls), ls) {
			continue
		}
		w := 1 + int(seriesWeight(ls))
		if maxAll > 0 && n+w > maxAll {
			refuse(i, errTooMany(ls, n+w, maxAll))
			continue
		}
		if maxMetric > 0 {
			name := ls.Get(series.MetricName)
			c, seen := perMetric[name]
			if !seen {
				c = db.series.metricSeries(name)
			}
			if c+1 > maxMetric {
				refuse(i, errTooManyOfMetric(ls, name, c+1, maxMetric))
				continue
			}
			perMetric[name] = c + 1
		}
		n += w
		counted += w
	}
	return refused, counted, err
}

// dropUnused removes from the head a series that an appender created and
// then rolled back, so that a refused request does not hold active-series
// budget until the idle timeout.
func (db *DB) dropUnused(s *memSeries) {
	if s.created.Load() || s.pins.Load() != 0 {
		return
	}
	db.series.evict(s, func() bool {
		return !s.created.Load() && s.head == nil && len(s.sealed) == 0 && len(s.ooo) == 0 && len(s.oooFlushing) == 0 && len(s.pend) == 0 && s.histEmptyLocked()
	})
}

// lookupStored finds the ID of a stored series with labels ls, or 0.
func (db *DB) lookupStored(h uint64, ls series.Labels) (uint64, error) {
	lo := hashKey(h, 0)
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo[:9])})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		id := binary.BigEndian.Uint64(it.Key()[9:])
		stored, err := db.storedLabels(id)
		if err != nil {
			return 0, err
		}
		if stored.Equal(ls) {
			return id, nil
		}
	}
	return 0, it.Error()
}

func (db *DB) storedLabels(id uint64) (series.Labels, error) {
	k := seriesKey(id)
	v, closer, err := db.pdb.Get(k)
	if err != nil {
		return nil, fmt.Errorf("labels of series %d: %w", id, err)
	}
	defer closer.Close()
	return decodeLabels(k, v)
}

// seriesByID returns the head series for a stored ID, loading it if needed
// (replay uses this).
func (db *DB) seriesByID(id uint64) (*memSeries, error) {
	if s := db.series.getByID(id); s != nil {
		return s, nil
	}
	ls, err := db.storedLabels(id)
	if err != nil {
		return nil, err
	}
	s := &memSeries{id: id, hash: ls.Hash(), mkey: memKey(ls), lset: ls, storedMaxT: minInt64}
	s.created.Store(true)
	if err := db.loadSeriesFloor(s); err != nil {
		return nil, err
	}
	if err := db.loadHead(s); err != nil {
		return nil, err
	}
	return db.series.add(s, false), nil
}

// loadSeriesFloor reads the series' own raw floor, if retention rules
// ever set one.
func (db *DB) loadSeriesFloor(s *memSeries) error {
	if !db.seriesFloors.Load() {
		return nil
	}
	f, err := seriesFloor(db.pdb, s.id)
	s.floorDay.Store(f)
	return err
}

// loadHead finds the newest stored chunk of a series that is not in the
// head: its end bounds what is in order, and if it is not full it becomes
// the open chunk again (it was checkpointed while open).
func (db *DB) loadHead(s *memSeries) error {
	v, closer, err := db.pdb.Get(lastKey(s.id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(v) != 4 {
		closer.Close()
		return &CorruptionError{Key: lastKey(s.id), Err: fmt.Errorf("%d bytes, want 4", len(v))}
	}
	day := binary.BigEndian.Uint32(v)
	closer.Close()
	s.lastChunkDay = day
	lo := chunkKey(nil, day, s.id, 0)
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo[:13])})
	if err != nil {
		return err
	}
	defer it.Close()
	if !it.Last() {
		return it.Error()
	}
	maxT, chk, err := parseChunkValue(it.Key(), it.Value())
	if err != nil {
		return err
	}
	_, _, minT, _ := parseChunkKey(it.Key())
	s.storedMaxT = maxT
	it2 := chunk.NewIterator(chk)
	// A chunk in a day before the floor is never resumed: the
	// downsampler merges such a chunk once and deletes it, and a
	// resumed one would be merged again with its old samples.
	if it2.Count() < db.opts.ChunkSamples && maxT-minT < db.opts.ChunkSpan.Milliseconds() && day >= db.floorOf(s) {
		a, err := chunk.ResumeAppender(chk)
		if err != nil {
			return &CorruptionError{Key: append([]byte(nil), it.Key()...), Err: err}
		}
		// While there is an open chunk, everything before it is out of
		// order whatever storedMaxT says; sealing it sets storedMaxT.
		s.head = a
	}
	return it.Error()
}

// pendWindow is how many samples the reorder window holds.
const pendWindow = 8

// applyRun adds the committed samples of ps, all of series s, to the head
// in order, and returns how many went out of order. Called with
// db.applyMu held, in WAL order; callers count samples per batch (a
// shared counter bumped per sample made the cores fight over its cache
// line). Samples that
// land inside the open chunk's range are merged into it with one
// re-encoding for the run, not one each: a backfill's hour that arrived
// after the next one re-encoded the chunk sixty times, 78% of the
// commit's CPU (BenchmarkAppendLateHours).
func (db *DB) applyRun(s *memSeries, ps []pendingSample) (ooo int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var merge []series.Sample
	for _, p := range ps {
		if db.applyLocked(s, p.t, p.v, &merge) {
			ooo++
		}
	}
	s.mergeHeadLocked(merge)
	return ooo
}

// applyLocked adds one sample with s.mu held. A sample inside the open
// chunk's range joins *merge instead of being written into it
// (mergeHeadLocked does that), and *merge is merged before anything
// else touches the open chunk.
func (db *DB) applyLocked(s *memSeries, t int64, v float64, merge *[]series.Sample) (ooo bool) {
	s.touched = db.cpCount.Load()
	if len(*merge) > 0 && !(s.head != nil && s.head.Count() > 0 && t <= s.head.MaxT() && t >= s.head.MinT()) {
		s.mergeHeadLocked(*merge)
		*merge = (*merge)[:0]
	}
	if s.pend != nil && t > s.chunkMaxTLocked() {
		// Into the window, in order; its oldest sample to the chunk
		// when it is full.
		i := len(s.pend)
		for i > 0 && s.pend[i-1].T >= t {
			i--
		}
		if i < len(s.pend) && s.pend[i].T == t {
			s.pend[i].V = v
		} else {
			s.pend = slices.Insert(s.pend, i, series.Sample{T: t, V: v})
		}
		if len(s.pend) > pendWindow {
			db.appendChunkLocked(s, s.pend[0].T, s.pend[0].V)
			s.pend = append(s.pend[:0], s.pend[1:]...)
		}
		s.headDirty = true
		return false
	}
	if s.head != nil && s.head.Count() > 0 {
		switch {
		case t > s.head.MaxT():
			db.appendChunkLocked(s, t, v)
			return false
		case t >= s.head.MinT():
			*merge = append(*merge, series.Sample{T: t, V: v})
			if s.pend == nil {
				s.pend = make([]series.Sample, 0, pendWindow+1)
			}
			return false
		default:
			s.addOOOLocked(t, v)
			return true
		}
	}
	if t <= s.storedMaxT {
		s.addOOOLocked(t, v)
		return true
	}
	db.appendChunkLocked(s, t, v)
	return false
}

// chunkMaxTLocked is the newest time in the open chunk, or in the stored
// or sealed chunks when there is none.
func (s *memSeries) chunkMaxTLocked() int64 {
	if s.head != nil && s.head.Count() > 0 {
		return s.head.MaxT()
	}
	return s.storedMaxT
}

// appendChunkLocked appends (t, v), after every sample of the open chunk,
// cutting a new chunk when the open one is full.
func (db *DB) appendChunkLocked(s *memSeries, t int64, v float64) {
	if s.head != nil && s.head.Count() > 0 {
		if !db.mustCut(s.head, t) {
			s.head.Append(t, v)
			s.headDirty = true
			return
		}
		s.sealHeadLocked()
	}
	s.head = chunk.NewAppender()
	s.head.Append(t, v)
	s.headDirty = true
}

// flushPendLocked empties the reorder window into the open chunk.
func (db *DB) flushPendLocked(s *memSeries) {
	for _, p := range s.pend {
		db.appendChunkLocked(s, p.T, p.V)
	}
	s.pend = s.pend[:0]
}

// pendChunk encodes the reorder window's samples as a chunk, for readers.
func (s *memSeries) pendChunkLocked() (chunkRef, bool) {
	if len(s.pend) == 0 {
		return chunkRef{}, false
	}
	a := chunk.NewAppender()
	for _, p := range s.pend {
		a.Append(p.T, p.V)
	}
	return chunkRef{s.pend[0].T, s.pend[len(s.pend)-1].T, a.Bytes()}, true
}

// countApplied adds a batch's applied samples to the stats.
func (db *DB) countApplied(n, ooo int) {
	db.stats.SamplesAppended.Add(int64(n - ooo))
	if ooo > 0 {
		db.stats.SamplesOOO.Add(int64(ooo))
	}
}

func (db *DB) mustCut(a *chunk.Appender, t int64) bool {
	return a.Count() >= db.opts.ChunkSamples ||
		t-a.MinT() >= db.opts.ChunkSpan.Milliseconds() ||
		dayOf(t) != dayOf(a.MinT())
}

func (s *memSeries) sealHeadLocked() {
	b := append([]byte(nil), s.head.Bytes()...)
	s.sealed = append(s.sealed, sealedChunk{minT: s.head.MinT(), maxT: s.head.MaxT(), b: b})
	s.storedMaxT = s.head.MaxT()
	s.head = nil
	s.headDirty = false
}

// mergeHeadLocked puts ss (in the order written: a later one wins a
// timestamp) into the open chunk's range with one re-encoding: up to
// ChunkSamples samples, about a microsecond, keeping the open chunk the
// only place for its range.
func (s *memSeries) mergeHeadLocked(ss []series.Sample) {
	if len(ss) == 0 {
		return
	}
	slices.SortStableFunc(ss, func(a, b series.Sample) int { return cmp.Compare(a.T, b.T) })
	it := chunk.NewIterator(s.head.Bytes())
	a := chunk.NewAppender()
	i := 0
	for it.Next() {
		ct, cv := it.At()
		for i < len(ss) && ss[i].T <= ct {
			// The last of equal timestamps is the one written last.
			if i+1 < len(ss) && ss[i+1].T == ss[i].T {
				i++
				continue
			}
			a.Append(ss[i].T, ss[i].V)
			if ss[i].T == ct {
				ct = math.MinInt64 // replaced
			}
			i++
		}
		if ct != math.MinInt64 {
			a.Append(ct, cv)
		}
	}
	for ; i < len(ss); i++ {
		if i+1 < len(ss) && ss[i+1].T == ss[i].T {
			continue
		}
		a.Append(ss[i].T, ss[i].V)
	}
	s.head = a
	s.headDirty = true
}

func (s *memSeries) addOOOLocked(t int64, v float64) {
	i := sort.Search(len(s.ooo), func(i int) bool { return s.ooo[i].T >= t })
	if i < len(s.ooo) && s.ooo[i].T == t {
		s.ooo[i].V = v
		return
	}
	s.ooo = append(s.ooo, series.Sample{})
	copy(s.ooo[i+1:], s.ooo[i:])
	s.ooo[i] = series.Sample{T: t, V: v}
}

// postedCache is a small set of postings partitions, the oldest entry
// going when it is full.
type postedCache struct {
	keys    [postedCacheSize]uint64
	n, next int
}

const postedCacheSize = 32

// postedKeyOf names a postings partition: a raw day, or tier's partition.
func postedKeyOf(tier int, part uint32) uint64 { return uint64(tier+1)<<40 | uint64(part) }

func (c *postedCache) has(k uint64) bool {
	for _, x := range c.keys[:c.n] {
		if x == k {
			return true
		}
	}
	return false
}

func (c *postedCache) add(k uint64) {
	if c.n < postedCacheSize {
		c.keys[c.n] = k
		c.n++
		return
	}
	c.keys[c.next] = k
	c.next = (c.next + 1) % postedCacheSize
}
