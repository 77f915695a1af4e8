package storage

import (
	"errors"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// BallastFile is space the database keeps allocated in its directory and
// gives back when the disk fills. Without it, a disk filled by the log
// (with --min-free-disk 0, or a burst between two measures of free space)
// leaves Pebble no room to flush its memtables: its flush fails and is
// retried without end, and closing the database waits on that flush
// forever (a server that cannot stop). With the ballast released, the
// flush completes, writes stay refused (the database failed) and the
// directory closes; it is allocated again when the directory is next
// opened with room for it.
const BallastFile = "headroom-ballast"

// ballastBytes is what the ballast holds: Pebble's two memtables, flushed.
func (o *Options) ballastBytes() int64 { return 2 * o.MemTableSize }

// ReopenFreeBytes is the free space a failed database needs before it is
// opened again (ProbeDisk checks it): room for its ballast, and as much
// again for writes to resume.
func (o Options) ReopenFreeBytes() int64 {
	r := o.withDefaults()
	return 2 * r.ballastBytes()
}

// allocateBallast (re)allocates the ballast, or says why it could not: a
// disk without room for it still opens, without the protection.
func (db *DB) allocateBallast() {
	size := db.opts.ballastBytes()
	name := db.opts.FS.PathJoin(db.dir, BallastFile)
	_ = db.opts.FS.Remove(name)
	if u, err := db.opts.FS.GetDiskUsage(db.dir); err == nil && u.AvailBytes < uint64(2*size) {
		db.opts.Logger.Warn("no room for the disk-full ballast: if the disk fills, closing may wait for space", "free", bytesString(u.AvailBytes), "ballast", bytesString(uint64(size)))
		return
	}
	f, err := db.opts.FS.Create(name, vfs.WriteCategoryUnspecified)
	if err == nil {
		err = f.Preallocate(0, size)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		_ = db.opts.FS.Remove(name)
		db.opts.Logger.Warn("disk-full ballast not allocated", "err", err)
		return
	}
	db.ballast.Store(true)
}

// releaseBallast gives the ballast's space back, once, after a write
// failed on the disk.
func (db *DB) releaseBallast(why string) {
	if !db.ballast.CompareAndSwap(true, false) {
		return
	}
	if err := db.opts.FS.Remove(db.opts.FS.PathJoin(db.dir, BallastFile)); err != nil {
		db.opts.Logger.Error("disk-full ballast not released", "err", err)
		return
	}
	db.opts.Logger.Warn("disk-full ballast released, so that Pebble can flush and the directory close", "bytes", bytesString(uint64(db.opts.ballastBytes())), "after", why)
}

// pebbleBackgroundError fails the database for writes when a flush or
// compaction found the disk full: Pebble retries them, so the failure
// would otherwise go on unseen (and spin) while the log takes the rest.
func (db *DB) pebbleBackgroundError(err error) {
	if now, last := time.Now().UnixNano(), db.bgErrLogged.Load(); now-last >= int64(10*time.Second) && db.bgErrLogged.CompareAndSwap(last, now) {
		db.opts.Logger.Error("pebble background error (flush or compaction; retried)", "err", err)
	}
	if errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), "no space left on device") {
		db.failWrites(err)
	}
}
