package storage

import (
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/series"
)

// TestMetadataSurvivesRestart: metric metadata is kept across a reopen,
// the latest entry wins, a bad one is refused, and a damaged stored
// entry is reported by the check and by Open.
func TestMetadataSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, Options{DisableBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		metric string
		md     series.Metadata
	}{
		{"up", series.Metadata{Type: "gauge", Help: "Target up."}},
		{"req_total", series.Metadata{Type: "counter", Help: "old"}},
		{"req_total", series.Metadata{Type: "counter", Help: "Requests.", Unit: "requests"}},
	} {
		if err := db.SetMetadata(c.metric, c.md); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.SetMetadata("", series.Metadata{}); !errors.Is(err, series.ErrInvalid) {
		t.Errorf("no name: %v", err)
	}
	if err := db.SetMetadata("big", series.Metadata{Help: strings.Repeat("x", 5000)}); !errors.Is(err, series.ErrInvalid) || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("5000-byte help: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, Options{DisableBackground: true}); err != nil {
		t.Fatal(err)
	}
	got := db.Metadata("", 0)
	if len(got) != 2 || got["req_total"] != (series.Metadata{Type: "counter", Help: "Requests.", Unit: "requests"}) || got["up"].Help != "Target up." {
		t.Errorf("after reopen: %+v", got)
	}
	if one := db.Metadata("", 1); len(one) != 1 || one["req_total"].Type != "counter" {
		t.Errorf("limit 1 (by name): %+v", one)
	}
	if one := db.Metadata("up", 0); len(one) != 1 {
		t.Errorf("metric up: %+v", one)
	}
	// Damage an entry: the check names it, and Open refuses the directory.
	if err := db.pdb.Set(metadataKey("up"), []byte{0x7f}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Check(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Damage) == 0 || !strings.Contains(strings.Join(r.Damage, "\n"), `metric metadata "up"`) {
		t.Errorf("check of a damaged entry: %+v", r.Damage)
	}
	if _, err := Open(dir, Options{DisableBackground: true}); err == nil || !strings.Contains(err.Error(), "metric metadata") {
		t.Errorf("open with a damaged entry: %v", err)
	}
}
