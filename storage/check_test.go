package storage

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/series"
)

// Check reads a healthy directory without complaint, then finds a chunk
// whose bytes were damaged on disk, a damaged rollup block and postings of
// a series that does not exist, naming the series and day; it refuses a
// directory a server has open.
func TestCheck(t *testing.T) {
	c := &clock{day0}
	o := rollupOptions(c)
	dir := t.TempDir()
	db := openTest(t, dir, o)
	for s := 0; s < 3; s++ {
		ls := series.FromStrings("__name__", "m", "s", string(rune('a'+s)))
		var ss []series.Sample
		for ts := ms(day0) - 2*86400_000; ts < ms(day0); ts += 60_000 {
			ss = append(ss, series.Sample{T: ts, V: float64(ts % 13)})
		}
		mustAppend(t, db, ls, ss...)
	}
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	c.now = day0.Add(24 * time.Hour)
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(dir, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("check of an open directory: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Check(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Damaged() || r.Series != 3 || r.Samples != 3*2*1440 || r.RollupBlocks == 0 || r.Buckets == 0 {
		t.Fatalf("healthy directory: %+v", r)
	}

	// Damage: flip a byte inside one chunk and one rollup block, and add
	// postings for series 999, which does not exist.
	pdb, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	flip := func(kind byte) {
		it, _ := pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kind}, UpperBound: []byte{kind + 1}})
		it.First()
		k, v := append([]byte(nil), it.Key()...), append([]byte(nil), it.Value()...)
		it.Close()
		v[len(v)-3] ^= 0x10
		if err := pdb.Set(k, v, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	flip(kindChunk)
	flip(kindRollup)
	if err := pdb.Set(binary.BigEndian.AppendUint64(postingPrefix(nil, dayOf(ms(day0)), "__name__", "m"), 999), nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	pdb.Close()
	r, err = Check(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(r.Damage, "\n")
	if !r.Damaged() || len(r.Damage) != 2 || r.OrphanPostings != 1 ||
		!strings.Contains(all, "chunk checksum mismatch") || !strings.Contains(all, "rollup block") || !strings.Contains(all, "day 2026-") {
		t.Fatalf("damaged directory: %+v", r)
	}
}
