// Command bench is Headroom's benchmark harness (`make bench`). It measures
// what a time-series database is judged on and prints a table: codec speed,
// bytes per sample on disk for the shared real datasets and a generated
// devops workload, durable append throughput, head memory per series and
// log replay speed. Figures, with the machine they came from, are recorded
// in bench/RESULTS.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"
)

type result struct {
	section, name string
	value         float64
	unit, target  string
	met           string // "yes", "no" or "" when there is no target
}

var results []result

func record(section, name string, value float64, unit, target string, met *bool) {
	m := ""
	if met != nil {
		m = "no"
		if *met {
			m = "yes"
		}
	}
	results = append(results, result{section, name, value, unit, target, m})
	fmt.Fprintf(os.Stderr, "  %-28s %-44s %14.3f %s\n", section, name, value, unit)
}

func boolp(b bool) *bool { return &b }

func main() {
	datasets := flag.String("datasets", "../shared/datasets", "folder of the shared real datasets")
	only := flag.String("only", "", "comma-separated sections to run (codec,disk,append,memory,replay,ingest,query,rollup,fleet,backfill,histograms,forecast,console,cluster); empty: all")
	fleetHosts := flag.Int("fleet-hosts", 100, "hosts (of 101 metrics each) in the fleet benchmark")
	fleetArgs := flag.String("fleet-args", "", "more flags for the fleet benchmark's server, space-separated (--rollup-tiers off)")
	backfillOnly := flag.String("backfill-run", "", "run one backfill: history or shuffled")
	backfillProfile := flag.String("backfill-profile", "", "file for a CPU profile of a backfill's server (a minute from 30 s in)")
	fleetProfile := flag.String("fleet-profile", "", "file for a CPU profile of the fleet benchmark's server (a minute of ingest; its heap then: .heap.pprof)")
	rollupSeries := flag.Int("rollup-hosts", 100, "hosts (of 10 CPUs each) in the downsampling benchmark")
	rollupDays := flag.Int("rollup-days", 90, "days of per-minute history in the downsampling benchmark")
	rollupKeep := flag.String("rollup-keep", "", "directory to write the downsampling data set to once and reuse on later runs (same UTC day)")
	rollupWorkers := flag.Int("rollup-workers", 0, "goroutines of the downsampling run (0: storage's default, half the CPUs)")
	rollupProfile := flag.String("rollup-profile", "", "file for a CPU profile of the first tier query of the downsampling benchmark (the second's: the name with .2 appended)")
	rollupRuns := flag.Int("rollup-runs", 3, "runs of each query of the downsampling benchmark (the median is reported)")
	queryTime := flag.Duration("query-time", 3*time.Second, "how long each query shape is repeated (at least 5 times)")
	ingestTime := flag.Duration("ingest-time", 4*time.Second, "how long each ingest run (protocol x shape x clients) lasts")
	serverBin := flag.String("server-bin", "", "headroom binary for the ingest runs (default: go build ./cmd/headroom)")
	ingestOnly := flag.String("ingest-run", "", "run one ingest combination, protocol/shape/clients (grpc/scrape/4)")
	flag.IntVar(&histBuckets, "ingest-hist-buckets", histBuckets, "buckets of the histograms of the remote_write_2_hist ingest runs")
	ingestProfiles := flag.String("ingest-profiles", "", "folder to save a server CPU profile of each ingest run in")
	seconds := flag.Duration("append-time", 5*time.Second, "how long each append throughput run lasts")
	headSeries := flag.Int("head-series", 100_000, "series in the head memory benchmark")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s != "" {
			want[s] = true
		}
	}
	run := func(s string) bool { return len(want) == 0 || want[s] }
	fmt.Fprintf(os.Stderr, "headroom bench on %s/%s, %d CPUs, %s\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	if run("codec") {
		benchCodec()
	}
	if run("disk") {
		benchDisk(*datasets)
	}
	if run("append") {
		benchAppend(*seconds)
	}
	if run("memory") {
		benchMemory(*headSeries)
	}
	if run("replay") {
		benchReplay()
	}
	if run("ingest") {
		benchIngest(*serverBin, *ingestTime, *ingestOnly, *ingestProfiles)
	}
	if run("query") {
		benchQuery(*serverBin, *queryTime)
	}
	if run("fleet") {
		benchFleet(*serverBin, *fleetHosts, strings.Fields(*fleetArgs), *fleetProfile)
	}
	if run("backfill") {
		benchBackfill(*serverBin, *backfillOnly, *backfillProfile)
	}
	if run("histograms") {
		benchHistograms()
	}
	if run("forecast") {
		benchForecast(*datasets)
	}
	if run("console") {
		benchConsole(*serverBin)
	}
	if run("cluster") {
		benchCluster(*serverBin)
	}
	if run("rollup") {
		benchRollup(*rollupSeries, 10, *rollupDays, max(*rollupRuns, 1), *rollupKeep, *rollupProfile, *rollupWorkers)
	}
	printTable()
}

func printTable() {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "section\tbenchmark\tvalue\tunit\ttarget\tmet\t")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t\n", r.section, r.name, fmtValue(r.value), r.unit, r.target, r.met)
	}
	w.Flush()
}

func fmtValue(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
