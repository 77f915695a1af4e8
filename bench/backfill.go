package main

// The backfill benchmarks of issue 13, through `headroom write` as a user
// would run it (the CSV generated into its standard input, from this
// process), to a real server pinned to one core, with the default
// tiers:
//
//   - history: 90 days of 1,000 series at 60 s (129.6 M samples), in
//     time order, the server's raw retention covering them (100 days);
//   - shuffled: 1.5 years of 1,500 series at irregular intervals with
//     millisecond timestamps, rows in random order, the default raw
//     retention (15 days: most samples go to the tiers only).
//
// Each measures samples/s, the server's peak RSS and CPU until its
// downsampler is idle, and ends with `headroom check --tiers`.

import (
	"bufio"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/headroomdb/headroom/storage"
)

// backfillRow is one CSV row: series index and sample.
type backfillRow struct {
	s int
	t int64
	v float64
}

// runBackfill starts a server on a fresh directory with extra flags,
// pipes rows (produced by gen into the channel) as CSV to `headroom
// write`, waits for the downsampler, stops the server and checks the
// tiers.
func runBackfill(bin, name string, extra []string, hosts, metrics int, profile string, gen func(chan<- backfillRow)) {
	dir, err := os.MkdirTemp("", "headroom-bench-backfill-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "data")
	srv, err := startPinnedServer(bin, data, extra...)
	if err != nil {
		fatal(fmt.Errorf("%s: %w", name, err))
	}
	defer func() {
		if srv.cmd.ProcessState == nil {
			srv.cmd.Process.Kill()
			srv.cmd.Wait()
		}
	}()
	w := exec.Command("taskset", "-c", "0", bin, "write", "--server", srv.grpcAddr, "--quiet", "--batch-samples", "10000")
	in, err := w.StdinPipe()
	if err != nil {
		fatal(err)
	}
	var out strings.Builder
	w.Stdout, w.Stderr = &out, &out
	cpu0 := srv.cpu()
	t0 := time.Now()
	if err := w.Start(); err != nil {
		fatal(err)
	}
	rows := make(chan backfillRow, 4096)
	go gen(rows)
	if profile != "" {
		go func() {
			time.Sleep(30 * time.Second)
			if err := fetchProfile(srv.httpURL, time.Minute, profile); err != nil {
				fmt.Fprintln(os.Stderr, "  backfill: profile:", err)
			}
			fetch(srv.httpURL+"/debug/pprof/heap", strings.TrimSuffix(profile, ".pprof")+".heap.pprof")
		}()
	}
	bw := bufio.NewWriterSize(in, 1<<20)
	bw.WriteString("timestamp,__name__,host,value\n")
	var n int64
	var line []byte
	for r := range rows {
		line = strconv.AppendInt(line[:0], r.t, 10)
		line = append(line, ",backfill_"...)
		line = strconv.AppendInt(line, int64(r.s%metrics), 10)
		line = append(line, ",host_"...)
		line = strconv.AppendInt(line, int64(r.s/metrics), 10)
		line = append(line, ',')
		line = strconv.AppendFloat(line, r.v, 'f', -1, 64)
		line = append(line, '\n')
		bw.Write(line)
		n++
	}
	bw.Flush()
	in.Close()
	if err := w.Wait(); err != nil {
		fatal(fmt.Errorf("%s: headroom write: %v\n%s", name, err, out.String()))
	}
	ingest := time.Since(t0)
	cpuIngest := srv.cpu() - cpu0
	fmt.Fprintf(os.Stderr, "  %s: %s", name, out.String())
	if err := waitRollupIdle(srv, 2*time.Hour); err != nil {
		fatal(fmt.Errorf("%s: %w", name, err))
	}
	toIdle := time.Since(t0)
	cpuAll := srv.cpu() - cpu0
	rss := procStatus(srv.cmd.Process.Pid, "VmHWM")
	srv.cmd.Process.Signal(os.Interrupt)
	srv.cmd.Wait()
	chk, err := exec.Command(bin, "check", "--data-dir", data, "--tiers").CombinedOutput()
	differ := -1.0
	if m := regexp.MustCompile(`(\d+) buckets compared, (\d+) differ`).FindSubmatch(chk); m != nil {
		differ, _ = strconv.ParseFloat(string(m[2]), 64)
		fmt.Fprintf(os.Stderr, "  %s: check --tiers: %s buckets compared, %s differ\n", name, m[1], m[2])
	} else {
		fmt.Fprintf(os.Stderr, "  %s: check --tiers: %v\n%s\n", name, err, chk)
	}
	f := float64(n)
	record("backfill", name+": samples/s", f/ingest.Seconds(), "samples/s", "", nil)
	record("backfill", name+": server CPU per sample, ingest", cpuIngest.Seconds()/f*1e6, "us", "", nil)
	record("backfill", name+": server CPU per sample, until tiers are idle", cpuAll.Seconds()/f*1e6, "us", "", nil)
	record("backfill", name+": time until the downsampler is idle", toIdle.Seconds(), "s", "", nil)
	record("backfill", name+": peak RSS", float64(rss)/(1<<20), "MiB", "<= 300", boolp(rss <= 300<<20))
	record("backfill", name+": data directory at rest", float64(dirSize(data))/f, "B/sample", "", nil)
	if db, err := storage.Open(data, storage.Options{DisableBackground: true, Retention: 3650 * 24 * time.Hour}); err == nil {
		raw, tiers, err := db.TierDiskBytes()
		db.Close()
		if err == nil {
			record("backfill", name+": raw chunks at rest", float64(raw)/f, "B/sample", "", nil)
			for i, t := range tiers {
				record("backfill", fmt.Sprintf("%s: tier %d at rest", name, i), float64(t)/f, "B/sample", "", nil)
			}
			if raw > 0 && len(tiers) > 0 {
				ratio := float64(tiers[0]) / float64(raw)
				record("backfill", name+": 5m tier / raw", ratio, "ratio", "<= 0.5", boolp(ratio <= 0.5))
			}
		}
	}
	record("backfill", name+": check --tiers, buckets that differ", differ, "buckets", "0", boolp(differ == 0))
}

// benchBackfill runs both backfills.
func benchBackfill(bin, only, profile string) {
	bin = buildServer(bin)
	now := time.Now().Truncate(time.Minute).UnixMilli()
	// 90 days of 1,000 series at 60 s, in time order.
	if only == "" || only == "history" {
		runBackfill(bin, "90 days x 1,000 series at 60 s, in order", []string{"--retention", "100d"}, 100, 10, profile, func(out chan<- backfillRow) {
			r := rand.New(rand.NewPCG(90, 1))
			vals := make([]float64, 1000)
			for i := range vals {
				vals[i] = float64(r.IntN(100))
			}
			for t := now - 90*86400_000; t < now; t += 60_000 {
				for s := range vals {
					vals[s] = math.Round(100*math.Max(0, math.Min(100, vals[s]+float64(r.IntN(101)-50)/100))) / 100
					out <- backfillRow{s, t, vals[s]}
				}
			}
			close(out)
		})
	}
	if only != "" && only != "shuffled" {
		return
	}
	// 1.5 years of 1,500 series, irregular, shuffled.
	runBackfill(bin, "548 days x 1,500 series, irregular, shuffled", nil, 150, 10, profile, func(out chan<- backfillRow) {
		r := rand.New(rand.NewPCG(548, 2))
		var rows []backfillRow
		for s := 0; s < 1500; s++ {
			v := float64(r.IntN(1000))
			for t := now - 548*86400_000 + r.Int64N(3600_000); t < now; t += 60_000 + r.Int64N(4*3600_000) {
				v = math.Max(0, v+float64(r.IntN(21)-10))
				rows = append(rows, backfillRow{s, t, v})
			}
		}
		r.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
		for _, row := range rows {
			out <- row
		}
		close(out)
	})
}
