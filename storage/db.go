package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/headroomdb/headroom/storage/series"
	"github.com/headroomdb/headroom/storage/wal"
)

// Timestamps the database accepts: from the Unix epoch to the end of year
// 9999, in milliseconds. Negative timestamps would break the byte order of
// keys, and nothing in operations monitoring predates 1970.
const (
	MinTime int64 = 0
	MaxTime int64 = 253402300799999
)

// Options configure a DB. The zero value of every field means its default.
type Options struct {
	// Retention is how long raw samples are kept; older day partitions are
	// dropped and older samples are refused. Default 15 days.
	Retention time.Duration
	// ChunkSamples and ChunkSpan bound a chunk: it is sealed when it holds
	// ChunkSamples samples or spans ChunkSpan. Defaults 240 and a day.
	ChunkSamples int
	ChunkSpan    time.Duration
	// CheckpointInterval is how often the head is checkpointed and the WAL
	// truncated; CheckpointWALBytes triggers one early. Defaults 1 minute
	// and 64 MiB.
	CheckpointInterval time.Duration
	CheckpointWALBytes int64
	// HeadIdleTimeout is how long a series may receive no sample before it
	// leaves the head (its open chunk is stored and its memory freed; the
	// next sample brings it back). Default 1 hour.
	HeadIdleTimeout time.Duration
	// RetentionInterval is how often expired partitions are dropped.
	// Default 10 minutes.
	RetentionInterval time.Duration
	// CacheSize is Pebble's block cache in bytes, for decompressed
	// sstable blocks. Default 64 MiB. Pebble takes its memtables out of
	// the same budget, so the cache is made larger by two memtables (the
	// one being written and one being flushed) to leave CacheSize for
	// blocks.
	CacheSize int64
	// MemTableSize is the size Pebble's memtables grow to. Default 16 MiB.
	MemTableSize int64
	// Tiers are the downsampled resolutions. A background job every
	// RollupInterval rolls up a series' day, every tier at once, from its
	// raw samples, once the day ended RollupDelay ago and its series took
	// no sample for it in RollupQuiet (a day being backfilled is rolled
	// up once, when done); until then queries compute the day from raw.
	// nil means DefaultTiers; an empty slice turns downsampling off. Raw
	// partitions are kept until they are rolled up, even past Retention.
	Tiers []Tier
	// RetentionRules give the series their matchers select a retention
	// of their own in one tier (see RetentionRule).
	RetentionRules []RetentionRule
	RollupInterval time.Duration // default 1 minute
	RollupDelay    time.Duration // default 5 minutes
	RollupQuiet    time.Duration // default two CheckpointIntervals
	// RollupWorkers is how many goroutines roll up a window, each a share
	// of the series. Default half the CPUs (at least 1): downsampling is
	// background work, and queries and ingestion keep the rest.
	RollupWorkers int
	// Now is the clock; tests inject one. Default time.Now.
	Now func() time.Time
	// Logger receives progress and errors of background work.
	// Default slog.Default().
	Logger *slog.Logger
	// MaxActiveSeries and MaxActiveSeriesPerMetric bound the series in the
	// head (memory follows them): a sample that would bring one more series
	// in is refused with series.ErrTooManySeries. Replaying the log is
	// never refused. Defaults 2,000,000 and 500,000 (about 1.8 GB and
	// 450 MB of head); negative means no limit.
	MaxActiveSeries          int
	MaxActiveSeriesPerMetric int
	// OnCommit, if set, is called after each durable write (the WAL batch
	// and its fsync) with its latency, for /metrics. It must be fast.
	OnCommit func(d time.Duration, samples int, err error)
	// FS is the filesystem Pebble works through; tests inject faults with
	// it. Default the operating system's (vfs.Default).
	FS vfs.FS
	// MinFreeDisk is the free space on the data directory's filesystem
	// below which writes are refused with series.ErrUnavailable, so that
	// Pebble never meets a full disk in the middle of its log (which it
	// cannot survive); retention, rollups and checkpoints go on and free
	// space. 0 turns the check off.
	MinFreeDisk int64
	// DisableBackground turns off the checkpoint and retention goroutines;
	// tests call Checkpoint and ApplyRetention themselves.
	DisableBackground bool
}

// OffHeapBytes is the memory Pebble allocates outside Go's heap (its
// block cache, in which its memtables are reserved), which a process
// memory budget must leave aside.
func (o Options) OffHeapBytes() int64 {
	r := o.withDefaults()
	return r.CacheSize + 2*r.MemTableSize
}

func (o *Options) withDefaults() Options {
	r := *o
	if r.Retention == 0 {
		r.Retention = 15 * 24 * time.Hour
	}
	if r.ChunkSamples == 0 {
		// 240, not Prometheus's 120: a chunk's key, header and first
		// sample are shared by twice the samples (fleet data at 10 s:
		// 0.653 -> 0.599 B/sample at rest); larger was larger again (one
		// bit width a chunk fits fewer samples well: 0.630 at 480).
		r.ChunkSamples = 240
	}
	if r.ChunkSpan == 0 {
		r.ChunkSpan = 24 * time.Hour
	}
	if r.CheckpointInterval == 0 {
		r.CheckpointInterval = time.Minute
	}
	if r.CheckpointWALBytes == 0 {
		r.CheckpointWALBytes = 64 << 20
	}
	if r.HeadIdleTimeout == 0 {
		r.HeadIdleTimeout = time.Hour
	}
	if r.RetentionInterval == 0 {
		r.RetentionInterval = 10 * time.Minute
	}
	if r.CacheSize == 0 {
		r.CacheSize = 64 << 20
	}
	if r.MemTableSize == 0 {
		// The log is not in Pebble: its memtables take only checkpoints
		// and rollups, a few MiB a second at most.
		r.MemTableSize = 16 << 20
	}
	if r.Tiers == nil {
		r.Tiers = DefaultTiers
	}
	if r.RollupInterval == 0 {
		r.RollupInterval = time.Minute
	}
	if r.RollupDelay == 0 {
		r.RollupDelay = 5 * time.Minute
	}
	if r.RollupQuiet == 0 {
		r.RollupQuiet = 2 * r.CheckpointInterval
	}
	if r.RollupWorkers <= 0 {
		r.RollupWorkers = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if r.MaxActiveSeries == 0 {
		r.MaxActiveSeries = 2_000_000
	}
	if r.MaxActiveSeriesPerMetric == 0 {
		r.MaxActiveSeriesPerMetric = 500_000
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	if r.FS == nil {
		r.FS = vfs.Default
	}
	return r
}

// Validate reports an option that cannot work.
func (o *Options) Validate() error {
	switch {
	case o.Retention < 0:
		return fmt.Errorf("retention %v is negative", o.Retention)
	case o.ChunkSamples < 0 || o.ChunkSamples > 65535:
		return fmt.Errorf("chunk samples %d is outside 1..65535", o.ChunkSamples)
	case o.ChunkSpan < 0:
		return fmt.Errorf("chunk span %v is negative", o.ChunkSpan)
	case o.CheckpointInterval < 0 || o.RetentionInterval < 0 || o.HeadIdleTimeout < 0 || o.RollupInterval < 0 || o.RollupDelay < 0 || o.RollupQuiet < 0:
		return errors.New("background intervals must not be negative")
	}
	if err := validateTiers(o.Tiers); err != nil {
		return err
	}
	n := len(o.Tiers)
	if o.Tiers == nil {
		n = len(DefaultTiers)
	}
	return validateRules(o.RetentionRules, n)
}

// DB is an open data directory. All methods are safe for concurrent use.
type DB struct {
	// Immutable after Open.
	opts    Options
	pdb     *pebble.DB
	lock    *dirLock
	series  *seriesMap
	closing chan struct{}
	bg      sync.WaitGroup

	// ballast is whether the disk-full ballast is allocated (ballast.go).
	ballast atomic.Bool
	// bgErrLogged is when a Pebble background error was last logged
	// (unix ns): a failing flush is retried many times a second.
	bgErrLogged atomic.Int64

	// closeMu lets Close wait for writers that are using Pebble: Commit and
	// the series-loading path hold it for reading and check closed under it.
	closeMu sync.RWMutex

	nextID   atomic.Uint64 // last allocated series ID
	walBytes atomic.Int64  // WAL bytes written since the last checkpoint
	// cpGen counts checkpoints that moved data from the head to Pebble; it
	// is bumped after the data is in Pebble and before the head drops it,
	// so a querier holding an older Pebble view knows to refresh it.
	cpGen     atomic.Uint64
	cpCount   atomic.Uint64 // checkpoints completed; the head's clock for idleness
	closed    atomic.Bool
	disk      diskState
	marks     markSet
	dir       string
	cpTrigger chan struct{}

	// wal is the write-ahead log: it orders commits (a record's sequence)
	// and makes them durable. legacyWAL: 'W' keys of a version before it
	// were replayed, and the next checkpoint deletes them.
	wal       *wal.Log
	legacyWAL bool

	// applyMu serialises applying committed records to the head in sequence
	// order, and checkpoints against applies.
	applyMu    sync.Mutex
	applyCond  *sync.Cond
	appliedSeq uint64 // every record <= appliedSeq has been applied or failed

	// cpMu serialises checkpoints (background, explicit, and Close).
	cpMu sync.Mutex

	tiers    []*tierState
	rollupMu sync.Mutex    // one rollup run at a time
	gen      atomic.Uint64 // last roll-marker generation (rollmark.go)
	// rawFloor: every raw day partition before it was dropped (its
	// in-memory copy; persisted as M raw-floor). seriesFloors: some series
	// has a floor of its own ('F').
	rawFloor     atomic.Uint32
	seriesFloors atomic.Bool
	// hasHist: the store holds (or a commit brought) native histograms;
	// until then queries do not look for histogram chunks.
	hasHist   atomic.Bool
	meta      metadataStore // metric metadata (metadata.go)
	backlogMu sync.Mutex
	backlog   RollupBacklog // as the last rollup run left it

	// gcMu: series garbage collection (write) against loading a stored
	// series into the head (read).
	gcMu sync.RWMutex

	stats Stats
}

// Stats are counters of the engine's work, for /metrics and benchmarks.
type Stats struct {
	SamplesAppended atomic.Int64
	SamplesOOO      atomic.Int64
	SeriesCreated   atomic.Int64
	Commits         atomic.Int64
	Checkpoints     atomic.Int64
	ChunksWritten   atomic.Int64
	ReplayedSamples atomic.Int64
	ReplayDuration  atomic.Int64 // nanoseconds, last Open
	RetentionRuns   atomic.Int64
	SeriesEvicted   atomic.Int64
	SeriesCollected atomic.Int64 // series deleted by retention
}

// Open opens or creates the database in dir and replays its log.
func Open(dir string, o Options) (*DB, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	opts := o.withDefaults()
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	ok := false
	defer func() {
		if !ok {
			lock.release()
		}
	}()
	memTableSize := opts.MemTableSize
	// Pebble reserves each memtable in the block cache: a cache only as
	// large as CacheSize was wholly reserved by the first memtable and
	// kept no block at all (every read decompressed its blocks again).
	cache := pebble.NewCache(opts.OffHeapBytes())
	defer cache.Unref()
	// Pebble reports flush and compaction failures to its listener,
	// before the database exists.
	var self atomic.Pointer[DB]
	listener := &pebble.EventListener{BackgroundError: func(err error) {
		if d := self.Load(); d != nil {
			d.pebbleBackgroundError(err)
		}
	}}
	popts := &pebble.Options{
		EventListener:               listener,
		Cache:                       cache,
		MemTableSize:                uint64(memTableSize),
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		Logger:                      quietLogger{opts.Logger},
		FS:                          opts.FS,
		Cleaner:                     noRecycleCleaner{},
	}
	for i := range popts.Levels {
		// Chunks are already dense; zstd still finds the repeated key
		// prefixes, headers and first-sample bits that Gorilla cannot.
		popts.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.ZstdCompression }
		popts.Levels[i].BlockSize = 32 << 10
	}
	pdb, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	db := &DB{
		opts:      opts,
		pdb:       pdb,
		dir:       dir,
		lock:      lock,
		series:    newSeriesMap(),
		closing:   make(chan struct{}),
		cpTrigger: make(chan struct{}, 1),
	}
	db.disk.failedCh = make(chan struct{})
	self.Store(db)
	db.allocateBallast()
	db.applyCond = sync.NewCond(&db.applyMu)
	db.disk.avail.Store(math.MaxUint64) // not measured yet
	if err := db.checkSchema(); err != nil {
		pdb.Close()
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	if err := db.loadCounters(); err != nil {
		pdb.Close()
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	db.initRollups()
	if err := db.checkTierConfig(); err != nil {
		pdb.Close()
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	if err := db.loadFloors(); err != nil {
		pdb.Close()
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	if err := db.loadMetadata(); err != nil {
		pdb.Close()
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	if found, err := anyHistChunk(pdb); err != nil {
		pdb.Close()
		return nil, fmt.Errorf("open %s: %w", dir, err)
	} else if found {
		db.hasHist.Store(true)
	}
	if db.wal, err = wal.Open(opts.FS, opts.FS.PathJoin(dir, "wal")); err != nil {
		pdb.Close()
		return nil, fmt.Errorf("open %s: write-ahead log: %w", dir, err)
	}
	start := time.Now()
	n, err := db.replay()
	if err != nil {
		db.wal.Close()
		pdb.Close()
		return nil, fmt.Errorf("open %s: replay log: %w", dir, err)
	}
	db.stats.ReplayedSamples.Store(n)
	db.stats.ReplayDuration.Store(int64(time.Since(start)))
	if n > 0 {
		opts.Logger.Info("replayed write-ahead log", "samples", n, "duration", time.Since(start))
	}
	if !opts.DisableBackground {
		db.bg.Add(2)
		go db.every(opts.CheckpointInterval, db.cpTrigger, false, "checkpoint", db.Checkpoint)
		go db.every(opts.RetentionInterval, nil, true, "retention", db.ApplyRetention)
		if len(db.tiers) > 0 {
			db.bg.Add(1)
			go db.every(opts.RollupInterval, nil, false, "rollup", db.RunRollups)
		}
	}
	ok = true
	return db, nil
}

// noRecycleCleaner deletes Pebble's obsolete files, its log files
// included: Pebble keeps up to five old logs for reuse otherwise, and with
// the samples' log in storage/wal its own logs only take checkpoints, so
// a stopped server's directory held more old log than data. Pebble reuses
// logs unless its cleaner says it needs files' contents, which embedding
// ArchiveCleaner (one level down, so that DeleteCleaner's Clean wins)
// says.
type noRecycleCleaner struct {
	pebble.DeleteCleaner
	archiveMarker
}

type archiveMarker struct{ pebble.ArchiveCleaner }

type quietLogger struct{ l *slog.Logger }

func (q quietLogger) Infof(format string, args ...interface{}) {}
func (q quietLogger) Errorf(format string, args ...interface{}) {
	q.l.Error("pebble: " + fmt.Sprintf(format, args...))
}
func (q quietLogger) Fatalf(format string, args ...interface{}) {
	q.l.Error("pebble fatal: " + fmt.Sprintf(format, args...))
	panic(fatalError(fmt.Sprintf(format, args...)))
}

func (db *DB) checkSchema() error {
	v, closer, err := db.pdb.Get(metaKey("schema"))
	if errors.Is(err, pebble.ErrNotFound) {
		b := db.pdb.NewBatch()
		defer b.Close()
		b.Set(metaKey("schema"), []byte{schemaVersion}, nil)
		return db.commit(b, pebble.Sync)
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	if len(v) != 1 || v[0] != schemaVersion {
		return fmt.Errorf("data directory has schema version %v, this build reads %d", v, schemaVersion)
	}
	return nil
}

// loadCounters finds the last series ID and WAL sequence in use.
func (db *DB) loadCounters() error {
	last := func(kind byte) (uint64, error) {
		it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kind}, UpperBound: []byte{kind + 1}})
		if err != nil {
			return 0, err
		}
		defer it.Close()
		if it.Last() && len(it.Key()) >= 9 {
			return binary.BigEndian.Uint64(it.Key()[1:9]), it.Error()
		}
		return 0, it.Error()
	}
	id, err := last(kindSeries)
	if err != nil {
		return err
	}
	db.nextID.Store(id)
	return db.loadMarks()
}

func (db *DB) checkpointSeq() (uint64, error) {
	v, closer, err := db.pdb.Get(metaKey("checkpoint"))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, &CorruptionError{Key: metaKey("checkpoint"), Err: fmt.Errorf("%d bytes, want 8", len(v))}
	}
	return binary.BigEndian.Uint64(v), nil
}

// Close checkpoints the head, so that the next Open has little to replay,
// and closes the directory. Appenders must not be used after Close.
func (db *DB) Close() error { return db.shutdown(true) }

// CloseNoCheckpoint closes the directory the way a crash would leave it:
// nothing is checkpointed, so the next Open replays the log. For crash
// tests and the replay benchmark.
func (db *DB) CloseNoCheckpoint() error { return db.shutdown(false) }

// shutdown refuses new work, waits for in-flight commits (closeMu) and the
// background goroutines, optionally checkpoints, and closes Pebble.
//
// A wedged database (Wedged) is left as it is: its commits in flight and
// Pebble itself would never return, so shutdown marks it closed, stops
// the background work that can stop, and returns ErrWedged at once.
func (db *DB) shutdown(checkpoint bool) error {
	if db.closed.Swap(true) {
		return series.ErrClosed
	}
	close(db.closing)
	// Commits in flight (closeMu) and the background work, unless Pebble
	// wedges under them: then they never return.
	commits := make(chan struct{})
	go func() {
		db.closeMu.Lock()
		db.closeMu.Unlock()
		close(commits)
	}()
	if !db.waitUnlessWedged(commits) {
		return ErrWedged
	}
	bg := make(chan struct{})
	go func() {
		db.bg.Wait()
		close(bg)
	}()
	if !db.waitUnlessWedged(bg) {
		return ErrWedged
	}
	var cpErr error
	if checkpoint {
		cpErr = db.Checkpoint()
		if cpErr == nil {
			// The memtables to sstables, so that a clean stop leaves a
			// directory at its size at rest, with nothing in Pebble's
			// log for the next start to replay.
			cpErr = db.pdb.Flush()
		}
	}
	walErr := db.wal.Close()
	err := db.pdb.Close()
	db.lock.release()
	if err == nil {
		err = walErr
	}
	if err != nil {
		return err
	}
	return cpErr
}

// waitUnlessWedged waits for done, or returns false once the database is
// wedged (checked every 10 ms).
func (db *DB) waitUnlessWedged(done chan struct{}) bool {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if db.Wedged() {
			return false
		}
		select {
		case <-done:
			return !db.Wedged()
		case <-t.C:
		}
	}
}

// Stats returns the engine's counters.
func (db *DB) Stats() *Stats { return &db.stats }

// ActiveSeries returns the number of series in the head.
func (db *DB) ActiveSeries() int { return db.series.len() }

// Limits returns the active-series limits in force (0: none).
func (db *DB) Limits() (total, perMetric int) {
	return max(db.opts.MaxActiveSeries, 0), max(db.opts.MaxActiveSeriesPerMetric, 0)
}

// TopMetric returns the metric name with the most active series, and
// their number: how close the per-metric limit is.
func (db *DB) TopMetric() (string, int) { return db.series.topMetric() }

// Metrics returns Pebble's metrics (compactions, levels, disk space), for
// the server's /metrics.
func (db *DB) Metrics() *pebble.Metrics { return db.pdb.Metrics() }

// DiskUsage returns the bytes the data directory uses on disk.
func (db *DB) DiskUsage() uint64 { return db.pdb.Metrics().DiskSpaceUsage() }

// TableBytes returns the bytes of live sstables: the data at rest, without
// Pebble's write log or files waiting for deletion.
func (db *DB) TableBytes() uint64 { return db.pdb.Metrics().Table.Local.LiveSize }

// Flush writes Pebble's memtable to sstables; benchmarks call it before
// measuring disk use.
func (db *DB) Flush() error { return db.pdb.Flush() }

// Compact compacts the whole key space; benchmarks call it before
// measuring disk use.
func (db *DB) Compact() error {
	return db.pdb.Compact(context.Background(), []byte{0}, []byte{0xff}, true)
}

func (db *DB) retentionCutoff() int64 {
	c := db.opts.Now().UnixMilli() - db.opts.Retention.Milliseconds()
	if c < MinTime {
		return MinTime
	}
	return c
}

// every runs f every interval (and when trigger fires) until Close;
// with first, once at the start too. Errors are logged: background work
// retries at its next turn.
func (db *DB) every(interval time.Duration, trigger <-chan struct{}, first bool, what string, f func() error) {
	defer db.bg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if first {
			if err := f(); err != nil && !errors.Is(err, series.ErrClosed) {
				db.opts.Logger.Error(what+" failed", "err", err)
			}
		}
		first = true
		select {
		case <-db.closing:
			return
		case <-t.C:
		case <-trigger:
		}
	}
}

// ApplyRetention drops every day partition that lies wholly before the
// retention cutoff, with one DeleteRange per key kind: never sample by
// sample. A raw day the downsampler has not rolled up yet, or that the
// head still holds chunks of, is kept (rawHold). It runs under cpMu, so
// that no checkpoint is between reading a day's chunks and writing them
// back while the day is dropped (see the raw floor, rollmark.go).
func (db *DB) ApplyRetention() error {
	db.cpMu.Lock()
	defer db.cpMu.Unlock()
	if db.closed.Load() {
		return series.ErrClosed
	}
	now := db.opts.Now().UnixMilli()
	b := db.pdb.NewBatch()
	defer b.Close()
	// Raw days: wholly expired for every series before the longest
	// retention (the default's or a rule's), with one DeleteRange per key
	// kind; between that and the shortest, series by series.
	def, longest := db.tierRetention(-1)
	shortest := min(def, db.shortestRule(-1))
	cutDay := uint32(max(now-longest.Milliseconds(), 0) / msPerDay)
	ruleDay := uint32(max(now-shortest.Milliseconds(), 0) / msPerDay)
	hold, perSeries, err := db.rawHold(ruleDay)
	if err != nil {
		return fmt.Errorf("raw retention: %w", err)
	}
	floor := db.rawFloor.Load()
	newFloor := max(floor, min(cutDay, hold))
	if newFloor > floor {
		from := floor
		if len(db.tiers) == 0 {
			from = 0 // nothing below the floor waits to be merged
		}
		for _, kind := range []byte{kindChunk, kindHistChunk, kindPostings} {
			lo := binary.BigEndian.AppendUint32([]byte{kind}, from)
			if from == 0 {
				lo = []byte{kind}
			}
			if err := b.DeleteRange(lo, binary.BigEndian.AppendUint32([]byte{kind}, newFloor), nil); err != nil {
				return err
			}
		}
		b.Set(floorMetaKey(), binary.BigEndian.AppendUint32(nil, newFloor), nil)
	}
	gcCut := int64(newFloor) * msPerDay
	ruled := 0
	if longest > def || db.hasRules(-1) {
		n, err := db.applyRawRules(b, def, int64(newFloor), int64(ruleDay), perSeries)
		if err != nil {
			return fmt.Errorf("raw retention rules: %w", err)
		}
		ruled += n
	}
	// Each tier drops its partitions (blocks, postings) that lie wholly
	// before its own cutoff, and series by series as its rules say.
	for _, t := range db.tiers {
		def, longest := db.tierRetention(t.idx)
		tcut := now - longest.Milliseconds()
		gcCut = min(gcCut, tcut)
		part := tcut / t.span
		if part > 0 {
			for _, kind := range tierKinds {
				tier := []byte{kind, byte(t.idx)}
				if err := b.DeleteRange(tier, binary.BigEndian.AppendUint32(tier, uint32(part)), nil); err != nil {
					return err
				}
			}
			lo := binary.BigEndian.AppendUint32([]byte{kindPostings}, postingsPart(t.idx, 0))
			hi := binary.BigEndian.AppendUint32([]byte{kindPostings}, postingsPart(t.idx, part))
			if err := b.DeleteRange(lo, hi, nil); err != nil {
				return err
			}
		}
		if db.hasRules(t.idx) {
			shortest := min(def, db.shortestRule(t.idx))
			n, err := db.applyRules(b, t.idx, def, max(part, 0), max(now-shortest.Milliseconds(), 0)/t.span)
			if err != nil {
				return fmt.Errorf("%v retention rules: %w", t.Resolution, err)
			}
			ruled += n
		}
	}
	if b.Empty() {
		return nil
	}
	if err := db.commit(b, pebble.Sync); err != nil {
		return fmt.Errorf("drop partitions before day %d: %w", newFloor, err)
	}
	db.rawFloor.Store(newFloor)
	if newFloor < cutDay {
		db.opts.Logger.Info("retention keeps raw days not rolled up yet", "from", dayString(newFloor), "until", dayString(cutDay))
	}
	if ruled > 0 {
		db.opts.Logger.Info("retention rules dropped series' partitions", "partitions", ruled)
	}
	db.stats.RetentionRuns.Add(1)
	// A series goes when no tier keeps any of its data.
	n, err := db.gcSeries(dayOf(max(gcCut, 0)))
	if err != nil {
		return fmt.Errorf("collect expired series: %w", err)
	}
	if n > 0 {
		db.opts.Logger.Info("retention collected expired series", "series", n, "before_day", dayString(newFloor))
	}
	return nil
}

// rawHold is the first raw day retention must keep: the oldest day the
// downsampler has yet to roll up from its whole raw partition (a marker
// at or after its series' floor), and the oldest day of a chunk the head
// holds (sealed, or open: a copy of an open chunk may be rolled up
// already, and the whole chunk would then land in a dropped day and be
// merged again). Late samples in the head need no hold: they were never
// rolled up, and landing in a dropped day merges them once. perSeries
// has the same for each series whose hold is before ruleDay (what a
// retention rule may drop series by series). Called under cpMu.
func (db *DB) rawHold(ruleDay uint32) (uint32, map[uint64]uint32, error) {
	hold := uint32(math.MaxUint32)
	per := map[uint64]uint32{}
	note := func(id uint64, d uint32) {
		hold = min(hold, d)
		if d < ruleDay {
			if old, ok := per[id]; !ok || d < old {
				per[id] = d
			}
		}
	}
	if len(db.tiers) == 0 {
		return hold, per, nil
	}
	floor := db.rawFloor.Load()
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kindRollMark}, UpperBound: []byte{kindRollMark + 1}})
	if err != nil {
		return 0, nil, err
	}
	defer it.Close()
	var lastID uint64
	var sf uint32
	haveSF := false
	for it.First(); it.Valid(); it.Next() {
		id, day, _, ok := parseRollMark(it.Key(), it.Value())
		if !ok || day < floor {
			continue
		}
		if !haveSF || id != lastID {
			lastID, haveSF = id, true
			sf = 0
			if db.seriesFloors.Load() {
				if sf, err = seriesFloor(db.pdb, id); err != nil {
					return 0, nil, err
				}
			}
		}
		if day >= sf {
			note(id, day)
		}
	}
	if err := it.Error(); err != nil {
		return 0, nil, err
	}
	for _, s := range db.series.all() {
		s.mu.Lock()
		if s.head != nil && s.head.Count() > 0 {
			note(s.id, dayOf(s.head.MinT()))
		}
		for _, c := range s.sealed {
			note(s.id, dayOf(c.minT))
		}
		s.mu.Unlock()
	}
	return hold, per, nil
}

// gcSeries deletes the 'S', 'H' and 'L' keys of series that are not in the
// head and whose newest stored chunk lies before cutDay: all their data
// has expired, and a later sample with the same labels makes a new series.
// A series in the head, or being loaded into it (gcMu), is kept.
func (db *DB) gcSeries(cutDay uint32) (int, error) {
	db.gcMu.Lock()
	defer db.gcMu.Unlock()
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kindLast}, UpperBound: []byte{kindLast + 1}})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	b := db.pdb.NewBatch()
	defer b.Close()
	n := 0
	// A series has 'L' id (its newest float chunk's day) and, with
	// histograms, 'L' id 'N' right after it: it goes when both are old.
	var cur uint64
	var curNewest uint32
	var curSeen bool
	collect := func() error {
		if !curSeen || curNewest >= cutDay || db.series.getByID(cur) != nil {
			return nil
		}
		ls, err := db.storedLabels(cur)
		if err != nil {
			return err
		}
		b.Delete(seriesKey(cur), nil)
		b.Delete(hashKey(ls.Hash(), cur), nil)
		b.Delete(lastKey(cur), nil)
		b.Delete(histLastKey(cur), nil)
		b.Delete(floorKey(cur), nil)
		b.DeleteRange(rollMarkKey(nil, cur, 0), rollMarkKey(nil, cur+1, 0), nil)
		n++
		return nil
	}
	for it.First(); it.Valid(); it.Next() {
		k, v := it.Key(), it.Value()
		if (len(k) != 9 && len(k) != 10) || len(v) != 4 {
			continue
		}
		id, day := binary.BigEndian.Uint64(k[1:9]), binary.BigEndian.Uint32(v)
		if !curSeen || id != cur {
			if err := collect(); err != nil {
				return n, err
			}
			cur, curNewest, curSeen = id, day, true
			continue
		}
		curNewest = max(curNewest, day)
	}
	if err := collect(); err != nil {
		return n, err
	}
	if err := it.Error(); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	if err := db.commit(b, pebble.Sync); err != nil {
		return 0, err
	}
	db.stats.SeriesCollected.Add(int64(n))
	return n, nil
}

// minInt64 is the "nothing stored yet" timestamp.
const minInt64 = math.MinInt64
