package main

// The query benchmark: a devops day (100 hosts x 10 CPU metrics at 10 s,
// 8.64 M samples) written through the engine and checkpointed, a real
// `headroom serve` on that directory, and the dashboard query shapes of
// issue 4 sent over HTTP; plus the raw scan speed of the engine in
// process.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

var cpuMetrics = []string{"usage_user", "usage_system", "usage_idle", "usage_nice", "usage_iowait", "usage_irq", "usage_softirq", "usage_steal", "usage_guest", "usage_guest_nice"}

// writeDevopsDay writes the data set ending at end and closes the
// directory (so that the server opens what a restart would find).
func writeDevopsDay(dir string, end time.Time) (int, error) {
	db, err := storage.Open(dir, storage.Options{Retention: 30 * 24 * time.Hour})
	if err != nil {
		return 0, err
	}
	var lsets []series.Labels
	for h := 0; h < 100; h++ {
		for _, m := range cpuMetrics {
			lsets = append(lsets, series.FromStrings("__name__", "cpu_"+m, "hostname", "host_"+strconv.Itoa(h),
				"region", []string{"eu-west-1", "us-east-1", "ap-south-1"}[h%3], "service", strconv.Itoa(h%20)))
		}
	}
	vals := make([]float64, len(lsets))
	r := rand.New(rand.NewPCG(7, 8))
	for i := range vals {
		vals[i] = float64(r.IntN(100))
	}
	first := end.Add(-24 * time.Hour).UnixMilli()
	app := db.Appender()
	n := 0
	for t := first; t <= end.UnixMilli(); t += 10_000 {
		for i, ls := range lsets {
			vals[i] = math.Max(0, math.Min(100, vals[i]+float64(r.IntN(5)-2)))
			if err := app.Append(ls, t, vals[i]); err != nil {
				return n, err
			}
			n++
		}
		if app.Len() >= 50_000 {
			if err := app.Commit(); err != nil {
				return n, err
			}
		}
	}
	if err := app.Commit(); err != nil {
		return n, err
	}
	// A day-old data set has been compacted by then; without this, the
	// compactions the writes left pending run during the measurements.
	if err := db.Checkpoint(); err != nil {
		return n, err
	}
	if err := db.Flush(); err != nil {
		return n, err
	}
	if err := db.Compact(); err != nil {
		return n, err
	}
	return n, db.Close()
}

type queryShape struct {
	name    string
	query   string
	rng     time.Duration // 0: an instant query
	step    time.Duration
	targetM float64 // target median in ms, 0: none
}

var queryShapes = []queryShape{
	{"1 metric, 1 host, 1 h, 1 min step (max_over_time)", `max_over_time(cpu_usage_user{hostname="host_7"}[1m])`, time.Hour, time.Minute, 0.45},
	// Several metrics through one *_over_time would lose their names and
	// collide (Prometheus refuses that): label_replace keeps the name in a
	// label, a 10 s subquery feeds the window, as a Prometheus user writes it.
	{"5 metrics, 1 host, 12 h, 1 h step", `max_over_time(label_replace({__name__=~"cpu_usage_(user|system|idle|nice|iowait)",hostname="host_3"}, "metric", "$1", "__name__", "(.+)")[1h:10s])`, 12 * time.Hour, time.Hour, 0},
	{"max of 8 metrics x 8 hosts, 12 h, 1 h step", `max_over_time(label_replace({__name__=~"cpu_usage_(user|system|idle|nice|iowait|irq|softirq|steal)",hostname=~"host_[1-8]"}, "metric", "$1", "__name__", "(.+)")[1h:10s])`, 12 * time.Hour, time.Hour, 0},
	{"avg of 10 metrics by host, all hosts, 12 h, 1 h step", `avg by (hostname) (avg_over_time(label_replace({__name__=~"cpu_usage_.+"}, "metric", "$1", "__name__", "(.+)")[1h:10s]))`, 12 * time.Hour, time.Hour, 50},
	// Issue 15's shape: the maximum of each metric, named. Delayed name
	// removal keeps __name__ through max_over_time for label_replace to
	// keep it (without label_replace the names go at the end and the ten
	// results clash, as in Prometheus).
	{"max by __name__ of 10 metrics x 8 hosts, 12 h, 1 h step", `max by (__name__) (label_replace(max_over_time({__name__=~"cpu_usage_.+",hostname=~"host_[1-8]"}[1h]), "__name__", "$1", "__name__", "(.+)"))`, 12 * time.Hour, time.Hour, 0},
	{"hosts with CPU > 90% in 12 h", `max by (hostname) (max_over_time(cpu_usage_user[12h])) > 90`, 0, 0, 0},
	{"last point of every series", `{__name__=~"cpu_usage_.+"}`, 0, 0, 0},
}

func benchQuery(bin string, dur time.Duration) {
	dir, err := os.MkdirTemp("", "headroom-bench-query-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "data")
	end := time.Now().Truncate(time.Minute)
	t0 := time.Now()
	n, err := writeDevopsDay(data, end)
	if err != nil {
		fatal(err)
	}
	fmt.Fprintf(os.Stderr, "  query: wrote %d samples in %v\n", n, time.Since(t0).Round(time.Millisecond))
	scanSpeed(data, end, dur)

	bin = buildServer(bin)
	srv, err := startServerProcDir(bin, data)
	if err != nil {
		fatal(err)
	}
	defer srv.stop()
	for _, q := range queryShapes {
		v := url.Values{"query": {q.query}}
		path := "/api/v1/query"
		if q.rng > 0 {
			path = "/api/v1/query_range"
			v.Set("start", strconv.FormatInt(end.Add(-q.rng).Unix(), 10))
			v.Set("end", strconv.FormatInt(end.Unix(), 10))
			v.Set("step", strconv.Itoa(int(q.step.Seconds())))
		} else {
			v.Set("time", strconv.FormatInt(end.Unix(), 10))
		}
		u := srv.httpURL + path + "?" + v.Encode()
		var lat []time.Duration
		var series int
		start := time.Now()
		for len(lat) < 5 || time.Since(start) < dur {
			t := time.Now()
			resp, err := http.Get(u)
			if err != nil {
				fatal(err)
			}
			var body struct {
				Status string
				Error  string
				Data   struct{ Result []json.RawMessage }
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err != nil || body.Status != "success" {
				fatal(fmt.Errorf("query %s: %v %s", q.query, err, body.Error))
			}
			lat = append(lat, time.Since(t))
			series = len(body.Data.Result)
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p50 := float64(lat[len(lat)/2].Microseconds()) / 1000
		p95 := float64(lat[len(lat)*95/100].Microseconds()) / 1000
		target := ""
		var met *bool
		if q.targetM > 0 {
			target = fmt.Sprintf("<= %g ms", q.targetM)
			met = boolp(p50 <= q.targetM)
		}
		record("query", q.name+fmt.Sprintf(" (%d series): p50", series), p50, "ms", target, met)
		record("query", q.name+": p95", p95, "ms", "", nil)
	}
}

// scanSpeed measures samples decoded and aggregated per CPU second for
// sum(rate(x[5m])) over every series of the day, in process.
func scanSpeed(dir string, end time.Time, d time.Duration) {
	db, err := storage.Open(dir, storage.Options{Retention: 30 * 24 * time.Hour, DisableBackground: true})
	if err != nil {
		fatal(err)
	}
	defer db.Close()
	src := benchSource{db}
	eng := &query.Engine{MaxSamples: 100_000_000}
	// One query per metric (rate drops the name: one query over all ten
	// would collide), 100 series each, every sample of the day. The first
	// pass reads cold blocks (Pebble's cache is empty after the open); the
	// next ones are the engine's own speed.
	pass := func() (int, float64, time.Duration) {
		var samples int
		cpu0, t0 := cpuTime(), time.Now()
		for _, m := range cpuMetrics {
			r, err := eng.Range(context.Background(), src, "sum(rate(cpu_"+m+"[5m]))", end.Add(-24*time.Hour).UnixMilli(), end.UnixMilli(), 5*60_000)
			if err != nil {
				fatal(err)
			}
			samples += r.Samples
		}
		return samples, (cpuTime() - cpu0).Seconds(), time.Since(t0)
	}
	n, cpu, wall := pass()
	record("query", "scan, cold cache: sum(rate(x[5m])), 1 day", float64(n)/cpu, "samples/s/core", "", nil)
	record("query", "scan, cold cache: wall time per metric (100 series)", float64(wall.Milliseconds())/float64(len(cpuMetrics)), "ms", "", nil)
	// Warm passes for at least d (and 5 passes); the median pass is
	// reported, as the latency shapes report their p50: a neighbour's
	// burst on this shared machine moves a single pass by 20%.
	var rates, walls []float64
	for t0 := time.Now(); len(rates) < 5 || time.Since(t0) < d; {
		n, cpu, wall := pass()
		rates = append(rates, float64(n)/cpu)
		walls = append(walls, float64(wall.Microseconds())/1000/float64(len(cpuMetrics)))
	}
	rate := median(rates)
	record("query", fmt.Sprintf("scan, warm: sum(rate(x[5m])) over all series, 1 day (median of %d passes)", len(rates)), rate, "samples/s/core", ">= 50M", boolp(rate >= 50e6))
	record("query", "scan, warm: wall time per metric (100 series)", median(walls), "ms", "", nil)
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type benchSource struct{ db *storage.DB }

// HasHistograms says whether queries need to look for native histograms
// beside the floats a rollup tier answers with.
func (s benchSource) HasHistograms() bool { return s.db.HasHistograms() }

func (s benchSource) Querier(mint, maxt int64) (query.Querier, error) {
	return s.db.Querier(max(mint, storage.MinTime), min(maxt, storage.MaxTime))
}
