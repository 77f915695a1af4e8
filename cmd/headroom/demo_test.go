package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The demo is what `make run` does: it must write, read back and reopen a
// real data directory without error, twice (the second run overwrites).
func TestDemoRuns(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	for i := 0; i < 2; i++ {
		if err := runDemo([]string{"--data-dir", dir, "--hosts", "3", "--metrics", "2", "--hours", "1"}); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
		t.Fatalf("data directory %s: %d entries, %v", dir, len(entries), err)
	}
	if err := runDemo([]string{"--hosts", "0"}); err == nil {
		t.Error("demo accepted --hosts 0")
	}
}
