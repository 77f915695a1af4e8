package storage

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// TestImportRollups is a cluster copy between two stores: the new store
// imports the source's buckets older than the source's raw floor (only
// its tiers hold them), takes the raw samples after it as samples, and
// rolls those up itself; then every tier, floats and histograms, reads
// the same on both, across the floor, before and after the source's
// blocks straddling it.
func TestImportRollups(t *testing.T) {
	r := rand.New(rand.NewPCG(testSeed(t), 3))
	c := &clock{day0}
	opts := func() Options {
		o := rollupOptions(c)
		o.Retention = 2 * 24 * time.Hour
		o.Tiers = []Tier{{5 * time.Minute, 20 * 24 * time.Hour}, {time.Hour, 60 * 24 * time.Hour}}
		return o
	}
	src := openTest(t, t.TempDir(), opts())
	defer src.Close()
	dst := openTest(t, t.TempDir(), opts())
	defer dst.Close()

	// Six days to day0 of a gauge and a counter histogram.
	fl := series.FromStrings("__name__", "m", "kind", "gauge")
	hl := series.FromStrings("__name__", "m", "kind", "hist")
	var ss []series.Sample
	var hs []series.HistSample
	g := newHistGen(r)
	for ts := ms(day0) - 6*86400_000; ts < ms(day0); ts += int64(30_000 + r.IntN(90_000)) {
		ss = append(ss, series.Sample{T: ts, V: float64(r.IntN(1000)) / 8})
		hs = append(hs, series.HistSample{T: ts, H: g.next()})
	}
	write := func(db *DB, after int64) {
		a := db.Appender()
		for _, s := range ss {
			if s.T > after {
				if err := a.Append(fl, s.T, s.V); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, h := range hs {
			if h.T > after {
				if err := a.AppendHistogram(hl, h.T, h.H); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := a.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := db.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	write(src, MinTime-1)
	c.now = day0.Add(24 * time.Hour)
	for _, f := range []func() error{src.RunRollups, src.ApplyRetention} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	before := src.RawOldest()
	if before <= ss[0].T {
		t.Fatalf("the source's raw floor %d did not pass its first sample %d", before, ss[0].T)
	}

	// The copy: tiers before the floor, raw samples after it.
	cols := func(tier int) uint {
		if src.Tiers()[tier].Sketches {
			return rollup.ColAll
		}
		return rollup.ColAll &^ rollup.ColSketch
	}
	// A tier's series as a copy receives them, before the floor.
	floatsOf := func(tier int) []rollup.SeriesBuckets {
		var out []rollup.SeriesBuckets
		if _, err := src.EachRollup(tier, 0, before-1, cols(tier), 0, 1, []*series.Matcher{nameM}, func(ls series.Labels, c *rollup.Columns) error {
			var bs []rollup.Bucket
			for i := range c.Start {
				bs = append(bs, c.Bucket(i))
			}
			out = append(out, rollup.SeriesBuckets{Labels: ls.Copy(), Buckets: bs})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	histsOf := func(tier int) []rollup.SeriesHistBuckets {
		var out []rollup.SeriesHistBuckets
		if _, err := src.EachHistRollup(tier, 0, before-1, 0, 1, []*series.Matcher{nameM}, func(ls series.Labels, bs []rollup.HistBucket) error {
			out = append(out, rollup.SeriesHistBuckets{Labels: ls.Copy(), Buckets: slices.Clone(bs)})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	for tier := range 2 {
		if err := dst.ImportRollups(tier, floatsOf(tier), before); err != nil {
			t.Fatal(err)
		}
		if err := dst.ImportHistRollups(tier, histsOf(tier), before); err != nil {
			t.Fatal(err)
		}
	}
	write(dst, before)
	if err := dst.RunRollups(); err != nil {
		t.Fatal(err)
	}

	for tier := range 2 {
		floats := func(db *DB) map[string][]rollup.Bucket {
			out := map[string][]rollup.Bucket{}
			rs, err := db.Rollups(tier, 0, MaxTime, nameM)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range rs {
				out[s.Labels.String()] = s.Buckets
			}
			return out
		}
		hists := func(db *DB) map[string][]rollup.HistBucket {
			out := map[string][]rollup.HistBucket{}
			if _, err := db.EachHistRollup(tier, 0, MaxTime, 0, 1, []*series.Matcher{nameM}, func(ls series.Labels, bs []rollup.HistBucket) error {
				out[ls.String()] = bs
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			return out
		}
		want, got := floats(src), floats(dst)
		if n := len(want[fl.String()]); n < 2*24 {
			t.Fatalf("tier %d: the source has %d float buckets", tier, n)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("tier %d: float buckets differ: %s", tier, firstDiff(got[fl.String()], want[fl.String()]))
		}
		wantH, gotH := hists(src), hists(dst)
		if len(wantH[hl.String()]) == 0 {
			t.Fatalf("tier %d: the source has no histogram buckets", tier)
		}
		if !reflect.DeepEqual(gotH, wantH) {
			t.Errorf("tier %d: histogram buckets differ (%d and %d)", tier, len(gotH[hl.String()]), len(wantH[hl.String()]))
		}
	}

	// Imported again (a copy retried), each series twice in one batch
	// (the second reads the first's blocks from the batch): nothing
	// changes.
	again := floatsOf(1)
	if err := dst.ImportRollups(1, append(again, again...), before); err != nil {
		t.Fatal(err)
	}
	a, _ := src.Rollups(1, 0, MaxTime, nameM)
	b, _ := dst.Rollups(1, 0, MaxTime, nameM)
	if !reflect.DeepEqual(a, b) {
		t.Error("a second import changed the tier")
	}
	if err := dst.ImportRollups(2, []rollup.SeriesBuckets{{Labels: fl}}, before); err == nil {
		t.Error("an import into a tier that does not exist")
	}

	// The same copy with the blocks as the source keeps them: whole
	// blocks before the floor taken as they are, the straddling one
	// spliced. Then again after a late sample the source's head holds
	// (after the floor): the source computes that series' blocks as a
	// read does.
	late := before + 60_000
	copyStored := func(withLate bool) {
		if withLate {
			a := src.Appender()
			if err := a.Append(fl, late, 12345); err != nil {
				t.Fatal(err)
			}
			if err := a.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		sdb := openTest(t, t.TempDir(), opts())
		defer sdb.Close()
		for tier := range 2 {
			var ss []rollup.StoredSeries
			rr, err := src.EachStoredRollup(tier, 0, before-1, src.Tiers()[tier].Sketches, false, 0, 1, []*series.Matcher{nameM}, func(ls series.Labels, _ int64, bs []rollup.StoredBlock) error {
				s := rollup.StoredSeries{Labels: ls.Copy()}
				for _, b := range bs {
					s.Blocks = append(s.Blocks, rollup.StoredBlock{Start: b.Start, Columns: slices.Clone(b.Columns), Sketches: slices.Clone(b.Sketches)})
				}
				ss = append(ss, s)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(ss) != 1 || (rr.RawDays > 0) != withLate {
				t.Fatalf("tier %d (late sample %v): %d series copied as stored, %d days computed", tier, withLate, len(ss), rr.RawDays)
			}
			if err := sdb.ImportStoredRollups(tier, ss, before); err != nil {
				t.Fatal(err)
			}
			if err := sdb.ImportHistRollups(tier, histsOf(tier), before); err != nil {
				t.Fatal(err)
			}
		}
		write(sdb, before)
		if withLate {
			a := sdb.Appender()
			if err := a.Append(fl, late, 12345); err != nil {
				t.Fatal(err)
			}
			if err := a.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		if err := sdb.RunRollups(); err != nil {
			t.Fatal(err)
		}
		for tier := range 2 {
			want, _ := src.Rollups(tier, 0, MaxTime, nameM)
			got, _ := sdb.Rollups(tier, 0, MaxTime, nameM)
			if len(want) == 0 || !reflect.DeepEqual(got, want) {
				t.Errorf("tier %d (late sample %v): the copy of stored blocks reads %d series, the source %d, or their buckets differ", tier, withLate, len(got), len(want))
			}
		}
		// A block that does not start on the tier's span is refused.
		if err := sdb.ImportStoredRollups(0, []rollup.StoredSeries{{Labels: fl, Blocks: []rollup.StoredBlock{{Start: 7}}}}, before); err == nil {
			t.Error("a block off the tier's span was taken")
		}
	}
	copyStored(false)
	copyStored(true)

	// A store that holds histograms only in its tiers (imported, or its
	// raw days gone) still reads them after a restart.
	dir := t.TempDir()
	only := openTest(t, dir, opts())
	var imported int
	if _, err := src.EachHistRollup(1, 0, before-1, 0, 1, []*series.Matcher{nameM}, func(ls series.Labels, bs []rollup.HistBucket) error {
		for _, b := range bs {
			if b.Start < before { // the blocks' later buckets are not imported
				imported++
			}
		}
		return only.ImportHistRollups(1, []rollup.SeriesHistBuckets{{Labels: ls, Buckets: bs}}, before)
	}); err != nil {
		t.Fatal(err)
	}
	only.Close()
	only = openTest(t, dir, opts())
	defer only.Close()
	var read int
	if _, err := only.EachHistRollup(1, 0, before-1, 0, 1, []*series.Matcher{nameM}, func(ls series.Labels, bs []rollup.HistBucket) error {
		for _, b := range bs {
			if b.Start < before {
				read++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if imported == 0 || read != imported {
		t.Errorf("after a restart, %d histogram buckets read of %d imported", read, imported)
	}
}

func firstDiff(got, want []rollup.Bucket) string {
	for i := range min(len(got), len(want)) {
		if !reflect.DeepEqual(got[i], want[i]) {
			return fmt.Sprintf("at %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	return fmt.Sprintf("%d buckets, want %d", len(got), len(want))
}
