package storage

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// allocated is the disk space file name takes (0 when absent).
func allocated(t *testing.T, name string) int64 {
	t.Helper()
	fi, err := os.Stat(name)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// TestBallast: the directory keeps its two memtables' worth of disk
// allocated, gives it back when a write fails on the disk (so that Pebble
// can flush and the directory close on a full disk), and allocates it
// again when opened.
func TestBallast(t *testing.T) {
	dir := t.TempDir()
	c := &clock{day0}
	o := testOptions(c)
	o.MemTableSize = 4 << 20
	db := openTest(t, dir, o)
	name := filepath.Join(dir, BallastFile)
	if got := allocated(t, name); got < 8<<20 {
		t.Fatalf("ballast of %d bytes allocated, want 8 MiB (two memtables)", got)
	}
	if o.ReopenFreeBytes() != 16<<20 {
		t.Errorf("ReopenFreeBytes %d, want twice the ballast", o.ReopenFreeBytes())
	}
	// A flush that found the disk full, as Pebble reports it.
	db.pebbleBackgroundError(errors.New("pebble: flush: write 000042.sst: no space left on device"))
	if err := db.Writable(); err == nil {
		t.Error("writes accepted after a flush failed for space")
	}
	if got := allocated(t, name); got != 0 {
		t.Errorf("ballast still holds %d bytes after the disk filled", got)
	}
	// Other background errors are logged, and fail nothing.
	db2dir := t.TempDir()
	db2 := openTest(t, db2dir, o)
	db2.pebbleBackgroundError(errors.New("pebble: compaction: checksum mismatch"))
	if err := db2.Writable(); err != nil {
		t.Errorf("a non-space background error failed the database: %v", err)
	}
	db2.Close()
	db.Close()
	db = openTest(t, dir, o)
	defer db.Close()
	if got := allocated(t, name); got < 8<<20 {
		t.Fatalf("ballast of %d bytes after reopening, want 8 MiB", got)
	}
	if err := ProbeDisk(nil, dir, 1<<62); err == nil {
		t.Error("ProbeDisk passed a disk without the free space asked for")
	}
	if err := ProbeDisk(nil, dir, 0); err != nil {
		t.Errorf("ProbeDisk: %v", err)
	}
}
