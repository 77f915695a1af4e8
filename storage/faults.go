package storage

import (
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/headroomdb/headroom/storage/series"
)

// fatalError is what quietLogger panics with when Pebble calls Fatalf:
// after a failed write to its log, Pebble's commit pipeline cannot go on,
// and it would otherwise end the process.
type fatalError string

// diskState is what the database knows of its disk: a write failure it
// cannot recover from in-process, and the last measure of free space.
// Every commit reads it, so it is atomics only: one caller a
// diskCheckInterval measures, the others use the last figure.
type diskState struct {
	failed atomic.Pointer[string]
	// failedCh is closed when failed is set: a write waiting on Pebble
	// stops waiting then.
	failedCh chan struct{}
	// wedged is set when Pebble's commit pipeline stopped inside a
	// commit (a panic, or an error from its log): Pebble leaves its
	// commit lock held or the commit queued, so every later commit and
	// Close would wait forever. Only a new process can open the
	// directory again.
	wedged    atomic.Bool
	nextCheck atomic.Int64  // unix ns when the free space is measured again
	avail     atomic.Uint64 // bytes free; MaxUint64 while not known
}

// diskCheckInterval bounds how stale the free-space figure a write is
// refused or accepted on may be: at ingest rates of millions of samples a
// second, a second of writes is a few MiB of log, well inside any
// sensible reserve.
const diskCheckInterval = time.Second

// commit commits b. An error from Pebble (its log's write or sync
// failed, and its log keeps the error) or a panic from its Fatalf or
// commit path fails the database for writes: every later commit is
// refused while reads go on, and the server reopens the directory once
// the disk takes writes, replaying what was acknowledged, rather than
// ending with every write in its head.
//
// A panic also marks the database wedged: Pebble panics inside its commit
// pipeline with its commit lock held, or with the batch left in its
// queue of commits to publish, so that no later commit or Close would
// return.
func (db *DB) commit(b *pebble.Batch, o *pebble.WriteOptions) (err error) {
	if f := db.disk.failed.Load(); f != nil {
		return db.failedErr(*f)
	}
	defer func() {
		if r := recover(); r != nil {
			db.disk.wedged.Store(true)
			if f, ok := r.(fatalError); ok {
				err = db.failWrites(errors.New(string(f)))
				return
			}
			db.opts.Logger.Error("pebble commit panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = db.failWrites(fmt.Errorf("pebble commit panicked: %v", r))
		}
	}()
	if err := b.Commit(o); err != nil {
		// Pebble's log keeps the error: every later commit would panic
		// on it.
		return db.failWrites(err)
	}
	return nil
}

// commitOwned is commit for a write request: it takes b (and closes it)
// and returns when the commit is done or, whichever comes first, when
// the database fails for writes. A commit that meets a full disk waits
// inside Pebble for a flush, or forever once Pebble's pipeline is
// wedged; its request is answered "unavailable" as soon as the failure
// is known instead, and Close does not wait for it. Should the commit
// complete later, it has written only series keys and postings, which a
// record never names: they cost space and nothing else.
func (db *DB) commitOwned(b *pebble.Batch, o *pebble.WriteOptions) error {
	done := make(chan error, 1)
	go func() {
		err := db.commit(b, o)
		b.Close()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-db.disk.failedCh:
		select {
		case err := <-done:
			return err
		default:
			return db.failedErr(*db.disk.failed.Load())
		}
	}
}

// Wedged reports that Pebble stopped inside a commit: the data directory
// cannot be closed or opened again in this process (Close returns
// ErrWedged at once, leaving Pebble as it is); a new process replays
// everything acknowledged.
func (db *DB) Wedged() bool { return db.disk.wedged.Load() }

// ErrWedged is Close's error for a wedged database.
var ErrWedged = errors.New("the storage engine stopped inside a commit when the disk failed: the data directory can only be opened again by a new process (everything acknowledged is in the log)")

// failWrites fails the database for writes after the log's write or sync
// failed (the log cannot be trusted after a failed fsync), as commit does
// for Pebble's, and returns the error to give the writer.
func (db *DB) failWrites(err error) error {
	msg := err.Error()
	if db.disk.failed.CompareAndSwap(nil, &msg) {
		close(db.disk.failedCh)
		db.opts.Logger.Error("storage failed: writes are refused until restart; reads go on", "err", msg)
	}
	db.releaseBallast(msg)
	return db.failedErr(*db.disk.failed.Load())
}

func (db *DB) failedErr(msg string) error {
	return fmt.Errorf("%w: the data directory's disk failed a write (%s): writes are refused until the data directory is opened again (headroom serve does it once the disk takes writes); reads go on", series.ErrUnavailable, msg)
}

// Failed is the error that failed the database for writes (a write to
// Pebble's log the disk refused), or nil. Unlike a nearly full disk, it
// does not pass by itself: the database must be closed and opened again
// once the disk takes writes (ProbeDisk says when).
func (db *DB) Failed() error {
	if f := db.disk.failed.Load(); f != nil {
		return db.failedErr(*f)
	}
	return nil
}

// ProbeDisk writes, syncs and removes a small file in dir through fs
// (nil: the operating system's), the way the log is written, and checks
// that minFree bytes are free (Options.ReopenFreeBytes): nil means the
// disk takes writes again, with room to go on.
func ProbeDisk(fs vfs.FS, dir string, minFree int64) error {
	if fs == nil {
		fs = vfs.Default
	}
	if u, err := fs.GetDiskUsage(dir); err == nil && u.AvailBytes < uint64(minFree) {
		return fmt.Errorf("%s free on %s, want %s to reopen", bytesString(u.AvailBytes), dir, bytesString(uint64(minFree)))
	}
	name := fs.PathJoin(dir, ProbeFile)
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	_, err = f.Write(make([]byte, 4096))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := fs.Remove(name); err == nil {
		err = rerr
	}
	return err
}

// ProbeFile is the file ProbeDisk writes in the data directory.
const ProbeFile = "headroom-disk-probe"

// Writable says whether a write would be accepted now: nil, or an error
// wrapping series.ErrUnavailable that says why not (the disk failed a
// write, or its free space is under Options.MinFreeDisk). Readiness
// probes and every ingest commit ask it.
func (db *DB) Writable() error {
	if f := db.disk.failed.Load(); f != nil {
		return db.failedErr(*f)
	}
	if db.opts.MinFreeDisk <= 0 {
		return nil
	}
	d := &db.disk
	if now, next := time.Now().UnixNano(), d.nextCheck.Load(); now >= next && d.nextCheck.CompareAndSwap(next, now+int64(diskCheckInterval)) {
		avail := uint64(math.MaxUint64) // not knowing is no reason to refuse: the reserve is a guard, not the only defence
		if u, err := db.opts.FS.GetDiskUsage(db.dir); err == nil {
			avail = u.AvailBytes
		}
		d.avail.Store(avail)
	}
	if avail := d.avail.Load(); avail < uint64(db.opts.MinFreeDisk) {
		return fmt.Errorf("%w: disk nearly full: %s free on %s, under the reserve of %s (--min-free-disk); writes resume when space is freed",
			series.ErrUnavailable, bytesString(avail), db.dir, bytesString(uint64(db.opts.MinFreeDisk)))
	}
	return nil
}

func bytesString(n uint64) string {
	switch {
	case n >= 1<<40:
		return fmt.Sprintf("%.1f TiB", float64(n)/(1<<40))
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d KiB", n>>10)
	}
}
