package storage

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage/series"
)

// The downsampler's crash test: the rollups of a data set are run in a
// child process (this test binary, re-executed) killed with SIGKILL at a
// random moment, several times; the last run, to completion, must give
// the same buckets as the definition from raw samples: no bucket lost,
// doubled or half-written, whatever the moment of the kill.

const rollupCrashN, rollupCrashDays = 12, 12

type rollupCrashSeries struct {
	ls series.Labels
	ss []series.Sample
}

func rollupCrashData(end int64) map[string]rollupCrashSeries {
	r := rand.New(rand.NewPCG(42, 42))
	out := map[string]rollupCrashSeries{}
	for s := 0; s < rollupCrashN; s++ {
		ls := series.FromStrings("__name__", "m", "s", strconv.Itoa(s))
		var ss []series.Sample
		v := 0.0
		for ts := end - rollupCrashDays*86400_000 + int64(s)*1000; ts < end; ts += 30_000 {
			v += float64(r.IntN(10))
			if r.IntN(2000) == 0 {
				v = 0
			}
			ss = append(ss, series.Sample{T: ts, V: v})
		}
		out[ls.String()] = rollupCrashSeries{ls, ss}
	}
	return out
}

// rollupCrashOptions: the writer's clock a day after the data, the
// downsampler's (child) an hour later, when every day written is quiet.
func rollupCrashOptions(end int64, child bool) Options {
	c := &clock{time.UnixMilli(end).Add(24 * time.Hour)}
	if child {
		c.now = c.now.Add(time.Hour)
	}
	return Options{DisableBackground: true, Retention: 60 * 24 * time.Hour, Now: c.Now, RollupWorkers: 3}
}

func TestRollupCrashChild(t *testing.T) {
	dir := os.Getenv("HEADROOM_ROLLUP_CRASH_DIR")
	if dir == "" {
		t.Skip("only runs as the child of TestRollupKill9")
	}
	end, _ := strconv.ParseInt(os.Getenv("HEADROOM_ROLLUP_CRASH_END"), 10, 64)
	db, err := Open(dir, rollupCrashOptions(end, true))
	if err != nil {
		fmt.Println("OPEN-ERROR", err)
		os.Exit(3)
	}
	fmt.Println("RUNNING")
	if err := db.RunRollups(); err != nil {
		fmt.Println("ROLLUP-ERROR", err)
		os.Exit(3)
	}
	fmt.Println("DONE")
	os.Exit(0) // no Close: as abrupt as the kill, when the kill comes late
}

func TestRollupKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test starts child processes; skipped in -short mode")
	}
	dir := t.TempDir()
	end := time.Now().Add(-48 * time.Hour).Truncate(24 * time.Hour).UnixMilli()
	data := rollupCrashData(end)
	db, err := Open(dir, rollupCrashOptions(end, false))
	if err != nil {
		t.Fatal(err)
	}
	for _, cs := range data {
		for i := 0; i < len(cs.ss); i += 5000 {
			mustAppend(t, db, cs.ls, cs.ss[i:min(i+5000, len(cs.ss))]...)
		}
	}
	// Native histograms too, a series of them a minute: their blocks go
	// in the downsampler's batches with the floats'.
	hr := rand.New(rand.NewPCG(43, 43))
	hists := func(db *DB, n int, at func(i int) int64) {
		for s := 0; s < 3; s++ {
			ls := series.FromStrings("__name__", "latency_seconds", "s", strconv.Itoa(s))
			g := newHistGen(hr)
			app := db.Appender()
			for i := 0; i < n; i++ {
				if err := app.AppendHistogram(ls, at(i)+int64(s)*1000, g.next()); err != nil {
					t.Fatal(err)
				}
			}
			if err := app.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	hists(db, rollupCrashDays*1440-1, func(i int) int64 { return end - rollupCrashDays*86400_000 + int64(i+1)*60_000 })
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	r := rand.New(rand.NewPCG(testSeed(t), 3))
	killed := 0
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for cycle := 0; cycle < 6; cycle++ {
		if cycle > 0 {
			// Late samples into buckets every tier has rolled up: the
			// next run rolls them up again, and is killed doing it.
			db, err := Open(dir, rollupCrashOptions(end, false))
			if err != nil {
				t.Fatalf("cycle %d: reopen after kill -9: %v", cycle, err)
			}
			for i := 0; i < 40; i++ {
				k := keys[r.IntN(len(keys))]
				cs := data[k]
				ts := end - r.Int64N(rollupCrashDays*86400_000)
				j, found := slices.BinarySearchFunc(cs.ss, ts, func(s series.Sample, t int64) int { return int(s.T - t) })
				if found {
					continue
				}
				late := series.Sample{T: ts, V: float64(r.IntN(1000))}
				cs.ss = slices.Insert(cs.ss, j, late)
				data[k] = cs
				mustAppend(t, db, cs.ls, late)
			}
			// Late histograms at odd seconds, between the minute's.
			hists(db, 10, func(int) int64 { return end - (1+r.Int64N(rollupCrashDays*1440-1))*60_000 - 1 - r.Int64N(50)*1000 })
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestRollupCrashChild$", "-test.v")
		cmd.Env = append(os.Environ(), "HEADROOM_ROLLUP_CRASH_DIR="+dir, "HEADROOM_ROLLUP_CRASH_END="+strconv.FormatInt(end, 10))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		done := false
		for sc.Scan() {
			l := sc.Text()
			if strings.Contains(l, "ERROR") {
				t.Fatalf("child: %s", l)
			}
			if l == "RUNNING" {
				time.Sleep(time.Duration(r.IntN(60)) * time.Millisecond)
				cmd.Process.Signal(syscall.SIGKILL)
			}
			if l == "DONE" {
				done = true
			}
		}
		cmd.Wait()
		if !done {
			killed++
		}
	}
	t.Logf("%d of 6 runs killed in the middle", killed)
	if killed == 0 {
		t.Fatal("no run was killed in the middle: the test proves nothing")
	}

	db, err = Open(dir, rollupCrashOptions(end, true))
	if err != nil {
		t.Fatalf("reopen after kill -9: %v", err)
	}
	defer db.Close()
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	if bl := db.RollupPending(); bl.Due+bl.Waiting+bl.Open != 0 {
		t.Fatalf("after the last run: %+v", bl)
	}
	// What the runs stored, with nothing computed on the fly.
	for ti, tier := range db.opts.Tiers {
		stored := storedBlocks(t, db, ti)
		if len(stored) != len(data) {
			t.Fatalf("%v tier: %d series, want %d", tier.Resolution, len(stored), len(data))
		}
		for k, cs := range data {
			sameBuckets(t, fmt.Sprintf("%v tier of %s", tier.Resolution, k), stored[k], canonical(cs.ss, db.tiers)[ti], nil, db.tiers[ti].sketches)
		}
	}
	if n := checkHistTiers(t, db, "after the kill -9 runs"); n != 0 {
		t.Fatalf("%d histogram series-days not rolled up after the last run", n)
	}
	rep, err := db.CheckTiers(nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Differing != 0 || rep.SeriesDays == 0 {
		t.Fatalf("CheckTiers: %+v", rep)
	}
}
