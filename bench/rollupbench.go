package main

// The downsampling benchmark of issue 5: months of per-minute history
// written through the storage API, rolled up, and the same dashboard
// queries answered from raw samples and from the tiers.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"time"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/query/report"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

type rollupBenchClock struct{ now time.Time }

func (c *rollupBenchClock) Now() time.Time { return c.now }

// rollupSource is the engine's view of a DB with tiers.
type rollupSource struct{ db *storage.DB }

func (s rollupSource) Querier(mint, maxt int64) (query.Querier, error) {
	return s.db.Querier(max(mint, storage.MinTime), min(maxt, storage.MaxTime))
}

func (s rollupSource) Tiers() []query.Tier {
	var out []query.Tier
	for _, t := range s.db.Tiers() {
		out = append(out, query.Tier{Resolution: t.Resolution, Watermark: t.Watermark, Oldest: t.Oldest, Sketches: t.Sketches})
	}
	return out
}

func (s rollupSource) EachRollup(tier int, mint, maxt int64, cols uint, shard, shards int, ms []*series.Matcher, f func(series.Labels, *rollup.Columns) error) (query.TierRead, error) {
	rr, err := s.db.EachRollup(tier, mint, maxt, cols, shard, shards, ms, f)
	return query.TierRead{RawDays: rr.RawDays}, err
}

func (s rollupSource) EachHistRollup(tier int, mint, maxt int64, shard, shards int, ms []*series.Matcher, f func(series.Labels, []rollup.HistBucket) error) (query.TierRead, error) {
	rr, err := s.db.EachHistRollup(tier, mint, maxt, shard, shards, ms, f)
	return query.TierRead{RawDays: rr.RawDays}, err
}

// benchRollup writes hosts x cores CPU series of days at 60 s (raw
// retention 100 days), rolls them up, and times avg/max_over_time by host
// over the whole range at a 1-hour step from raw and from the tiers.
// keep, when set, is a directory the data set is written to once and
// reused by later runs (the same hosts, cores and days on the same UTC
// day), so that the queries can be profiled without writing it again;
// profile, when set, gets a CPU profile of the tier queries.
func benchRollup(hosts, cores, days int, queryRuns int, keep, profile string, workers int) {
	dir := keep
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "headroom-bench-rollup-"); err != nil {
			fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	_, statErr := os.Stat(filepath.Join(dir, "data", "ready"))
	reuse := keep != "" && statErr == nil
	end := time.Now().Truncate(24 * time.Hour)
	clock := &rollupBenchClock{end}
	if reuse {
		clock.now = end.Add(24 * time.Hour)
	}
	db, err := storage.Open(filepath.Join(dir, "data"), storage.Options{
		Retention: 100 * 24 * time.Hour, DisableBackground: true, Now: clock.Now, RollupWorkers: workers,
	})
	if err != nil {
		fatal(err)
	}
	defer db.Close()
	if !reuse {
		writeRollupData(db, clock, end, hosts, cores, days)
		if keep != "" {
			os.WriteFile(filepath.Join(dir, "data", "ready"), nil, 0o644)
		}
	}
	queryRollups(db, end, hosts, cores, days, queryRuns, profile)
}

func writeRollupData(db *storage.DB, clock *rollupBenchClock, end time.Time, hosts, cores, days int) {

	// CPU utilisation: a daily cycle, a slow trend and noise, in whole
	// hundredths (as agents report percentages).
	start := end.Add(-time.Duration(days) * 24 * time.Hour).UnixMilli()
	nSeries := hosts * cores
	lsets := make([]series.Labels, nSeries)
	level := make([]float64, nSeries)
	r := rand.New(rand.NewPCG(9, 9))
	for i := range lsets {
		lsets[i] = series.FromStrings("__name__", "cpu_utilization", "host", "host_"+strconv.Itoa(i/cores), "cpu", strconv.Itoa(i%cores))
		level[i] = 20 + r.Float64()*30
	}
	t0 := time.Now()
	var n int64
	for day := 0; day < days; day++ {
		app := db.Appender()
		for i, ls := range lsets {
			for m := 0; m < 1440; m++ {
				ts := start + int64(day)*86400_000 + int64(m)*60_000
				hour := float64(m) / 60
				v := level[i] + 15*math.Sin((hour-9)/24*2*math.Pi) + float64(day)*0.1 + r.NormFloat64()*3
				if err := app.Append(ls, ts, math.Round(math.Max(0, math.Min(100, v))*100)/100); err != nil {
					fatal(err)
				}
				n++
			}
			if app.Len() >= 50_000 {
				if err := app.Commit(); err != nil {
					fatal(err)
				}
			}
		}
		if err := app.Commit(); err != nil {
			fatal(err)
		}
		if err := db.Checkpoint(); err != nil {
			fatal(err)
		}
		if day%10 == 9 {
			fmt.Fprintf(os.Stderr, "  rollup: wrote %d of %d days (%.1fM samples, %v)\n", day+1, days, float64(n)/1e6, time.Since(t0).Round(time.Second))
		}
	}
	record("rollup", fmt.Sprintf("ingest %d series x %d days at 60 s (storage API)", nSeries, days), float64(n)/time.Since(t0).Seconds(), "samples/s", "", nil)
	if err := db.Flush(); err != nil {
		fatal(err)
	}

	clock.now = end.Add(24 * time.Hour) // every bucket of the data is closed
	t0 = time.Now()
	if err := db.RunRollups(); err != nil {
		fatal(err)
	}
	took := time.Since(t0)
	record("rollup", fmt.Sprintf("downsampling raw -> 5m -> 1h -> 1d (%d workers): time", db.RollupWorkers()), took.Seconds(), "s", "", nil)
	record("rollup", "downsampling: raw samples per second", float64(n)/took.Seconds(), "samples/s", "", nil)
	if err := db.Compact(); err != nil {
		fatal(err)
	}
	raw, tiers, err := db.TierDiskBytes()
	if err != nil {
		fatal(err)
	}
	record("rollup", "on disk: raw chunks", float64(raw)/(1<<20), "MiB", "", nil)
	record("rollup", "on disk: raw bytes per sample", float64(raw)/float64(n), "B", "", nil)
	for i, t := range db.Tiers() {
		record("rollup", "on disk: "+query.TierName(t.Resolution)+" tier", float64(tiers[i])/(1<<20), "MiB", "", nil)
	}

}

func queryRollups(db *storage.DB, end time.Time, hosts, cores, days, queryRuns int, profile string) {
	src := rollupSource{db}
	eng := &query.Engine{MaxSamples: 1 << 40}
	var err error
	qStart, qEnd := end.Add(-time.Duration(days)*24*time.Hour).Add(time.Hour).UnixMilli(), end.UnixMilli()
	queries := []string{`avg by (host) (avg_over_time(cpu_utilization[1h]))`, `max by (host) (max_over_time(cpu_utilization[1h]))`}
	for _, q := range queries {
		// The median latency, and the mean CPU time of a run (of the
		// whole process, GC included: steadier than the latency on a
		// noisy machine).
		timeIt := func(tier string) (time.Duration, time.Duration, *query.Result) {
			var lat []time.Duration
			var res *query.Result
			cpu0 := cpuTime()
			for i := 0; i < queryRuns; i++ {
				t := time.Now()
				res, err = eng.Range(query.WithTier(context.Background(), tier), src, q, qStart, qEnd, 3600_000)
				if err != nil {
					fatal(fmt.Errorf("%s (%s): %w", q, tier, err))
				}
				lat = append(lat, time.Since(t))
			}
			cpu := (cpuTime() - cpu0) / time.Duration(queryRuns)
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			return lat[len(lat)/2], cpu, res
		}
		rawLat, rawCPU, rawRes := timeIt("raw")
		if profile != "" {
			// One profile of each query's tier runs: the first query's in
			// the file named, the second's with ".2" appended.
			name := profile
			if q != queries[0] {
				name += ".2"
			}
			f, err := os.Create(name)
			if err != nil {
				fatal(err)
			}
			pprof.StartCPUProfile(f)
		}
		tierLat, tierCPU, tierRes := timeIt("auto")
		if profile != "" {
			pprof.StopCPUProfile()
		}
		if len(rawRes.Series) != hosts || len(tierRes.Series) != hosts {
			fatal(fmt.Errorf("%s: %d and %d series, want %d", q, len(rawRes.Series), len(tierRes.Series), hosts))
		}
		speedup := rawLat.Seconds() / tierLat.Seconds()
		name := fmt.Sprintf("%s over %d days, 1 h step", q, days)
		record("rollup", name+": raw", float64(rawLat.Microseconds())/1000, "ms", "", nil)
		record("rollup", name+": from "+fmt.Sprint(tierRes.Tiers), float64(tierLat.Microseconds())/1000, "ms", "", nil)
		record("rollup", name+": speed-up", speedup, "x", ">= 50x", boolp(speedup >= 50))
		record("rollup", name+": CPU time, raw / tier", rawCPU.Seconds()/tierCPU.Seconds(), "x", "", nil)
		record("rollup", name+": CPU time from "+fmt.Sprint(tierRes.Tiers), float64(tierCPU.Microseconds())/1000, "ms", "", nil)
	}
	// The capacity report over the whole range: by host (percentiles of
	// the hourly points), and of every series (percentiles of the raw
	// samples, from the sketches).
	for _, c := range []struct {
		q      string
		groups int
	}{{`avg by (host) (avg_over_time(cpu_utilization[1h]))`, hosts}, {`cpu_utilization`, hosts * cores}} {
		var lat []time.Duration
		var rep *report.Report
		for i := 0; i < queryRuns; i++ {
			// The last run of the report of every series, profiled with
			// -rollup-profile (the name with .report appended).
			prof := profile != "" && i == queryRuns-1 && c.groups == hosts*cores
			if prof {
				f, err := os.Create(profile + ".report")
				if err != nil {
					fatal(err)
				}
				pprof.StartCPUProfile(f)
			}
			t := time.Now()
			rep, err = report.Run(context.Background(), eng, src, report.Options{Query: c.q,
				Start: time.UnixMilli(qStart), End: time.UnixMilli(qEnd), Threshold: 80, HasThreshold: true})
			if err != nil {
				fatal(err)
			}
			lat = append(lat, time.Since(t))
			if prof {
				pprof.StopCPUProfile()
			}
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		if len(rep.Groups) != c.groups {
			fatal(fmt.Errorf("report %s: %d groups, want %d", c.q, len(rep.Groups), c.groups))
		}
		secs := lat[len(lat)/2].Seconds()
		// Issue 17: a report of 1,000 series, forecasts included, in
		// under a second.
		limit, target := 2.0, "< 2 s"
		if c.groups >= 1000 {
			limit, target = 1, "< 1 s"
		}
		record("rollup", fmt.Sprintf("capacity report of %s over %d days, %d groups, percentiles of %s (from %v)", c.q, days, c.groups, rep.PercentileOf, rep.Tiers),
			secs*1000, "ms", target, boolp(secs < limit))
	}
}
