package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage/series"
)

func TestParseTime(t *testing.T) {
	want := time.Date(2018, 7, 3, 14, 0, 0, 0, time.UTC).UnixMilli()
	for _, s := range []string{"2018-07-03 14:00:00", `"2018-07-03T14:00:00Z"`, "2018-07-03T14:00:00", "2018-07-03T16:00:00+02:00"} {
		got, err := parseTime(s)
		if err != nil || got != want {
			t.Errorf("parseTime(%q) = %d, %v, want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "yesterday", "2018-13-01 00:00:00", `"`} {
		if _, err := parseTime(s); err == nil {
			t.Errorf("parseTime(%q) accepted", s)
		}
	}
}

// The real datasets' warts, in small: quoted fields, a gap, a repeat.
func TestLoadTimeValueCSV(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.csv")
	os.WriteFile(path, []byte("\"TimeStamp\",\"Value\",\"Label\"\n"+
		"\"2018-04-25T00:00:00Z\",\"1.5\",\"0\"\n"+
		"2018-04-25 00:01:00,,0\n"+
		"2018-04-25 00:01:00,2,1\n"), 0o644)
	s, err := loadTimeValueCSV(path, series.FromStrings("__name__", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.samples) != 2 || s.samples[0].V != 1.5 || s.samples[1].V != 2 || s.samples[1].T-s.samples[0].T != 60_000 {
		t.Errorf("loaded %v", s.samples)
	}
	os.WriteFile(path, []byte("t,v\n2018-04-25 00:00:00,abc\n"), 0o644)
	if _, err := loadTimeValueCSV(path, nil); err == nil || !strings.Contains(err.Error(), ":2:") {
		t.Errorf("bad value: err = %v, want one naming line 2", err)
	}
}

// FuzzLoadTimeValueCSV: the dataset loader reads files from outside; it
// must return an error, not panic, on any bytes.
func FuzzLoadTimeValueCSV(f *testing.F) {
	f.Add([]byte("timestamp,value\n2014-02-14 14:30:00,0.132\n"))
	f.Add([]byte("\"TimeStamp\",\"Value\"\n\"2018-04-25T00:00:00Z\",\"\"\n"))
	f.Add([]byte("a\n\"unterminated"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "f.csv")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := loadTimeValueCSV(path, nil)
		if err == nil {
			for i := range s.samples {
				if _, err := parseTime(time.UnixMilli(s.samples[i].T).UTC().Format(time.RFC3339Nano)); err != nil {
					t.Fatalf("loaded a timestamp that does not print back: %v", err)
				}
			}
		}
	})
}
