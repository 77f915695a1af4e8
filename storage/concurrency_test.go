package storage

import (
	"errors"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage/series"
)

// Many committers at once share fsyncs through Pebble's commit pipeline
// and apply in sequence order; with background checkpoints running, every
// sample must come back, and a series all of them overwrite must read the
// same before and after a restart (live apply order == log order).
func TestConcurrentCommitters(t *testing.T) {
	c := &clock{day0}
	o := testOptions(c)
	o.DisableBackground = false
	o.CheckpointInterval = 5 * time.Millisecond
	o.HeadIdleTimeout = 10 * time.Millisecond // series come and go from the head
	o.ChunkSamples = 30
	dir := t.TempDir()
	db := openTest(t, dir, o)
	const writers, batches, perBatch = 8, 40, 50
	base := ms(day0) - 3600_000
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			a := db.Appender()
			own := series.FromStrings("__name__", "cpu", "writer", strconv.Itoa(w))
			shared := series.FromStrings("__name__", "cpu", "writer", "shared")
			for b := 0; b < batches; b++ {
				for k := 0; k < perBatch; k++ {
					if err := a.Append(own, base+int64(b*perBatch+k)*1000, float64(k)); err != nil {
						t.Error(err)
						return
					}
				}
				if err := a.Append(shared, base+int64(b)*1000, float64(w)); err != nil {
					t.Error(err)
					return
				}
				// A rarely written series per writer: idle between writes.
				rare := series.FromStrings("__name__", "cpu", "writer", strconv.Itoa(w), "rare", strconv.Itoa(b%4))
				if err := a.Append(rare, base+int64(b)*1000, float64(b)); err != nil {
					t.Error(err)
					return
				}
				if b%7 == 0 {
					time.Sleep(3 * time.Millisecond)
				}
				if err := a.Commit(); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	got := query(t, db, 0, MaxTime, nameCPU)
	for w := 0; w < writers; w++ {
		if n := len(got[series.FromStrings("__name__", "cpu", "writer", strconv.Itoa(w)).String()]); n != batches*perBatch {
			t.Errorf("writer %d: %d samples, want %d", w, n, batches*perBatch)
		}
	}
	for w := 0; w < writers; w++ {
		for r := 0; r < 4; r++ {
			ls := series.FromStrings("__name__", "cpu", "writer", strconv.Itoa(w), "rare", strconv.Itoa(r))
			if n := len(got[ls.String()]); n != batches/4 {
				t.Errorf("%s: %d samples, want %d", ls, n, batches/4)
			}
		}
	}
	shared := got[series.FromStrings("__name__", "cpu", "writer", "shared").String()]
	if len(shared) != batches {
		t.Fatalf("shared series: %d samples, want %d", len(shared), batches)
	}
	for _, s := range shared {
		if s.V < 0 || s.V >= writers {
			t.Fatalf("shared sample %v holds no writer's value", s)
		}
	}
	// Crash (no checkpoint at close): log replay must rebuild the same.
	if err := db.CloseNoCheckpoint(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, dir, testOptions(c))
	defer db.Close()
	again := query(t, db, 0, MaxTime, nameCPU)[series.FromStrings("__name__", "cpu", "writer", "shared").String()]
	if !eqSamples(again, shared) {
		t.Fatalf("shared series after restart = %v, before = %v", again, shared)
	}
}

// Open starts background goroutines; Close must stop every one of them.
func TestCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	c := &clock{day0}
	o := testOptions(c)
	o.DisableBackground = false
	db := openTest(t, t.TempDir(), o)
	mustAppend(t, db, series.FromStrings("__name__", "cpu"), series.Sample{T: ms(day0) - 1000, V: 1})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// Close while committers run: each commit either lands or gets ErrClosed;
// nothing panics and nothing acknowledged is lost.
func TestCloseDuringCommits(t *testing.T) {
	c := &clock{day0}
	dir := t.TempDir()
	db := openTest(t, dir, testOptions(c))
	var wg sync.WaitGroup
	acked := make([]int, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			a := db.Appender()
			ls := series.FromStrings("__name__", "cpu", "writer", strconv.Itoa(w))
			for k := 0; ; k++ {
				if err := a.Append(ls, ms(day0)-3600_000+int64(k)*1000, 1); err != nil {
					if !errors.Is(err, series.ErrClosed) {
						t.Error(err)
					}
					return
				}
				if err := a.Commit(); err != nil {
					if !errors.Is(err, series.ErrClosed) {
						t.Error(err)
					}
					return
				}
				acked[w] = k + 1
			}
		}(w)
	}
	time.Sleep(50 * time.Millisecond)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	db = openTest(t, dir, testOptions(c))
	defer db.Close()
	got := query(t, db, 0, MaxTime, nameCPU)
	for w, n := range acked {
		if n == 0 {
			t.Errorf("writer %d acknowledged nothing in 50 ms", w)
		}
		if g := len(got[series.FromStrings("__name__", "cpu", "writer", strconv.Itoa(w)).String()]); g < n {
			t.Errorf("writer %d: %d samples after reopen, %d acknowledged", w, g, n)
		}
	}
}
