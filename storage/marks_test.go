package storage

import (
	"testing"

	"github.com/headroomdb/headroom/storage/series"
)

// TestMarksMoveWithTheirCommit: a mark is set by the commit that carries
// it and by no other; it survives a crash (replayed from the log) and a
// checkpoint (stored in Pebble) alike, only rises, and a rolled-back
// appender sets nothing.
func TestMarksMoveWithTheirCommit(t *testing.T) {
	c := &clock{day0}
	dir := t.TempDir()
	db := openTest(t, dir, testOptions(c))
	now := c.Now().UnixMilli()
	ls := series.FromStrings("__name__", "m")
	a := db.Appender()
	if err := a.Append(ls, now, 1); err != nil {
		t.Fatal(err)
	}
	if err := a.SetMark("p.3", 41); err != nil {
		t.Fatal(err)
	}
	if _, ok := db.Mark("p.3"); ok {
		t.Fatal("a mark is set before its commit")
	}
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	if v, ok := db.Mark("p.3"); !ok || v != 41 {
		t.Fatalf("after commit: %d %v, want 41", v, ok)
	}
	// Rolled back: not set. Lower: ignored. Marks alone: committed.
	a.SetMark("p.3", 99)
	a.Append(ls, now+1, 2)
	a.Rollback()
	a.SetMark("p.3", 7)
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	a.SetMark("p.4", 5)
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := a.SetMark("", 1); err == nil {
		t.Error("an empty mark name is accepted")
	}
	want := map[string]uint64{"p.3": 41, "p.4": 5}
	check := func(when string, db *DB) {
		t.Helper()
		got := db.Marks()
		if len(got) != len(want) || got["p.3"] != want["p.3"] || got["p.4"] != want["p.4"] {
			t.Fatalf("%s: marks %v, want %v", when, got, want)
		}
	}
	check("live", db)
	if err := db.CloseNoCheckpoint(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, dir, testOptions(c))
	check("replayed after a crash", db)
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	a = db.Appender()
	a.Append(ls, now+2, 3)
	a.SetMark("p.4", 6)
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	want["p.4"] = 6
	if err := db.CloseNoCheckpoint(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, dir, testOptions(c))
	defer db.Close()
	check("from the checkpoint and the log after it", db)
	if got := query(t, db, 0, MaxTime, anyName)[ls.String()]; len(got) != 2 {
		t.Errorf("samples %v, want the two committed", got)
	}
}
