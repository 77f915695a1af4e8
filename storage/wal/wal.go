// Package wal owns the write-ahead log of a data directory: numbered
// records appended to segment files and made durable by one fsync shared
// by every writer waiting at that moment (group commit), replayed in
// order after a crash, and deleted a segment at a time once a checkpoint
// covers them. It knows nothing of what a record holds, and must not
// touch the rest of the data directory.
//
// The log used to be keys in Pebble: every record went through Pebble's
// own log, its memtable, a flush to a table and a compaction before its
// range deletion dropped it, at the cost of a tenth of the server's CPU
// in zstd alone (bench/RESULTS.md, issue 13). Here a record is written
// once, and read only after a crash.
//
// A segment is named by the sequence of its first record (16 hex
// digits, ".log"), and holds records framed as
//
//	u32 length of the payload (little-endian)
//	u32 CRC-32C of the sequence and the payload (little-endian)
//	u64 sequence (little-endian)
//	payload
//
// Sequences increase by one from record to record, across segments. A
// crash can leave the last segment with a torn record at its end: replay
// stops there; the next record is written in a new segment.
package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

const (
	headerLen = 16
	suffix    = ".log"
	// SegmentBytes is the size after which a new segment is started, so
	// that a checkpoint frees the log a segment at a time.
	SegmentBytes = 64 << 20
	// maxRecord bounds a record a reader accepts.
	maxRecord = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt marks a record that fails its checks before the last
// segment's end.
var ErrCorrupt = errors.New("corrupt write-ahead log")

// Log is an open write-ahead log. Append is safe for concurrent use.
type Log struct {
	fs  vfs.FS
	dir string

	mu   sync.Mutex
	cond *sync.Cond
	// Guarded by mu.
	f        vfs.File
	segs     []uint64 // first sequence of each segment, oldest first; the last is f
	size     int64    // bytes in f
	next     uint64   // sequence of the next record
	buf      []byte   // framed records not yet written
	spare    []byte
	syncing  bool
	synced   uint64 // every record before it is durable
	err      error  // sticky: a failed write or sync
	rotateAt bool   // start a new segment at the next write
	closed   bool
}

// Open opens (creating it if needed) the log in dir. The next record
// written gets sequence next (the caller's: one past what it replayed
// and checkpointed), in a new segment.
func Open(fs vfs.FS, dir string) (*Log, error) {
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	l := &Log{fs: fs, dir: dir}
	l.cond = sync.NewCond(&l.mu)
	segs, err := l.list()
	if err != nil {
		return nil, err
	}
	l.segs = segs
	return l, nil
}

// list returns the segments' first sequences, sorted.
func (l *Log) list() ([]uint64, error) {
	names, err := l.fs.List(l.dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, n := range names {
		base, ok := strings.CutSuffix(n, suffix)
		if !ok || len(base) != 16 {
			continue
		}
		s, err := strconv.ParseUint(base, 16, 64)
		if err != nil {
			continue
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out, nil
}

func (l *Log) path(first uint64) string {
	return l.fs.PathJoin(l.dir, fmt.Sprintf("%016x%s", first, suffix))
}

// Replay calls f with every record of sequence from or more, in order.
// A torn or damaged record ends the replay when it is in the last
// segment (a crash in the middle of a write), and is an error wrapping
// ErrCorrupt before it. It returns the sequence after the last record
// read (from, when none), which the caller passes to Start.
func (l *Log) Replay(from uint64, f func(seq uint64, rec []byte) error) (uint64, error) {
	next := from
	for i, first := range l.segs {
		if i+1 < len(l.segs) && l.segs[i+1] <= from {
			continue // wholly before from
		}
		// A crash can tear the last record of the segment it was written
		// to; the next process starts a new segment at the next sequence.
		// So a damaged record ends a segment if it is the last, or if the
		// next segment goes on from it; anywhere else it is damage.
		tornOK := func(expect uint64) bool {
			return i == len(l.segs)-1 || l.segs[i+1] == expect
		}
		file, err := l.fs.Open(l.path(first))
		if err != nil {
			return next, err
		}
		data, err := io.ReadAll(file)
		file.Close()
		if err != nil {
			return next, err
		}
		pos := 0
		lastSeq := first - 1 // of this segment's records read
		for pos < len(data) {
			bad := func(what string) error {
				return fmt.Errorf("%w: segment %s at byte %d: %s", ErrCorrupt, l.path(first), pos, what)
			}
			if len(data)-pos < headerLen {
				if tornOK(lastSeq + 1) {
					break
				}
				return next, bad("truncated header")
			}
			n := binary.LittleEndian.Uint32(data[pos:])
			sum := binary.LittleEndian.Uint32(data[pos+4:])
			seq := binary.LittleEndian.Uint64(data[pos+8:])
			end := pos + headerLen + int(n)
			if n > maxRecord || end > len(data) || crc32.Checksum(data[pos+8:end], castagnoli) != sum {
				if tornOK(lastSeq + 1) {
					break // torn by a crash
				}
				return next, bad("checksum mismatch or truncated record")
			}
			lastSeq = seq
			if seq >= from {
				if err := f(seq, data[pos+headerLen:end]); err != nil {
					return next, err
				}
				next = seq + 1
			}
			pos = end
		}
	}
	return next, nil
}

// Start makes next the sequence of the next record written (a new
// segment is created at the first write).
func (l *Log) Start(next uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next, l.synced, l.rotateAt = next, next, true
}

// Append writes rec as the next record and returns its sequence once the
// record is durable: every writer waiting meanwhile shares one write and
// one fsync. After a failed write or sync every Append fails: a file
// whose sync failed cannot be trusted (the caller reopens the log).
// A sequence is returned even with an error when the record got one (the
// caller must still account for it).
func (l *Log) Append(rec []byte) (seq uint64, assigned bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, false, l.err
	}
	if l.closed {
		return 0, false, errors.New("write-ahead log closed")
	}
	seq = l.next
	l.next++
	var h [headerLen]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(rec)))
	binary.LittleEndian.PutUint64(h[8:], seq)
	c := crc32.Update(crc32.Checksum(h[8:], castagnoli), castagnoli, rec)
	binary.LittleEndian.PutUint32(h[4:], c)
	l.buf = append(append(l.buf, h[:]...), rec...)
	for l.synced <= seq && l.err == nil {
		if l.syncing {
			l.cond.Wait()
			continue
		}
		// Lead: write what is buffered, and sync, without the lock.
		l.syncing = true
		data, upto := l.buf, l.next
		l.buf, l.spare = l.spare[:0], nil
		werr := l.writeLocked(data)
		f := l.f
		l.mu.Unlock()
		if werr == nil {
			werr = f.SyncData()
		}
		l.mu.Lock()
		l.spare = data[:0]
		l.syncing = false
		if werr != nil {
			l.err = fmt.Errorf("write-ahead log: %w", werr)
		} else {
			l.synced = upto
		}
		l.cond.Broadcast()
	}
	if l.synced <= seq {
		return seq, true, l.err
	}
	return seq, true, nil
}

// writeLocked writes data to the current segment, starting a new one
// first when due. Called with mu held and syncing set: no other write or
// rotation runs meanwhile (the write itself happens here, under mu, as
// it is a copy to the page cache; the sync is outside).
func (l *Log) writeLocked(data []byte) error {
	if l.f == nil || l.rotateAt || l.size >= SegmentBytes {
		if err := l.newSegmentLocked(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(data)
	l.size += int64(n)
	return err
}

// newSegmentLocked closes the current segment (synced already) and
// creates the next, named by the first sequence it will hold: the first
// of the data about to be written.
func (l *Log) newSegmentLocked() error {
	first := l.synced
	if l.f != nil {
		if err := l.f.Close(); err != nil {
			return err
		}
		l.f = nil
	}
	f, err := l.fs.Create(l.path(first), vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	// The new file's name must survive a crash with its records.
	if d, err := l.fs.OpenDir(l.dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			f.Close()
			return err
		}
	}
	if n := len(l.segs); n > 0 && l.segs[n-1] == first {
		// A segment of that name (empty, or torn before any record of
		// this process) is replaced.
		l.segs = l.segs[:n-1]
	}
	l.f, l.size, l.rotateAt = f, 0, false
	l.segs = append(l.segs, first)
	return nil
}

// Rotate makes the next write start a new segment, so that the records
// before it can be deleted once a checkpoint covers them.
func (l *Log) Rotate() {
	l.mu.Lock()
	l.rotateAt = true
	l.mu.Unlock()
}

// Truncate deletes every segment whose records all have sequences up to
// upto (a checkpoint covers them).
func (l *Log) Truncate(upto uint64) error {
	l.mu.Lock()
	var drop []uint64
	for len(l.segs) > 1 && l.segs[1] <= upto+1 {
		drop = append(drop, l.segs[0])
		l.segs = l.segs[1:]
	}
	// The current segment too, when it holds nothing after upto: a
	// checkpoint at a clean stop leaves an empty log.
	if len(l.segs) == 1 && !l.syncing && len(l.buf) == 0 && l.next <= upto+1 && l.err == nil {
		if l.f != nil {
			l.f.Close()
			l.f = nil
		}
		drop = append(drop, l.segs[0])
		l.segs, l.rotateAt = l.segs[:0], true
	}
	l.mu.Unlock()
	for _, s := range drop {
		if err := l.fs.Remove(l.path(s)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// Segments returns the number of segment files (for tests and metrics).
func (l *Log) Segments() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.segs)
}

// Close closes the current segment. Records appended and acknowledged
// are durable already.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.syncing {
		l.cond.Wait()
	}
	l.closed = true
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Count returns the number of records of sequence from or more in the
// log in dir, without changing anything (a missing dir holds none).
func Count(fs vfs.FS, dir string, from uint64) (int64, error) {
	if _, err := fs.Stat(dir); os.IsNotExist(err) {
		return 0, nil
	}
	l := &Log{fs: fs, dir: dir}
	segs, err := l.list()
	if err != nil {
		return 0, err
	}
	l.segs = segs
	var n int64
	_, err = l.Replay(from, func(uint64, []byte) error { n++; return nil })
	return n, err
}
