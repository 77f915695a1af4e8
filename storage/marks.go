package storage

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// walRecordMarks is the first byte of a log record that carries marks
// before a sample record (part of the on-disk format: never change):
//
//	byte 0     3
//	uvarint    mark count
//	per mark   uvarint name length, name, uvarint value
//	then       a version 1 or 2 record
//
// A mark is a named counter that moves with the samples of the commit
// that sets it, in the same log record: a cluster owner records the
// stream sequence of the message it applied, so that after any crash the
// mark says exactly which messages are in the store.
const walRecordMarks = 3

// marksPrefix is the meta key prefix under which a checkpoint stores the
// marks before it drops the log records that set them.
const marksPrefix = "mark/"

// maxMarkName bounds a mark's name, as a guard against a corrupt record.
const maxMarkName = 256

// markSet is the database's marks: the largest value each was set to.
type markSet struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (s *markSet) raise(name string, v uint64) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[string]uint64{}
	}
	if v > s.m[name] {
		s.m[name] = v
	}
	s.mu.Unlock()
}

func (s *markSet) get(name string) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[name]
	return v, ok
}

func (s *markSet) snapshot() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.m))
	for k, v := range s.m {
		out[k] = v
	}
	return out
}

// Mark is one mark an Appender's Commit sets.
type Mark struct {
	Name  string
	Value uint64
}

// SetMark makes the next Commit set the mark name to v (a mark only
// rises: a smaller value than the stored one leaves it), durably and
// atomically with the commit's samples. A commit of marks alone is
// allowed.
func (a *Appender) SetMark(name string, v uint64) error {
	if name == "" || len(name) > maxMarkName {
		return fmt.Errorf("mark name %q: want 1 to %d bytes", name, maxMarkName)
	}
	a.marks = append(a.marks, Mark{name, v})
	return nil
}

// Mark returns the value the mark name was last set to by a commit that
// succeeded, and whether it was ever set.
func (db *DB) Mark(name string) (uint64, bool) { return db.marks.get(name) }

// Marks returns every mark and its value.
func (db *DB) Marks() map[string]uint64 { return db.marks.snapshot() }

func appendMarks(dst []byte, marks []Mark) []byte {
	dst = append(dst, walRecordMarks)
	dst = binary.AppendUvarint(dst, uint64(len(marks)))
	for _, m := range marks {
		dst = binary.AppendUvarint(dst, uint64(len(m.Name)))
		dst = append(dst, m.Name...)
		dst = binary.AppendUvarint(dst, m.Value)
	}
	return dst
}

// decodeMarks parses the marks of a record that starts with
// walRecordMarks and returns the sample record that follows them.
func decodeMarks(rec []byte, f func(name string, v uint64)) ([]byte, error) {
	rec = rec[1:]
	n, k := binary.Uvarint(rec)
	if k <= 0 || n > uint64(len(rec)) {
		return nil, fmt.Errorf("bad mark count")
	}
	rec = rec[k:]
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(rec)
		if k <= 0 || l == 0 || l > maxMarkName || uint64(len(rec)-k) < l {
			return nil, fmt.Errorf("bad mark name")
		}
		name := string(rec[k : k+int(l)])
		rec = rec[k+int(l):]
		v, k2 := binary.Uvarint(rec)
		if k2 <= 0 {
			return nil, fmt.Errorf("bad mark value")
		}
		rec = rec[k2:]
		f(name, v)
	}
	return rec, nil
}

// storeMarks writes every mark to b, for a checkpoint that drops the log
// records that set them: each is at least what those records set, and
// only ever what a durable record set.
func (db *DB) storeMarks(b *pebble.Batch) {
	for name, v := range db.marks.snapshot() {
		b.Set(metaKey(marksPrefix+name), binary.BigEndian.AppendUint64(nil, v), nil)
	}
}

// loadMarks reads the marks a checkpoint stored, before the log replays
// the records after it.
func (db *DB) loadMarks() error {
	lo := metaKey(marksPrefix)
	hi := append(metaKey(marksPrefix[:len(marksPrefix)-1]), marksPrefix[len(marksPrefix)-1]+1)
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if len(it.Value()) != 8 {
			return &CorruptionError{Key: append([]byte(nil), it.Key()...), Err: fmt.Errorf("mark of %d bytes, want 8", len(it.Value()))}
		}
		db.marks.raise(string(it.Key()[len(lo):]), binary.BigEndian.Uint64(it.Value()))
	}
	return it.Error()
}
