package storage

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/series"
)

// walRecordV1 is the first byte of a WAL record (part of the on-disk
// format: never change). The record is:
//
//	byte 0     1
//	uvarint    sample count
//	per sample uvarint series ID, varint timestamp delta from the previous
//	           sample of the record (the first from 0), 8 bytes value
//	           bits little-endian
const walRecordV1 = 1

type pendingSample struct {
	s *memSeries
	t int64
	v float64
}

// Appender collects samples and makes them durable in one Commit. It is
// not safe for concurrent use; use one per goroutine (they are cheap and
// reusable after Commit or Rollback).
type Appender struct {
	db      *DB
	samples []pendingSample
	hists   []pendingHist
	marks   []Mark
	buf     []byte
	posted  map[postedKey]struct{}
	// cutoff is the retention cutoff, read from the clock once per batch:
	// the clock costs more than the rest of an Append.
	cutoff    int64
	keepCut   int64 // older samples no tier keeps either
	hasCutoff bool
	now       int64 // the clock, for the tiers' retention, read once per commit
	hasNow    bool
	// noLimits: the active-series limits were checked before these
	// samples were acknowledged (SkipSeriesLimits).
	noLimits bool
}

type postedKey struct {
	id  uint64
	day uint32
}

// Appender returns a new appender.
func (db *DB) Appender() *Appender { return &Appender{db: db} }

// SkipSeriesLimits makes the appender bring series into the head past
// the active-series limits, and returns it. For samples acknowledged
// already: a cluster owner applying what the publishing node checked
// with CheckNewSeries, where refusing would lose an acknowledged write.
func (a *Appender) SkipSeriesLimits() *Appender {
	a.noLimits = true
	return a
}

// Append adds one sample of the series ls, which must be sorted by name
// (series.Labels.Sort). A bad label set, a timestamp outside MinTime..
// MaxTime or before the retention is refused with an error naming the
// series; nothing of that call is kept, and the samples added before it
// stay in the appender: the caller chooses between Commit and Rollback.
func (a *Appender) Append(ls series.Labels, t int64, v float64) error {
	_, err := a.AppendLabels(ls, t, v)
	return err
}

// AppendLabels is Append, returning the series' reference for AppendRef.
func (a *Appender) AppendLabels(ls series.Labels, t int64, v float64) (uint64, error) {
	if err := a.checkTime(ls, t); err != nil {
		return 0, err
	}
	// A sample older than the raw retention that a tier keeps takes the
	// same path as any late sample: the head, a chunk of its day, and the
	// downsampler, which merges it into the tiers and then drops the
	// chunk (see the downsampler's merge mode).
	s, err := a.db.getOrCreate(ls, !a.noLimits)
	if err != nil {
		return 0, err
	}
	a.samples = append(a.samples, pendingSample{s, t, v})
	return s.id, nil
}

// AppendRef adds a sample of the series an earlier AppendLabels returned
// ref for, without its labels: a front end that recognises a series by
// its request bytes skips parsing, hashing and comparing them. found is
// false when the series has left the head since (or ref is unknown):
// the caller appends by labels instead. A bad timestamp is refused as
// by Append.
func (a *Appender) AppendRef(ref uint64, t int64, v float64) (found bool, err error) {
	s := a.db.series.getByID(ref)
	if s == nil {
		return false, nil
	}
	s.pins.Add(1)
	if s.dead.Load() {
		s.pins.Add(-1)
		return false, nil
	}
	if err := a.checkTime(s.lset, t); err != nil {
		s.pins.Add(-1)
		return true, err
	}
	a.samples = append(a.samples, pendingSample{s, t, v})
	return true, nil
}

// CheckTime refuses what Append would of a sample at t (its time, the
// retention) without touching the head or the appender's samples: a
// cluster node checks a write whole before it publishes it to the
// partitions' owners (and validates each series' labels once, with
// series.Labels.Validate). ls names the series in the error.
func (a *Appender) CheckTime(ls series.Labels, t int64) error { return a.checkTime(ls, t) }

// checkTime refuses a timestamp outside the accepted range or older than
// everything keeps.
func (a *Appender) checkTime(ls series.Labels, t int64) error {
	if a.db.closed.Load() {
		return series.ErrClosed
	}
	if t < MinTime || t > MaxTime {
		return fmt.Errorf("%w: series %s: timestamp %d is outside the range %d..%d (milliseconds since 1970)", series.ErrInvalid, ls, t, MinTime, MaxTime)
	}
	if !a.hasCutoff {
		a.cutoff, a.hasCutoff = a.db.retentionCutoff(), true
		a.keepCut = a.cutoff
		if len(a.db.tiers) > 0 {
			a.keepCut = min(a.cutoff, a.db.oldestKept(a.db.opts.Now().UnixMilli()))
		}
	}
	if t < a.keepCut {
		return fmt.Errorf("%w: series %s: timestamp %d (%s) is before the retention cutoff %s (retention %v, and no rollup tier keeps it)", series.ErrOutOfRetention, ls, t,
			time.UnixMilli(t).UTC().Format(time.RFC3339), time.UnixMilli(a.cutoff).UTC().Format(time.RFC3339), a.db.opts.Retention)
	}
	return nil
}

// Len returns the number of samples waiting for Commit.
func (a *Appender) Len() int { return len(a.samples) + len(a.hists) }

// Rollback discards the samples added since the last Commit.
func (a *Appender) Rollback() {
	for _, p := range a.samples {
		if p.s.pins.Add(-1) == 0 && !p.s.created.Load() {
			a.db.dropUnused(p.s)
		}
	}
	for _, p := range a.hists {
		if p.s.pins.Add(-1) == 0 && !p.s.created.Load() {
			a.db.dropUnused(p.s)
		}
	}
	clear(a.samples) // a reused appender must not keep evicted series alive
	a.samples = a.samples[:0]
	clear(a.hists)
	a.hists = a.hists[:0]
	a.marks = a.marks[:0]
	a.hasCutoff, a.hasNow = false, false
}

// testHookCommitted, set only by tests, runs between a commit and the
// apply of its samples to the head: it widens the moment when a reader
// sees what the commit wrote in Pebble but not yet in the head.
var testHookCommitted func()

// Commit makes the samples durable (they survive kill -9 once it returns
// nil) and visible to queries, then empties the appender. On error nothing
// of the commit is visible or will be after a restart.
func (a *Appender) Commit() error {
	if len(a.samples) == 0 && len(a.hists) == 0 && len(a.marks) == 0 {
		return nil
	}
	total := len(a.samples) + len(a.hists)
	db := a.db
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		a.Rollback()
		return series.ErrClosed
	}
	defer a.Rollback()
	if err := db.Writable(); err != nil {
		return err
	}
	b := db.pdb.NewBatch()
	owned := false // by commitOwned, which closes it
	defer func() {
		if !owned {
			b.Close()
		}
	}()

	// New series and new postings go to Pebble before the record goes to
	// the log: a record only names series whose keys are durable. A new
	// series' keys are synced; postings alone are not (a crash that loses
	// them loses nothing: replay writes the postings of what it replays).
	// A crash between the two leaves a series without samples, which
	// costs its keys and nothing else.
	newSeries := false
	clear(a.posted)
	if a.posted == nil {
		a.posted = map[postedKey]struct{}{}
	}
	for _, p := range a.samples {
		created, err := a.post(b, p.s, p.t)
		if err != nil {
			return err
		}
		newSeries = newSeries || created
	}
	for _, p := range a.hists {
		created, err := a.post(b, p.s, p.t)
		if err != nil {
			return err
		}
		newSeries = newSeries || created
	}

	start := time.Now()
	if !b.Empty() {
		opts := pebble.NoSync
		if newSeries {
			opts = pebble.Sync
		}
		owned = true
		if err := db.commitOwned(b, opts); err != nil {
			for _, s := range a.touchedSeries() {
				s.postMu.Lock()
				s.posted = postedCache{} // written again next time
				s.postMu.Unlock()
			}
			if db.opts.OnCommit != nil {
				db.opts.OnCommit(time.Since(start), total, err)
			}
			return fmt.Errorf("commit %d samples: %w", total, err)
		}
	}
	a.buf = a.encodeRecord(a.buf[:0])
	seq, assigned, err := db.wal.Append(a.buf)
	if err != nil {
		err = db.failWrites(err)
	}
	if testHookCommitted != nil {
		testHookCommitted()
	}
	if db.opts.OnCommit != nil {
		db.opts.OnCommit(time.Since(start), total, err)
	}
	if !assigned {
		return fmt.Errorf("commit %d samples: %w", total, err)
	}

	// Apply in sequence order, whether or not this commit made it, so that
	// later sequences are never stuck behind a failed one.
	db.applyMu.Lock()
	for db.appliedSeq != seq-1 {
		db.applyCond.Wait()
	}
	if err == nil {
		ooo := 0
		for i := 0; i < len(a.samples); {
			// A series' samples one after another: one run.
			j := i + 1
			for j < len(a.samples) && a.samples[j].s == a.samples[i].s {
				j++
			}
			ooo += db.applyRun(a.samples[i].s, a.samples[i:j])
			i = j
		}
		for _, p := range a.hists {
			db.applyHist(p.s, p.t, p.h)
		}
		for _, m := range a.marks {
			db.marks.raise(m.Name, m.Value)
		}
		db.countApplied(total, ooo)
	}
	db.appliedSeq = seq
	db.applyCond.Broadcast()
	db.applyMu.Unlock()
	if err != nil {
		return fmt.Errorf("commit %d samples: %w", total, err)
	}

	for _, p := range a.samples {
		p.s.committed(p.t)
	}
	for _, p := range a.hists {
		p.s.committed(p.t)
	}
	db.stats.Commits.Add(1)
	if db.walBytes.Add(int64(len(a.buf))) > db.opts.CheckpointWALBytes {
		select {
		case db.cpTrigger <- struct{}{}:
		default:
		}
	}
	return nil
}

// post adds to b what a sample of s at t needs in Pebble before its log
// record: the series' keys when it is new (created reports that) and its
// postings of t's day, each once a commit.
func (a *Appender) post(b *pebble.Batch, s *memSeries, t int64) (created bool, err error) {
	db := a.db
	if !s.created.Load() {
		if _, ok := a.posted[postedKey{s.id, math.MaxUint32}]; !ok {
			a.posted[postedKey{s.id, math.MaxUint32}] = struct{}{}
			a.buf = appendLabels(a.buf[:0], s.lset)
			b.Set(seriesKey(s.id), a.buf, nil)
			b.Set(hashKey(s.hash, s.id), nil, nil)
			created = true
		}
	}
	day := dayOf(t)
	if s.postedDay.Load() == day+1 {
		return created, nil
	}
	if _, ok := a.posted[postedKey{s.id, day}]; ok {
		return created, nil
	}
	a.posted[postedKey{s.id, day}] = struct{}{}
	s.postMu.Lock()
	defer s.postMu.Unlock()
	// A day before the series' floor is merged into the tiers and its
	// chunks deleted: it needs no raw postings.
	if k := postedKeyOf(-1, day); !s.posted.has(k) && day >= db.floorOf(s) {
		s.posted.add(k)
		if a.buf, err = setPostings(b, day, s.id, s.lset, a.buf); err != nil {
			return created, err
		}
	}
	if len(db.tiers) > 0 {
		if !a.hasNow {
			a.now, a.hasNow = db.opts.Now().UnixMilli(), true
		}
		a.buf, err = db.postTiersOf(b, s, s.id, s.lset, day, a.now, a.buf)
	}
	return created, err
}

// committed records that a sample of s at t is durable: its keys are,
// and its postings of t's day.
func (s *memSeries) committed(t int64) {
	s.created.Store(true)
	if d := dayOf(t) + 1; d > s.postedDay.Load() {
		s.postedDay.Store(d)
	}
}

// touchedSeries lists the series of the appender's samples.
func (a *Appender) touchedSeries() []*memSeries {
	out := make([]*memSeries, 0, len(a.samples)+len(a.hists))
	for _, p := range a.samples {
		out = append(out, p.s)
	}
	for _, p := range a.hists {
		out = append(out, p.s)
	}
	return out
}

func (a *Appender) encodeRecord(dst []byte) []byte {
	if len(a.marks) > 0 {
		dst = appendMarks(dst, a.marks)
	}
	if len(a.hists) > 0 {
		dst = append(dst, walRecordV2)
	} else {
		dst = append(dst, walRecordV1)
	}
	dst = binary.AppendUvarint(dst, uint64(len(a.samples)))
	prev := int64(0)
	for _, p := range a.samples {
		dst = binary.AppendUvarint(dst, p.s.id)
		dst = binary.AppendVarint(dst, p.t-prev)
		prev = p.t
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(p.v))
	}
	if len(a.hists) > 0 {
		dst = a.encodeHists(dst)
	}
	return dst
}

// replay applies the log's records after the last checkpoint to the
// head: first those a version before the log files kept in Pebble ('W'
// keys), then the log's. It writes the postings of every series-day it
// replays (a commit syncs a new series' keys but not postings), and
// makes the log's next record follow the last replayed.
func (db *DB) replay() (int64, error) {
	cp, err := db.checkpointSeq()
	if err != nil {
		return 0, err
	}
	var n, ooo int64
	defer func() { db.countApplied(int(n), int(ooo)) }()
	posts := map[postedKey]struct{}{}
	next := cp + 1
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kindWAL}, UpperBound: []byte{kindWAL + 1}})
	if err != nil {
		return 0, err
	}
	for it.First(); it.Valid(); it.Next() {
		seq := binary.BigEndian.Uint64(it.Key()[1:])
		db.legacyWAL = true
		if seq < next {
			continue
		}
		rn, ro, err := db.applyRecord(seq, it.Value(), posts)
		n, ooo = n+rn, ooo+ro
		if err != nil {
			it.Close()
			return n, &CorruptionError{Key: append([]byte(nil), it.Key()...), Err: err}
		}
		db.walBytes.Add(int64(len(it.Value())))
		next = seq + 1
	}
	if err := it.Close(); err != nil {
		return n, err
	}
	next, err = db.wal.Replay(next, func(seq uint64, rec []byte) error {
		rn, ro, err := db.applyRecord(seq, rec, posts)
		n, ooo = n+rn, ooo+ro
		db.walBytes.Add(int64(len(rec)))
		return err
	})
	if err != nil {
		return n, err
	}
	db.appliedSeq = next - 1
	db.wal.Start(next)
	if len(posts) == 0 {
		return n, nil
	}
	b := db.pdb.NewBatch()
	defer b.Close()
	now := db.opts.Now().UnixMilli()
	var buf []byte
	for pk := range posts {
		s := db.series.getByID(pk.id)
		if s == nil {
			continue
		}
		if buf, err = setPostings(b, pk.day, s.id, s.lset, buf); err != nil {
			return n, err
		}
		if buf, err = db.postTiers(b, s.id, s.lset, pk.day, now, buf); err != nil {
			return n, err
		}
	}
	return n, db.commit(b, pebble.Sync)
}

// applyRecord applies one log record to the head and notes the
// series-days it touched in posts.
func (db *DB) applyRecord(seq uint64, rec []byte, posts map[postedKey]struct{}) (n, ooo int64, err error) {
	bad := func(what string) error { return fmt.Errorf("log record %d: %s", seq, what) }
	if len(rec) > 0 && rec[0] == walRecordMarks {
		var err error
		if rec, err = decodeMarks(rec, db.marks.raise); err != nil {
			return 0, 0, bad(err.Error())
		}
	}
	if len(rec) < 2 || (rec[0] != walRecordV1 && rec[0] != walRecordV2) {
		return 0, 0, bad("unknown version")
	}
	withHists := rec[0] == walRecordV2
	cnt, k := binary.Uvarint(rec[1:])
	if k <= 0 {
		return 0, 0, bad("bad count")
	}
	rec = rec[1+k:]
	prev := int64(0)
	// A series' samples one after another are applied as one run, as the
	// commit applied them (applyRun).
	var run []pendingSample
	flush := func() {
		if len(run) > 0 {
			ooo += int64(db.applyRun(run[0].s, run))
			run = run[:0]
		}
	}
	defer flush()
	for i := uint64(0); i < cnt; i++ {
		id, k1 := binary.Uvarint(rec)
		if k1 <= 0 {
			return n, ooo, bad("truncated")
		}
		dt, k2 := binary.Varint(rec[k1:])
		if k2 <= 0 || len(rec) < k1+k2+8 {
			return n, ooo, bad("truncated")
		}
		t := prev + dt
		prev = t
		v := math.Float64frombits(binary.LittleEndian.Uint64(rec[k1+k2:]))
		rec = rec[k1+k2+8:]
		s, err := db.seriesByID(id)
		if err != nil {
			return n, ooo, fmt.Errorf("log record %d: %w", seq, err)
		}
		if len(run) > 0 && run[0].s != s {
			flush()
		}
		run = append(run, pendingSample{s: s, t: t, v: v})
		posts[postedKey{id, dayOf(t)}] = struct{}{}
		n++
	}
	flush()
	if withHists {
		hn, err := db.applyHistRecord(rec, posts)
		n += hn
		if err != nil {
			return n, ooo, fmt.Errorf("log record %d: %w", seq, err)
		}
	}
	return n, ooo, nil
}
