package storage

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/headroomdb/headroom/storage/series"
)

// walFault fails every write to Pebble's log files with err while on.
func walFault(err error) *errorfs.Toggle {
	return &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, ".log") {
			return err
		}
		return nil
	})}
}

// tryCommit appends one sample of ls and commits it.
func tryCommit(db *DB, ls series.Labels, t int64, v float64) error {
	a := db.Appender()
	if err := a.Append(ls, t, v); err != nil {
		return err
	}
	return a.Commit()
}

// TestWALWriteFault: a disk that fails writes to the log (EIO, or ENOSPC
// without the free-space reserve) fails the commit with ErrUnavailable
// instead of ending the process, reads go on, and after a restart every
// acknowledged sample is there and writes work again.
func TestWALWriteFault(t *testing.T) {
	for _, fault := range []error{syscall.EIO, syscall.ENOSPC} {
		t.Run(fault.Error(), func(t *testing.T) {
			c := &clock{time.Now()}
			dir := t.TempDir()
			tog := walFault(fault)
			o := testOptions(c)
			o.FS = errorfs.Wrap(vfs.Default, tog)
			db := openTest(t, dir, o)
			ls := series.FromStrings("__name__", "up", "job", "a")
			now := ms(c.now)
			for i := 0; i < 10; i++ {
				if err := tryCommit(db, ls, now+int64(i), float64(i)); err != nil {
					t.Fatal(err)
				}
			}
			tog.On()
			err := tryCommit(db, ls, now+10, 10)
			if !errors.Is(err, series.ErrUnavailable) || !strings.Contains(err.Error(), fault.Error()) {
				t.Fatalf("commit on a failing disk: %v, want ErrUnavailable naming %q", err, fault)
			}
			if got := query(t, db, 0, MaxTime, anyName)[ls.String()]; len(got) != 10 {
				t.Fatalf("read while the disk fails writes: %d samples, want 10", len(got))
			}
			// Pebble's log cannot be written again in this process: the
			// database says so, until restart, even once the fault clears.
			tog.Off()
			if err := tryCommit(db, ls, now+11, 11); !errors.Is(err, series.ErrUnavailable) || !strings.Contains(err.Error(), "until the data directory is opened again") {
				t.Fatalf("commit after the fault cleared, before restart: %v", err)
			}
			if err := db.Writable(); err == nil {
				t.Fatal("Writable is nil on a failed database")
			}
			db.Close() // may report the failure; it must not panic

			db = openTest(t, dir, testOptions(c))
			defer db.Close()
			got := query(t, db, 0, MaxTime, anyName)[ls.String()]
			if len(got) != 10 {
				t.Fatalf("after restart: %d samples, want the 10 acknowledged: %v", len(got), got)
			}
			for i, s := range got {
				if s.V != float64(i) {
					t.Fatalf("after restart, sample %d = %v", i, s.V)
				}
			}
			if err := tryCommit(db, ls, now+12, 12); err != nil {
				t.Fatalf("write after restart: %v", err)
			}
		})
	}
}

var anyName = series.MustMatcher(series.MatchRegexp, "__name__", ".+")

// usageFS reports the free space the test sets.
type usageFS struct {
	vfs.FS
	avail atomic.Uint64
}

func (f *usageFS) GetDiskUsage(path string) (vfs.DiskUsage, error) {
	u, err := f.FS.GetDiskUsage(path)
	u.AvailBytes = f.avail.Load()
	return u, err
}

// TestDiskNearlyFull: under the reserve, writes are refused with a message
// that says why and how they resume; reads and retention go on; writes
// resume by themselves once space is freed.
func TestDiskNearlyFull(t *testing.T) {
	c := &clock{time.Now()}
	fs := &usageFS{FS: vfs.Default}
	fs.avail.Store(10 << 30)
	o := testOptions(c)
	o.FS = fs
	o.MinFreeDisk = 256 << 20
	db := openTest(t, t.TempDir(), o)
	defer db.Close()
	ls := series.FromStrings("__name__", "up")
	now := ms(c.now)
	if err := tryCommit(db, ls, now, 1); err != nil {
		t.Fatal(err)
	}
	fs.avail.Store(100 << 20)
	time.Sleep(diskCheckInterval)
	err := tryCommit(db, ls, now+1, 2)
	if !errors.Is(err, series.ErrUnavailable) || !strings.Contains(err.Error(), "disk nearly full: 100.0 MiB free") || !strings.Contains(err.Error(), "256.0 MiB") {
		t.Fatalf("commit on a nearly full disk: %v", err)
	}
	if got := query(t, db, 0, MaxTime, anyName)[ls.String()]; len(got) != 1 {
		t.Fatalf("read on a nearly full disk: %v", got)
	}
	if err := db.ApplyRetention(); err != nil {
		t.Fatalf("retention on a nearly full disk (it frees space): %v", err)
	}
	if err := db.Checkpoint(); err != nil {
		t.Fatalf("checkpoint on a nearly full disk: %v", err)
	}
	fs.avail.Store(1 << 30)
	deadline := time.Now().Add(10 * diskCheckInterval)
	for {
		err := tryCommit(db, ls, now+1, 2)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes did not resume after space was freed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := query(t, db, 0, MaxTime, anyName)[ls.String()]; len(got) != 2 {
		t.Fatalf("after writes resumed: %v", got)
	}
}

// TestReadFault: a disk that fails reads of the stored tables fails the
// query with an error (not a panic, not fewer samples), and the same
// query answers in full once the fault clears.
func TestReadFault(t *testing.T) {
	c := &clock{time.Now()}
	dir := t.TempDir()
	db := openTest(t, dir, testOptions(c))
	now := ms(c.now.Add(-3 * time.Hour))
	// More chunks than opening the database reads, so that the query
	// must read tables from the disk.
	for s := 0; s < 500; s++ {
		ls := series.FromStrings("__name__", "cpu", "core", strconv.Itoa(s))
		var ss []series.Sample
		for i := 0; i < 1000; i++ {
			ss = append(ss, series.Sample{T: now + int64(i)*10_000, V: float64(i)})
		}
		mustAppend(t, db, ls, ss...)
	}
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := db.pdb.Flush(); err != nil {
		t.Fatal(err)
	}
	want := query(t, db, 0, MaxTime, anyName)
	db.Close()

	var reads atomic.Int64
	tog := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpFileReadAt && strings.HasSuffix(op.Path, ".sst") {
			reads.Add(1)
			return syscall.EIO
		}
		return nil
	})}
	o := testOptions(c)
	o.FS = errorfs.Wrap(vfs.Default, tog)
	db = openTest(t, dir, o)
	defer db.Close()
	tog.On()
	q, err := db.Querier(0, MaxTime)
	if err == nil {
		var set *SeriesSet
		set, err = q.Select(series.MustMatcher(series.MatchEqual, "__name__", "cpu"))
		for err == nil && set.Next() {
			it := set.At().Iterator()
			for it.Next() {
			}
			err = it.Err()
		}
		if err == nil {
			err = set.Err()
		}
		q.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("query over a disk failing reads: %v (reads failed: %d), want the I/O error", err, reads.Load())
	}
	tog.Off()
	if got := query(t, db, 0, MaxTime, anyName); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the fault cleared: %d series, want %d as before the fault", len(got), len(want))
	}
}

// TestCommitPanicFailsWrites: a panic in Pebble's commit path (once its
// log failed, commits in flight panic with the raw error; here a closed
// batch stands in) fails the database for writes instead of ending the
// process; reads go on.
func TestCommitPanicFailsWrites(t *testing.T) {
	c := &clock{day0}
	db := openTest(t, t.TempDir(), testOptions(c))
	defer db.Close()
	ls := series.FromStrings("__name__", "m")
	now := c.Now().UnixMilli()
	if err := tryCommit(db, ls, now, 1); err != nil {
		t.Fatal(err)
	}
	b := db.pdb.NewIndexedBatch()
	b.Set([]byte("x"), []byte("y"), nil)
	b.Close()
	if err := db.commit(b, nil); !errors.Is(err, series.ErrUnavailable) || !strings.Contains(err.Error(), "pebble commit panicked") {
		t.Fatalf("commit that panicked: %v", err)
	}
	if err := tryCommit(db, ls, now+1, 2); !errors.Is(err, series.ErrUnavailable) {
		t.Errorf("a write after the panic: %v, want refused", err)
	}
	if got := query(t, db, 0, MaxTime, anyName)[ls.String()]; len(got) != 1 {
		t.Errorf("read after the panic: %v, want the acknowledged sample", got)
	}
}

// TestPebbleLogFaultUnderLoad: Pebble's own log fails under writers that
// keep creating series (each commit goes through Pebble's log). A commit
// that fails leaves Pebble's log broken for the commits behind it, which
// may panic inside Pebble's pipeline and wedge it: whichever happens, no
// writer waits forever, every writer is answered "unavailable", and Close
// returns (ErrWedged when wedged, leaving Pebble as it is).
func TestPebbleLogFaultUnderLoad(t *testing.T) {
	c := &clock{day0}
	tog := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, ".log") && !strings.Contains(op.Path, "/wal/") {
			return syscall.ENOSPC
		}
		return nil
	})}
	o := testOptions(c)
	o.FS = errorfs.Wrap(vfs.Default, tog)
	db := openTest(t, t.TempDir(), o)
	now := c.Now().UnixMilli()
	const writers = 8
	var acked atomic.Int64
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		go func() {
			for i := 0; ; i++ {
				if i == 20 && w == 0 {
					tog.On()
				}
				ls := series.FromStrings("__name__", "m", "w", strconv.Itoa(w), "i", strconv.Itoa(i))
				if err := tryCommit(db, ls, now, float64(i)); err != nil {
					errs <- err
					return
				}
				acked.Add(1)
			}
		}()
	}
	for w := 0; w < writers; w++ {
		select {
		case err := <-errs:
			if !errors.Is(err, series.ErrUnavailable) {
				t.Errorf("writer stopped by %v, want ErrUnavailable", err)
			}
		case <-time.After(time.Minute): // a hang guard
			t.Fatalf("%d writers still waiting a minute after Pebble's log failed (wedged %v)", writers-w, db.Wedged())
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed:
		t.Logf("wedged %v, close: %v, %d commits acknowledged", db.Wedged(), err, acked.Load())
		if db.Wedged() != errors.Is(err, ErrWedged) {
			t.Errorf("wedged %v, but Close returned %v", db.Wedged(), err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("Close waits a minute after Pebble's log failed (wedged %v)", db.Wedged())
	}
}
