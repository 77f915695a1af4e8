package main

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

func runDemo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "./data", "data directory (created if missing)")
	hosts := fs.Int("hosts", 20, "number of synthetic hosts")
	metrics := fs.Int("metrics", 5, "metrics per host")
	hours := fs.Int("hours", 24, "hours of history to write, ending now, at a 10 s interval")
	retention := fs.Duration("retention", 15*24*time.Hour, "how long raw samples are kept")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: headroom demo [flags]\n\nWrites synthetic host metrics through the storage engine (durable commits,\nbatches of 1,000 samples), queries them back and prints the figures.\nRunning it again on the same directory overwrites the same samples.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *hosts < 1 || *metrics < 1 || *hours < 1 {
		return fmt.Errorf("--hosts, --metrics and --hours must be at least 1")
	}
	start := time.Now()
	db, err := storage.Open(*dataDir, storage.Options{Retention: *retention})
	if err != nil {
		return err
	}
	defer db.Close()
	fmt.Printf("opened %s in %v (replayed %d samples)\n", *dataDir, time.Since(start).Round(time.Millisecond), db.Stats().ReplayedSamples.Load())

	end := time.Now().Truncate(10 * time.Second).UnixMilli()
	first := end - int64(*hours)*3600_000
	steps := int((end - first) / 10_000)
	total := steps * *hosts * *metrics
	lsets := make([]series.Labels, *hosts**metrics)
	vals := make([]float64, len(lsets))
	r := rand.New(rand.NewPCG(1, 2))
	for h := 0; h < *hosts; h++ {
		for m := 0; m < *metrics; m++ {
			lsets[h**metrics+m] = series.FromStrings("__name__", "demo_cpu_usage_percent", "host", "host-"+strconv.Itoa(h), "cpu", strconv.Itoa(m))
		}
	}
	a := db.Appender()
	written := 0
	wstart := time.Now()
	lastPrint := time.Now()
	for i := 0; i < steps; i++ {
		ts := first + int64(i)*10_000
		for j, ls := range lsets {
			vals[j] = math.Max(0, math.Min(100, vals[j]+float64(r.IntN(5)-2)))
			if err := a.Append(ls, ts, vals[j]); err != nil {
				return err
			}
			if a.Len() == 1000 {
				if err := a.Commit(); err != nil {
					return err
				}
			}
			written++
		}
		if time.Since(lastPrint) > 500*time.Millisecond {
			fmt.Fprintf(os.Stderr, "\rwriting: %d/%d samples (%.0f%%)", written, total, 100*float64(written)/float64(total))
			lastPrint = time.Now()
		}
	}
	if err := a.Commit(); err != nil {
		return err
	}
	dur := time.Since(wstart)
	fmt.Fprintf(os.Stderr, "\r%60s\r", "")
	fmt.Printf("wrote %d samples of %d series in %v (%.0f samples/s, every commit fsynced)\n", written, len(lsets), dur.Round(time.Millisecond), float64(written)/dur.Seconds())

	qstart := time.Now()
	q, err := db.Querier(first, end)
	if err != nil {
		return err
	}
	defer q.Close()
	set, err := q.Select(series.MustMatcher(series.MatchEqual, "__name__", "demo_cpu_usage_percent"),
		series.MustMatcher(series.MatchRegexp, "host", "host-(0|1)"))
	if err != nil {
		return err
	}
	nSeries, nSamples, peak := 0, 0, 0.0
	for set.Next() {
		nSeries++
		it := set.At().Iterator()
		for it.Next() {
			_, v := it.At()
			peak = math.Max(peak, v)
			nSamples++
		}
		if it.Err() != nil {
			return it.Err()
		}
	}
	if set.Err() != nil {
		return set.Err()
	}
	fmt.Printf("query {__name__=\"demo_cpu_usage_percent\", host=~\"host-(0|1)\"}: %d series, %d samples, peak %.0f%%, in %v\n",
		nSeries, nSamples, peak, time.Since(qstart).Round(time.Microsecond))
	hostsSeen, err := q.LabelValues("host")
	if err != nil {
		return err
	}
	fmt.Printf("label values of host: %d\n", len(hostsSeen))
	// Store the head and compact, so that the size shown is what the data
	// costs at rest rather than Pebble's log of the writes.
	cstart := time.Now()
	if err := db.Checkpoint(); err != nil {
		return err
	}
	if err := db.Flush(); err != nil {
		return err
	}
	if err := db.Compact(); err != nil {
		return err
	}
	tables := db.TableBytes()
	fmt.Printf("checkpointed and compacted in %v: %.2f MiB of tables (%.2f bytes per sample written); %.2f MiB with Pebble's log and files awaiting deletion\n",
		time.Since(cstart).Round(time.Millisecond), float64(tables)/(1<<20), float64(tables)/float64(written), float64(db.DiskUsage())/(1<<20))
	return nil
}
