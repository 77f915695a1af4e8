package storage

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/wal"
)

// CheckReport is what Check found in a data directory.
type CheckReport struct {
	Series, Chunks, Samples int64
	HistChunks, HistSamples int64 // native histograms
	RollupBlocks, Buckets   int64
	// Native histograms' blocks and buckets in the tiers.
	HistRollupBlocks, HistBuckets int64
	WALRecords                    int64 // not yet checkpointed: replayed at the next open
	Pending                       int64 // series-days marked for the downsampler
	Damage                        []string
	OrphanPostings, OrphanKeys    int64 // index entries of series that do not exist
	Took                          time.Duration
}

// Damaged reports whether the check found anything wrong.
func (r *CheckReport) Damaged() bool {
	return len(r.Damage) > 0 || r.OrphanPostings > 0 || r.OrphanKeys > 0
}

// maxDamageListed bounds the report's list; the counts stay exact.
const maxDamageListed = 100

// Check reads a data directory offline, without changing it: every series
// label set, every chunk (checksum and full decoding), every rollup block
// and sketch block, and the index (postings and hash keys of series that
// do not exist). It takes the directory's lock, so it refuses a directory
// a server has open. progress, if set, is called now and then with the
// keys read so far.
func Check(dir string, progress func(keys int64)) (*CheckReport, error) {
	start := time.Now()
	pdb, done, err := openReadOnly(dir)
	if err != nil {
		return nil, err
	}
	defer done()
	r := &CheckReport{}
	damage := func(format string, args ...any) {
		if len(r.Damage) < maxDamageListed {
			r.Damage = append(r.Damage, fmt.Sprintf(format, args...))
		} else if len(r.Damage) == maxDamageListed {
			r.Damage = append(r.Damage, "... (more not listed)")
		}
	}
	// First pass: the series that exist.
	exists := map[uint64]bool{}
	it, err := pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kindSeries}, UpperBound: []byte{kindSeries + 1}})
	if err != nil {
		return nil, err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 9 {
			damage("series key %x: %d bytes", k, len(k))
			continue
		}
		id := binary.BigEndian.Uint64(k[1:])
		if _, err := decodeLabels(k, it.Value()); err != nil {
			damage("series %d: %v", id, err)
			continue
		}
		exists[id] = true
		r.Series++
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	// Second pass: everything else.
	it, err = pdb.NewIter(nil)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var keys int64
	var ci chunk.Iterator
	var cols rollup.Columns
	for it.First(); it.Valid(); it.Next() {
		keys++
		if progress != nil && keys%1_000_000 == 0 {
			progress(keys)
		}
		k, v := it.Key(), it.Value()
		switch k[0] {
		case kindChunk, kindHistChunk:
			hist := k[0] == kindHistChunk
			what := "chunk"
			if hist {
				what = "histogram chunk"
			}
			day, id, _, ok := parseChunkKey(k)
			if !ok {
				damage("%s key %x: malformed", what, k)
				continue
			}
			if !exists[id] {
				r.OrphanKeys++
			}
			chunks, samples := &r.Chunks, &r.Samples
			if hist {
				chunks, samples = &r.HistChunks, &r.HistSamples
			}
			*chunks++
			_, chk, err := parseChunkValue(k, v)
			if err != nil {
				damage("series %d, day %s: %v", id, dayString(day), err)
				continue
			}
			n := 0
			if hist {
				hi := chunk.NewHistogramIterator(chk)
				for hi.Next() {
					n++
				}
				err = hi.Err()
			} else {
				ci.Reset(chk)
				for ci.Next() {
					n++
				}
				err = ci.Err()
			}
			if err != nil {
				damage("series %d, day %s: %s: %v", id, dayString(day), what, err)
				continue
			}
			*samples += int64(n)
		case kindPostings:
			_, _, _, id, ok := parsePosting(k)
			if !ok {
				damage("postings key %x: malformed", k)
			} else if !exists[id] {
				r.OrphanPostings++
			}
		case kindHash:
			if len(k) != 17 || !exists[binary.BigEndian.Uint64(k[9:])] {
				r.OrphanKeys++
			}
		case kindHistRollup:
			if len(k) != 22 {
				damage("histogram rollup key %x: malformed", k)
				continue
			}
			id := binary.BigEndian.Uint64(k[6:])
			if !exists[id] {
				r.OrphanKeys++
			}
			r.HistRollupBlocks++
			bs, err := rollup.DecodeHistBlock(nil, v)
			if err != nil {
				damage("series %d, tier %d histogram rollup block %d: %v", id, k[1], binary.BigEndian.Uint32(k[2:]), err)
				continue
			}
			r.HistBuckets += int64(len(bs))
		case kindRollup, kindSketch:
			if len(k) != 22 {
				damage("rollup key %x: malformed", k)
				continue
			}
			id := binary.BigEndian.Uint64(k[6:])
			if !exists[id] {
				r.OrphanKeys++
			}
			cols.Reset()
			if k[0] == kindRollup {
				r.RollupBlocks++
				if err := rollup.DecodeColumns(&cols, v, rollup.ColAll); err != nil {
					damage("series %d, tier %d rollup block %d: %v", id, k[1], binary.BigEndian.Uint32(k[2:]), err)
					continue
				}
				r.Buckets += int64(cols.Len())
				continue
			}
			// A sketch block: its own checksum and sketches (its match with
			// the column block is checked when a query reads both).
			if err := checkSketches(v); err != nil {
				damage("series %d, tier %d sketch block %d: %v", id, k[1], binary.BigEndian.Uint32(k[2:]), err)
			}
		case kindWAL:
			r.WALRecords++
		case kindRollMark:
			r.Pending++
			if len(k) != 13 || len(v) != 8 {
				damage("roll marker %x: malformed", k)
			} else if !exists[binary.BigEndian.Uint64(k[1:])] {
				r.OrphanKeys++
			}
		case kindFloor:
			if len(k) != 9 || len(v) != 4 {
				damage("series floor %x: malformed", k)
			} else if !exists[binary.BigEndian.Uint64(k[1:])] {
				r.OrphanKeys++
			}
		case kindDirty, kindBackfill:
			r.Pending++ // the first downsampler's, converted at the next open
		case kindMetricMeta:
			if _, err := decodeMetadata(v); err != nil {
				damage("metric metadata %q: %v", k[1:], err)
			}
		}
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	// The log's records a restart would replay.
	cp := uint64(0)
	if v, closer, err := pdb.Get(metaKey("checkpoint")); err == nil {
		if len(v) == 8 {
			cp = binary.BigEndian.Uint64(v)
		}
		closer.Close()
	}
	n, err := wal.Count(vfs.Default, filepath.Join(dir, "wal"), cp+1)
	if err != nil {
		damage("write-ahead log: %v", err)
	}
	r.WALRecords += n
	r.Took = time.Since(start)
	return r, nil
}

// checkSketches decodes a sketch block on its own.
func checkSketches(b []byte) error {
	// DecodeSketches wants the columns' bucket count: give it as many
	// starts as the block says it holds.
	if len(b) < 6 {
		return fmt.Errorf("%w: %d-byte sketch block", rollup.ErrCorrupt, len(b))
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || n > rollup.MaxBlockBuckets {
		return fmt.Errorf("%w: sketch block bucket count", rollup.ErrCorrupt)
	}
	return rollup.DecodeSketches(&rollup.Columns{Start: make([]int64, n)}, b)
}

// openReadOnly opens a directory no server has open (taking its lock)
// without changing it; done closes it.
func openReadOnly(dir string) (*pebble.DB, func(), error) {
	lock, err := lockDir(dir)
	if err != nil {
		return nil, nil, err
	}
	pdb, err := pebble.Open(dir, &pebble.Options{ReadOnly: true, Logger: quietLogger{slog.Default()}})
	if err != nil {
		lock.release()
		return nil, nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return pdb, func() { pdb.Close(); lock.release() }, nil
}

func dayString(day uint32) string {
	return time.UnixMilli(int64(day) * msPerDay).UTC().Format("2006-01-02")
}

// DropRollMarkers deletes every roll marker of a directory no server has
// open: the downsampler then never rolls those days up again. For tests
// of `headroom check --tiers`, which must find what that leaves.
func DropRollMarkers(dir string) error {
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer lock.release()
	pdb, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{slog.Default()}})
	if err != nil {
		return err
	}
	defer pdb.Close()
	return pdb.DeleteRange([]byte{kindRollMark}, []byte{kindRollMark + 1}, pebble.Sync)
}
