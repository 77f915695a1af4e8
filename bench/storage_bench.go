package main

import (
	"flag"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/series"
)

var memprofile = flag.String("memprofile", "", "write a heap profile at the end of the head memory benchmark")

var chunkSamples = flag.Int("chunk-samples", 0, "storage.Options.ChunkSamples for the disk benchmark (0: the default)")

func benchCodec() {
	d := devops(60, 120*200, time.Now().UnixMilli())
	var chunks [][]series.Sample
	for _, s := range d.series {
		for i := 0; i+120 <= len(s.samples); i += 120 {
			chunks = append(chunks, s.samples[i:i+120])
		}
	}
	var encoded [][]byte
	for _, c := range chunks {
		a := chunk.NewAppender()
		for _, s := range c {
			a.Append(s.T, s.V)
		}
		encoded = append(encoded, append([]byte(nil), a.Bytes()...))
	}
	enc := testing.Benchmark(func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			a := chunk.NewAppender()
			for _, s := range chunks[i%len(chunks)] {
				a.Append(s.T, s.V)
			}
		}
	})
	ns := float64(enc.NsPerOp()) / 120
	record("codec", "encode, 120-sample chunks (devops mix)", ns, "ns/sample", "<= 33", boolp(ns <= 33.3))
	record("codec", "encode throughput, one core", 1e9/ns, "samples/s", ">= 30M", boolp(1e9/ns >= 30e6))
	opt := testing.Benchmark(func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			chunk.Optimize(encoded[i%len(encoded)])
		}
	})
	record("codec", "re-encode at seal (Optimize)", float64(opt.NsPerOp())/120, "ns/sample", "", nil)
	sealed := make([][]byte, len(encoded))
	for i, b := range encoded {
		sealed[i] = chunk.Optimize(b)
	}
	for _, c := range []struct {
		name   string
		chunks [][]byte
	}{{"head chunks (XOR)", encoded}, {"sealed chunks (as stored)", sealed}} {
		var it chunk.Iterator
		var sink float64
		dec := testing.Benchmark(func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				it.Reset(c.chunks[i%len(c.chunks)])
				for it.Next() {
					_, v := it.At()
					sink += v
				}
			}
		})
		_ = sink
		ns := float64(dec.NsPerOp()) / 120
		record("codec", "decode "+c.name+", devops mix", ns, "ns/sample", "<= 10", boolp(ns <= 10))
		record("codec", "decode "+c.name+", one core", 1e9/ns, "samples/s", ">= 100M", boolp(1e9/ns >= 100e6))
	}
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// loadAndMeasure writes a dataset through the storage API, checkpoints,
// flushes and compacts, closes, and returns stored samples and the bytes
// of the whole data directory (index, chunks, Pebble metadata and log).
func loadAndMeasure(d dataset, timeMajor bool) (stored int, bytes int64, err error) {
	dir, err := os.MkdirTemp("", "headroom-bench-disk-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	var maxT int64
	for _, s := range d.series {
		if n := len(s.samples); n > 0 && s.samples[n-1].T > maxT {
			maxT = s.samples[n-1].T
		}
	}
	now := time.UnixMilli(maxT).Add(time.Hour)
	db, err := storage.Open(dir, storage.Options{Retention: 20 * 365 * 24 * time.Hour, Now: func() time.Time { return now }, DisableBackground: true, ChunkSamples: *chunkSamples})
	if err != nil {
		return 0, 0, err
	}
	a := db.Appender()
	add := func(ls series.Labels, s series.Sample) error {
		if err := a.Append(ls, s.T, s.V); err != nil {
			return err
		}
		if a.Len() >= 1000 {
			return a.Commit()
		}
		return nil
	}
	if timeMajor {
		for k := 0; ; k++ {
			any := false
			for _, s := range d.series {
				if k < len(s.samples) {
					any = true
					if err := add(s.labels, s.samples[k]); err != nil {
						return 0, 0, err
					}
				}
			}
			if !any {
				break
			}
		}
	} else {
		for _, s := range d.series {
			for _, smp := range s.samples {
				if err := add(s.labels, smp); err != nil {
					return 0, 0, err
				}
			}
		}
	}
	if err := a.Commit(); err != nil {
		return 0, 0, err
	}
	if err := db.Checkpoint(); err != nil {
		return 0, 0, err
	}
	// Read everything back: the count of distinct stored samples (the
	// datasets repeat some timestamps) is the denominator.
	q, err := db.Querier(storage.MinTime, storage.MaxTime)
	if err != nil {
		return 0, 0, err
	}
	set, err := q.Select(series.MustMatcher(series.MatchRegexp, "__name__", ".+"))
	if err != nil {
		return 0, 0, err
	}
	for set.Next() {
		it := set.At().Iterator()
		for it.Next() {
			stored++
		}
		if it.Err() != nil {
			return 0, 0, it.Err()
		}
	}
	q.Close()
	if err := db.Flush(); err != nil {
		return 0, 0, err
	}
	if err := db.Compact(); err != nil {
		return 0, 0, err
	}
	if err := db.Close(); err != nil {
		return 0, 0, err
	}
	// Reopen and close once more, so that Pebble deletes the logs and
	// files that the flush and compaction made obsolete.
	if db, err = storage.Open(dir, storage.Options{Retention: 20 * 365 * 24 * time.Hour, Now: func() time.Time { return now }, DisableBackground: true}); err != nil {
		return 0, 0, err
	}
	if err := db.Close(); err != nil {
		return 0, 0, err
	}
	if os.Getenv("HEADROOM_BENCH_LS") != "" {
		filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if fi, err := e.Info(); err == nil && !e.IsDir() {
				fmt.Fprintln(os.Stderr, p, fi.Size())
			}
			return nil
		})
	}
	return stored, dirSize(dir), nil
}

func benchDisk(root string) {
	if _, err := os.Stat(root); err != nil {
		fmt.Fprintf(os.Stderr, "bench: datasets folder %s is absent (%v): skipping the real-data rows\n", root, err)
	} else {
		for _, load := range []func(string) (dataset, error){loadNAB, loadMS, loadASD} {
			d, err := load(root)
			if err != nil {
				fatal(err)
			}
			stored, bytes, err := loadAndMeasure(d, false)
			if err != nil {
				fatal(fmt.Errorf("%s: %w", d.name, err))
			}
			bps := float64(bytes) / float64(stored)
			note := ""
			if d.name == "asd-application-servers" {
				note = " (values quantised to 0.01)"
			}
			record("disk", fmt.Sprintf("%s, %d series, %d samples%s", d.name, len(d.series), stored, note), bps, "bytes/sample", "< 1.37", boolp(bps < 1.37))
		}
	}
	d := devops(1000, 8640, time.Now().UnixMilli())
	stored, bytes, err := loadAndMeasure(d, true)
	if err != nil {
		fatal(err)
	}
	bps := float64(bytes) / float64(stored)
	record("disk", fmt.Sprintf("generated devops, 1000 series x 1 day at 10 s (%d samples)", stored), bps, "bytes/sample", "<= 0.52", boolp(bps <= 0.52))
}

// benchAppend measures durable commits of 1,000 samples (one per series,
// the shape Prometheus sends) from 1 and 8 goroutines.
func benchAppend(dur time.Duration) {
	for _, writers := range []int{1, 8} {
		dir, err := os.MkdirTemp("", "headroom-bench-append-")
		if err != nil {
			fatal(err)
		}
		db, err := storage.Open(dir, storage.Options{})
		if err != nil {
			fatal(err)
		}
		var total atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		t0 := start.Add(-time.Hour).UnixMilli()
		var cpuStart = cpuTime()
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				lsets := make([]series.Labels, 1000)
				for i := range lsets {
					lsets[i] = series.FromStrings("__name__", "bench_metric", "writer", strconv.Itoa(w), "i", strconv.Itoa(i))
				}
				a := db.Appender()
				for k := 0; time.Since(start) < dur; k++ {
					ts := t0 + int64(k)*100
					for i, ls := range lsets {
						if err := a.Append(ls, ts, float64(k+i)); err != nil {
							fatal(err)
						}
					}
					if err := a.Commit(); err != nil {
						fatal(err)
					}
					total.Add(1000)
				}
			}(w)
		}
		wg.Wait()
		el := time.Since(start)
		cpu := cpuTime() - cpuStart
		rate := float64(total.Load()) / el.Seconds()
		record("append", fmt.Sprintf("durable commits of 1000 samples, %d writer(s)", writers), rate, "samples/s", ">= 1M", boolp(rate >= 1e6))
		record("append", fmt.Sprintf("CPU per sample, %d writer(s)", writers), float64(cpu.Nanoseconds())/float64(total.Load()), "ns/sample", "", nil)
		db.Close()
		os.RemoveAll(dir)
	}
}

func benchMemory(n int) {
	dir, err := os.MkdirTemp("", "headroom-bench-mem-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	runtime.GC()
	debug.FreeOSMemory()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	db, err := storage.Open(dir, storage.Options{DisableBackground: true})
	if err != nil {
		fatal(err)
	}
	a := db.Appender()
	t0 := time.Now().Add(-10 * time.Minute).UnixMilli()
	// Ten minutes of 10 s samples: a head chunk half full, as in steady state.
	for k := 0; k < 60; k++ {
		for i := 0; i < n; i++ {
			ls := series.FromStrings("__name__", "node_cpu_seconds_total", "instance", "host-"+strconv.Itoa(i/100)+":9100", "cpu", strconv.Itoa(i%100), "mode", "user")
			if err := a.Append(ls, t0+int64(k)*10_000, float64(k*i)); err != nil {
				fatal(err)
			}
			if a.Len() >= 1000 {
				if err := a.Commit(); err != nil {
					fatal(err)
				}
			}
		}
	}
	if err := a.Commit(); err != nil {
		fatal(err)
	}
	if err := db.Checkpoint(); err != nil {
		fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if *memprofile != "" {
		f, err := os.Create(*memprofile)
		if err != nil {
			fatal(err)
		}
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	per := float64(after.HeapInuse-before.HeapInuse) / float64(db.ActiveSeries())
	record("memory", fmt.Sprintf("head heap per active series (%d series, 60 samples each)", db.ActiveSeries()), per, "bytes/series", "< 1024", boolp(per < 1024))
	db.Close()
}

func benchReplay() {
	dir, err := os.MkdirTemp("", "headroom-bench-replay-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := storage.Open(dir, storage.Options{DisableBackground: true})
	if err != nil {
		fatal(err)
	}
	a := db.Appender()
	t0 := time.Now().Add(-3 * time.Hour).UnixMilli()
	const nSeries, perSeries = 2000, 1000
	for k := 0; k < perSeries; k++ {
		for i := 0; i < nSeries; i++ {
			ls := series.FromStrings("__name__", "replay_metric", "i", strconv.Itoa(i))
			a.Append(ls, t0+int64(k)*10_000, math.Floor(float64(k*i)/7))
			if a.Len() >= 1000 {
				if err := a.Commit(); err != nil {
					fatal(err)
				}
			}
		}
	}
	a.Commit()
	db.CloseNoCheckpoint()
	start := time.Now()
	db, err = storage.Open(dir, storage.Options{DisableBackground: true})
	if err != nil {
		fatal(err)
	}
	el := time.Since(start)
	n := db.Stats().ReplayedSamples.Load()
	if n != nSeries*perSeries {
		fatal(fmt.Errorf("replayed %d samples, want %d", n, nSeries*perSeries))
	}
	record("replay", fmt.Sprintf("log replay on open (%d samples)", n), el.Seconds()/(float64(n)/1e6), "s per million samples", "", nil)
	db.Close()
}
