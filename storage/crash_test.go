package storage

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage/series"
)

// The crash test runs the writer in a child process (this test binary,
// re-executed), kills it with SIGKILL at a random moment, reopens the
// directory and checks that every commit the child acknowledged is there,
// and that no commit is there in part.

const (
	crashWriters   = 4
	crashSeries    = 10 // per writer
	crashPerSeries = 25 // samples per series per batch
)

func crashLabels(w, j int) series.Labels {
	return series.FromStrings("__name__", "crash", "writer", strconv.Itoa(w), "s", strconv.Itoa(j))
}

// crashHist is writer w's histogram of batch b: its sum names the batch.
func crashHist(b int) *series.Histogram {
	return &series.Histogram{Schema: 2, Count: float64(b%7 + 3), Sum: float64(b),
		PositiveSpans: []series.Span{{Offset: -1, Length: 2}}, PositiveBuckets: []float64{1, float64(b%7 + 2)}}
}

func crashValue(w, b, j, k int) float64 { return float64(w*1_000_000+b*1000+j*50+k) + 0.25 }

// crashT spreads batches so that they seal chunks, and every third batch
// reaches back in time to exercise the late-sample path.
func crashT(base int64, b, k int) int64 {
	if b%3 == 2 {
		return base - 1_000_000 - int64(b)*1000 - int64(k)
	}
	return base + int64(b)*1000 + int64(k)
}

func TestCrashChild(t *testing.T) {
	dir := os.Getenv("HEADROOM_CRASH_DIR")
	if dir == "" {
		t.Skip("only runs as the child of TestCrashKill9")
	}
	base, _ := strconv.ParseInt(os.Getenv("HEADROOM_CRASH_BASE"), 10, 64)
	first, _ := strconv.Atoi(os.Getenv("HEADROOM_CRASH_FIRST_BATCH"))
	db, err := Open(dir, Options{CheckpointInterval: 20 * time.Millisecond, ChunkSamples: 60})
	if err != nil {
		fmt.Println("OPEN-ERROR", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for w := 0; w < crashWriters; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			a := db.Appender()
			for b := first; ; b++ {
				for j := 0; j < crashSeries; j++ {
					for k := 0; k < crashPerSeries; k++ {
						if err := a.Append(crashLabels(w, j), crashT(base, b, k), crashValue(w, b, j, k)); err != nil {
							fmt.Println("APPEND-ERROR", err)
							os.Exit(3)
						}
					}
				}
				if err := a.AppendHistogram(crashLabels(w, -1), crashT(base, b, 0), crashHist(b)); err != nil {
					fmt.Println("APPEND-ERROR", err)
					os.Exit(3)
				}
				if err := a.Commit(); err != nil {
					fmt.Println("COMMIT-ERROR", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintf(out, "ACK %d %d\n", w, b)
				out.Flush()
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
}

func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test starts child processes; skipped in -short mode")
	}
	r := rand.New(rand.NewPCG(testSeed(t), 9))
	dir := t.TempDir()
	base := time.Now().Add(-2 * time.Hour).UnixMilli()
	acked := map[[2]int]bool{} // writer, batch
	nextBatch := 0
	for cycle := 0; cycle < 3; cycle++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
		cmd.Env = append(os.Environ(),
			"HEADROOM_CRASH_DIR="+dir,
			"HEADROOM_CRASH_BASE="+strconv.FormatInt(base, 10),
			"HEADROOM_CRASH_FIRST_BATCH="+strconv.Itoa(nextBatch))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// The kill comes at a random moment after the first
		// acknowledgement: opening (replaying the earlier cycles) can take
		// seconds on a loaded machine under the race detector.
		var killAt <-chan time.Time
		giveUp := time.After(60 * time.Second)
		n := 0
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				var w, b int
				if _, err := fmt.Sscanf(l, "ACK %d %d", &w, &b); err == nil {
					acked[[2]int{w, b}] = true
					if n++; n == 1 {
						killAt = time.After(time.Duration(r.IntN(700)) * time.Millisecond)
					}
				} else if strings.Contains(l, "ERROR") {
					t.Fatalf("child: %s", l)
				}
			case <-killAt:
				cmd.Process.Signal(syscall.SIGKILL)
				killAt = nil
			case <-giveUp:
				cmd.Process.Signal(syscall.SIGKILL)
				giveUp = nil
			}
		}
		cmd.Wait()
		if n == 0 {
			t.Fatalf("cycle %d: the child acknowledged nothing before the kill", cycle)
		}
		t.Logf("cycle %d: killed after %d acknowledged commits", cycle, n)
		nextBatch += 100_000 // fresh batch numbers for the next child

		db, err := Open(dir, Options{DisableBackground: true})
		if err != nil {
			t.Fatalf("cycle %d: reopen after kill -9: %v", cycle, err)
		}
		q, err := db.Querier(0, MaxTime)
		if err != nil {
			t.Fatal(err)
		}
		set, err := q.Select(series.MustMatcher(series.MatchEqual, "__name__", "crash"))
		if err != nil {
			t.Fatal(err)
		}
		found := map[string]map[int64]float64{}
		hists := map[[2]int]int64{} // writer, batch: time
		for set.Next() {
			s := set.At()
			for _, h := range s.Hists {
				var w int
				fmt.Sscanf(s.Labels.Get("writer"), "%d", &w)
				b := int(h.H.Sum)
				if s.Labels.Get("s") != "-1" || h.T != crashT(base, b, 0) || h.H.Count != crashHist(b).Count {
					t.Fatalf("series %s: unexpected histogram %+v at %d", s.Labels, *h.H, h.T)
				}
				hists[[2]int{w, b}] = h.T
			}
			m := map[int64]float64{}
			it := s.Iterator()
			for it.Next() {
				ts, v := it.At()
				m[ts] = v
			}
			if it.Err() != nil {
				t.Fatal(it.Err())
			}
			found[s.Labels.String()] = m
		}
		if set.Err() != nil {
			t.Fatal(set.Err())
		}
		q.Close()
		// Every acknowledged batch is whole; any batch present is whole.
		batches := map[[2]int]int{}
		for w := 0; w < crashWriters; w++ {
			for j := 0; j < crashSeries; j++ {
				m := found[crashLabels(w, j).String()]
				for ts, v := range m {
					// Decode the batch from the value.
					iv := int(v)
					b := (iv - w*1_000_000) / 1000
					if crashValue(w, b, j, (iv%1000)-j*50) != v {
						t.Fatalf("writer %d series %d: unexpected value %v at %d", w, j, v, ts)
					}
					batches[[2]int{w, b}]++
				}
			}
		}
		for k := range hists {
			if batches[k] != crashSeries*crashPerSeries {
				t.Fatalf("cycle %d: the histogram of batch %v is there, %d of its %d float samples", cycle, k, batches[k], crashSeries*crashPerSeries)
			}
		}
		for k := range acked {
			if _, ok := hists[k]; !ok {
				t.Fatalf("cycle %d: acknowledged batch %v lost its histogram after kill -9", cycle, k)
			}
			if batches[k] != crashSeries*crashPerSeries {
				t.Fatalf("cycle %d: acknowledged batch %v has %d of %d samples after kill -9", cycle, k, batches[k], crashSeries*crashPerSeries)
			}
		}
		for k, n := range batches {
			if n != crashSeries*crashPerSeries {
				t.Fatalf("cycle %d: batch %v is partly visible: %d of %d samples", cycle, k, n, crashSeries*crashPerSeries)
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
