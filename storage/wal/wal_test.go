package wal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func replayAll(t *testing.T, dir string, from uint64) (map[uint64][]byte, uint64) {
	t.Helper()
	l, err := Open(vfs.Default, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := map[uint64][]byte{}
	next, err := l.Replay(from, func(seq uint64, rec []byte) error {
		got[seq] = append([]byte(nil), rec...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, next
}

// Concurrent writers share syncs; every acknowledged record comes back
// once, in sequence order, after the log is reopened, and a checkpoint's
// truncation drops only what it covers.
func TestAppendReplayTruncate(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(vfs.Default, dir)
	if err != nil {
		t.Fatal(err)
	}
	l.Start(1)
	var wg sync.WaitGroup
	var mu sync.Mutex
	want := map[uint64][]byte{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				rec := []byte(fmt.Sprintf("writer %d record %d %s", w, i, bytes.Repeat([]byte{byte(i)}, i)))
				seq, assigned, err := l.Append(rec)
				if err != nil || !assigned {
					t.Error(err)
					return
				}
				mu.Lock()
				want[seq] = rec
				mu.Unlock()
				if i == 100 && w == 0 {
					l.Rotate()
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, next := replayAll(t, dir, 1)
	if len(got) != 1600 || next != 1601 {
		t.Fatalf("replayed %d records, next %d", len(got), next)
	}
	for seq, rec := range want {
		if !bytes.Equal(got[seq], rec) {
			t.Fatalf("record %d: %q, want %q", seq, got[seq], rec)
		}
	}
	// Reopen, write on in a new segment, truncate what 1,000 covers.
	l, err = Open(vfs.Default, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Replay(1, func(uint64, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	l.Start(next)
	if seq, _, err := l.Append([]byte("after")); err != nil || seq != 1601 {
		t.Fatalf("append after reopen: %d %v", seq, err)
	}
	segs := l.Segments()
	if err := l.Truncate(1000); err != nil {
		t.Fatal(err)
	}
	if l.Segments() >= segs || l.Segments() < 2 {
		t.Fatalf("%d segments after truncating, %d before", l.Segments(), segs)
	}
	l.Close()
	got, _ = replayAll(t, dir, 1001)
	if len(got) != 601 || string(got[1601]) != "after" {
		t.Fatalf("after truncation: %d records", len(got))
	}
}

// A record torn by a crash ends its segment; the next process writes on
// in a new segment, and the torn one stays readable. Damage elsewhere
// is an error.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	l, _ := Open(vfs.Default, dir)
	l.Start(1)
	for i := 0; i < 10; i++ {
		if _, _, err := l.Append([]byte(fmt.Sprint("record ", i))); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	seg := filepath.Join(dir, fmt.Sprintf("%016x.log", 1))
	data, _ := os.ReadFile(seg)
	os.WriteFile(seg, data[:len(data)-3], 0o644) // the last record torn
	got, next := replayAll(t, dir, 1)
	if len(got) != 9 || next != 10 {
		t.Fatalf("torn tail: %d records, next %d", len(got), next)
	}
	l, _ = Open(vfs.Default, dir)
	l.Replay(1, func(uint64, []byte) error { return nil })
	l.Start(next)
	if _, _, err := l.Append([]byte("record 9 again")); err != nil {
		t.Fatal(err)
	}
	l.Close()
	got, _ = replayAll(t, dir, 1)
	if len(got) != 10 || string(got[10]) != "record 9 again" {
		t.Fatalf("after the torn segment: %d records: %q", len(got), got[10])
	}
	// A flipped byte in the middle of the first segment: damage.
	data[20] ^= 0xff
	os.WriteFile(seg, data[:len(data)-3], 0o644)
	l, _ = Open(vfs.Default, dir)
	defer l.Close()
	if _, err := l.Replay(1, func(uint64, []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damage before the tail: %v", err)
	}
}

// FuzzReplay: a segment of arbitrary bytes never panics the reader, and
// what it returns has passed the checksum.
func FuzzReplay(f *testing.F) {
	dir := f.TempDir()
	l, _ := Open(vfs.Default, dir)
	l.Start(1)
	l.Append([]byte("one"))
	l.Append([]byte("two"))
	l.Close()
	seed, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%016x.log", 1)))
	f.Add(seed)
	f.Add([]byte{})
	f.Add(seed[:20])
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("%016x.log", 1)), data, 0o644)
		l, err := Open(vfs.Default, dir)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		last := uint64(0)
		l.Replay(0, func(seq uint64, rec []byte) error {
			if seq < last {
				t.Fatalf("sequence %d after %d", seq, last)
			}
			last = seq
			return nil
		})
	})
}
