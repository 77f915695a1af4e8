package main

// The fleet benchmark of issue 13: one day of a devops fleet (100 hosts x
// 101 metrics = 10,100 series of 11 labels, TSBS devops' tags and
// fields, one sample per 10 s: 87.3 M samples), the day ending two days
// before now, sent in time order over Prometheus remote-write by 4
// clients, each request one sample for each of 10,000 series, to a real
// `headroom serve` pinned to one core (taskset -c 1) with its default
// tiers, while this process (the load generator) runs on the other. It
// measures the server's CPU until the downsampler has rolled up the day,
// samples/s, peak RSS, a dashboard query while the tiers catch up, and
// the directory at rest after a clean stop.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/headroomdb/headroom/storage"
)

// TSBS devops' measurements and fields: 101 metrics a host.
var fleetFields = []struct {
	measurement string
	fields      []string
}{
	{"cpu", []string{"usage_user", "usage_system", "usage_idle", "usage_nice", "usage_iowait", "usage_irq", "usage_softirq", "usage_steal", "usage_guest", "usage_guest_nice"}},
	{"diskio", []string{"reads", "writes", "read_bytes", "write_bytes", "read_time", "write_time", "io_time"}},
	{"disk", []string{"total", "free", "used", "used_percent", "inodes_total", "inodes_free", "inodes_used"}},
	{"kernel", []string{"boot_time", "interrupts", "context_switches", "processes_forked", "disk_pages_in", "disk_pages_out"}},
	{"mem", []string{"total", "available", "used", "free", "cached", "buffered", "used_percent", "available_percent", "buffered_percent"}},
	{"net", []string{"bytes_sent", "bytes_recv", "packets_sent", "packets_recv", "err_in", "err_out", "drop_in", "drop_out"}},
	{"nginx", []string{"accepts", "active", "handled", "reading", "requests", "waiting", "writing"}},
	{"postgresl", []string{"numbackends", "xact_commit", "xact_rollback", "blks_read", "blks_hit", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated", "tup_deleted", "conflicts", "temp_files", "temp_bytes", "deadlocks", "blk_read_time", "blk_write_time"}},
	{"redis", []string{"uptime_in_seconds", "total_connections_received", "expired_keys", "evicted_keys", "keyspace_hits", "keyspace_misses", "instantaneous_ops_per_sec", "instantaneous_input_kbps", "instantaneous_output_kbps", "connected_clients", "used_memory", "used_memory_rss", "used_memory_peak", "used_memory_lua", "rdb_changes_since_last_save", "sync_full", "sync_partial_ok", "sync_partial_err", "pubsub_channels", "pubsub_patterns", "latest_fork_usec", "connected_slaves", "master_repl_offset", "repl_backlog_active", "repl_backlog_size", "repl_backlog_histlen", "mem_fragmentation_ratio", "used_cpu_sys", "used_cpu_user", "used_cpu_sys_children", "used_cpu_user_children"}},
}

// fleetKind is how a metric's values move.
type fleetKind int

const (
	kindCounter fleetKind = iota // small integer increments
	kindGauge                    // an integer random walk
	kindPercent                  // two decimals, a bounded walk
	kindConst                    // constant (totals, boot time)
)

func fleetKindOf(field string) fleetKind {
	switch {
	case strings.HasPrefix(field, "usage_") || strings.HasSuffix(field, "_percent") || strings.HasSuffix(field, "_ratio") || strings.HasPrefix(field, "used_cpu"):
		return kindPercent
	case field == "total" || field == "inodes_total" || field == "boot_time" || field == "repl_backlog_size":
		return kindConst
	case strings.HasSuffix(field, "s") && !strings.HasSuffix(field, "_clients") || strings.Contains(field, "bytes") || strings.HasPrefix(field, "xact_") ||
		strings.HasPrefix(field, "tup_") || strings.HasPrefix(field, "blks_") || strings.HasSuffix(field, "_time") || strings.HasPrefix(field, "keyspace_") ||
		strings.HasSuffix(field, "_received") || strings.HasSuffix(field, "_offset") || strings.HasPrefix(field, "uptime"):
		return kindCounter
	}
	return kindGauge
}

// fleetSeries is one series of the fleet: its labels as remote-write
// Label fields (written once), how its value moves, and its state.
type fleetSeries struct {
	labels []byte
	metric string
	host   string
	kind   fleetKind
	v      float64
	inc    int
}

// fleet builds the 10,100 series of hosts hosts, TSBS devops' tags.
func fleet(hosts int) []*fleetSeries {
	r := rand.New(rand.NewPCG(13, 2026))
	regions := []string{"us-east-1", "us-west-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1", "sa-east-1"}
	oses := []string{"Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"}
	teams := []string{"SF", "NYC", "LON", "CHI"}
	envs := []string{"production", "staging", "test"}
	var out []*fleetSeries
	for h := 0; h < hosts; h++ {
		region := regions[r.IntN(len(regions))]
		tags := [][2]string{
			{"arch", []string{"x86", "x64"}[r.IntN(2)]},
			{"datacenter", region + string(rune('a'+r.IntN(3)))},
			{"hostname", "host_" + strconv.Itoa(h)},
			{"os", oses[r.IntN(len(oses))]},
			{"rack", strconv.Itoa(r.IntN(100))},
			{"region", region},
			{"service", strconv.Itoa(r.IntN(20))},
			{"service_environment", envs[r.IntN(len(envs))]},
			{"service_version", strconv.Itoa(r.IntN(2))},
			{"team", teams[r.IntN(len(teams))]},
		}
		for _, m := range fleetFields {
			for _, f := range m.fields {
				name := m.measurement + "_" + f
				var lb []byte
				add := func(n, v string) {
					var l []byte
					l = protowire.AppendString(protowire.AppendTag(l, 1, protowire.BytesType), n)
					l = protowire.AppendString(protowire.AppendTag(l, 2, protowire.BytesType), v)
					lb = protowire.AppendBytes(protowire.AppendTag(lb, 1, protowire.BytesType), l)
				}
				add("__name__", name)
				for _, t := range tags {
					add(t[0], t[1])
				}
				s := &fleetSeries{labels: lb, metric: name, host: tags[2][1], kind: fleetKindOf(f), inc: 1 + r.IntN(30)}
				switch s.kind {
				case kindPercent:
					s.v = float64(r.IntN(100))
				case kindConst:
					s.v = float64(1 + r.IntN(1<<20))
				default:
					s.v = float64(r.IntN(1000))
				}
				out = append(out, s)
			}
		}
	}
	return out
}

// next moves the series' value one scrape on.
func (s *fleetSeries) next(r *rand.Rand) float64 {
	switch s.kind {
	case kindCounter:
		s.v += float64(r.IntN(s.inc + 1))
	case kindGauge:
		s.v = math.Max(0, s.v+float64(r.IntN(5)-2))
	case kindPercent:
		s.v = math.Round(100*math.Max(0, math.Min(100, s.v+float64(r.IntN(101)-50)/100))) / 100
	}
	return s.v
}

// fleetPoint is one sample of a request: the series (index) and value.
type fleetPoint struct {
	series int
	v      float64
}

type fleetRequest struct {
	t      []int64 // per point
	points []fleetPoint
}

// fleetResult is what benchFleet measured.
type fleetResult struct {
	samples           int64
	ingest, toIdle    time.Duration
	cpuIngest, cpuAll time.Duration
	peakRSS           int64
	rssIngest         int64           // the largest RSS seen while ingesting (sampled twice a second)
	queryDuring       []time.Duration // while ingesting
	queryCatchUp      []time.Duration // after, until the downsampler is idle
	queryIdle         []time.Duration // once it is
	dirBytes          int64           // after a clean stop
	raw               uint64
	tiers             []uint64
}

// runFleet sends the day and measures; extra are more server flags.
func runFleet(bin string, hosts int, perRequest, clients int, extra []string, profile string) (*fleetResult, error) {
	dir, err := os.MkdirTemp("", "headroom-bench-fleet-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "data")
	srv, err := startPinnedServer(bin, data, append([]string{"--max-request-bytes", strconv.Itoa(64 << 20)}, extra...)...)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			srv.cmd.Process.Kill()
			srv.cmd.Wait()
		}
	}()
	// This process on the other core.
	if out, err := exec.Command("taskset", "-a", "-cp", "0", strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("taskset: %v %s", err, out)
	}
	defer exec.Command("taskset", "-a", "-cp", "0,1", strconv.Itoa(os.Getpid())).Run()

	ss := fleet(hosts)
	end := time.Now().Add(-48 * time.Hour).Truncate(10 * time.Second).UnixMilli()
	const step = 10_000
	steps := int64(86400_000 / step)
	start := end - (steps-1)*step
	total := steps * int64(len(ss))
	// One producer walks the values in time order and cuts requests of
	// perRequest points; the clients encode and send them.
	reqs := make(chan *fleetRequest, 2*clients)
	go func() {
		r := rand.New(rand.NewPCG(7, 13))
		cur := &fleetRequest{}
		for k := int64(0); k < steps; k++ {
			ts := start + k*step
			for i, s := range ss {
				cur.t = append(cur.t, ts)
				cur.points = append(cur.points, fleetPoint{i, s.next(r)})
				if len(cur.points) == perRequest {
					reqs <- cur
					cur = &fleetRequest{}
				}
			}
		}
		if len(cur.points) > 0 {
			reqs <- cur
		}
		close(reqs)
	}()
	res := &fleetResult{samples: total}
	var maxRSS atomic.Int64
	rssDone := make(chan struct{})
	defer close(rssDone)
	go func() {
		for {
			select {
			case <-rssDone:
				return
			case <-time.After(500 * time.Millisecond):
			}
			if r := procStatus(srv.cmd.Process.Pid, "VmRSS"); r > maxRSS.Load() {
				maxRSS.Store(r)
			}
		}
	}()
	cpu0 := srv.cpu()
	t0 := time.Now()
	var sent atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{}
			var body, comp []byte
			for rq := range reqs {
				body = body[:0]
				for j, p := range rq.points {
					var smp []byte
					smp = protowire.AppendFixed64(protowire.AppendTag(smp, 1, protowire.Fixed64Type), math.Float64bits(p.v))
					smp = protowire.AppendVarint(protowire.AppendTag(smp, 2, protowire.VarintType), uint64(rq.t[j]))
					lb := ss[p.series].labels
					body = protowire.AppendTag(body, 1, protowire.BytesType)
					body = protowire.AppendVarint(body, uint64(len(lb)+2+len(smp)))
					body = append(body, lb...)
					body = protowire.AppendBytes(protowire.AppendTag(body, 2, protowire.BytesType), smp)
				}
				comp = snappy.Encode(comp[:cap(comp)], body)
				for attempt := 0; ; attempt++ {
					code, msg, err := postSnappy(hc, srv.httpURL, comp)
					if err == nil && code == http.StatusNoContent {
						break
					}
					if err == nil && code == http.StatusTooManyRequests && attempt < 100 {
						time.Sleep(100 * time.Millisecond)
						continue
					}
					firstErr.CompareAndSwap(nil, fmt.Errorf("remote write: %d %s %v", code, msg, err))
					for range reqs {
					}
					return
				}
				sent.Add(int64(len(rq.points)))
			}
		}()
	}
	// Dashboard queries while ingesting, then while the tiers catch up.
	var queries []time.Duration
	var qmu sync.Mutex
	// A query every 200 ms while ingesting; every 10 ms while the tiers
	// catch up: on this virtual machine a vCPU idle for 200 ms takes
	// about a millisecond to wake (1.5 ms medians against 0.17 ms back to
	// back on an idle server), which is not the server's doing.
	var pace atomic.Int64
	pace.Store(int64(200 * time.Millisecond))
	qdone := make(chan struct{})
	qstopped := make(chan struct{})
	go func() {
		defer close(qstopped)
		r := rand.New(rand.NewPCG(1, 1))
		for {
			select {
			case <-qdone:
				return
			case <-time.After(time.Duration(pace.Load())):
			}
			s := ss[r.IntN(len(ss))]
			// An hour of the part of the day written so far.
			upto := start + sent.Load()/int64(len(ss))*step
			if upto < start+3600_000 {
				continue
			}
			from := start + r.Int64N((upto-start-3600_000)/60_000+1)*60_000
			v := url.Values{"query": {fmt.Sprintf(`%s{hostname="%s"}`, s.metric, s.host)}, "start": {strconv.FormatInt(from/1000, 10)},
				"end": {strconv.FormatInt(from/1000+3600, 10)}, "step": {"60"}}
			t := time.Now()
			resp, err := http.Get(srv.httpURL + "/api/v1/query_range?" + v.Encode())
			if err != nil {
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				qmu.Lock()
				queries = append(queries, time.Since(t))
				qmu.Unlock()
			}
		}
	}()
	if profile != "" {
		// A minute of the server's CPU from half a minute in, and its heap then.
		go func() {
			time.Sleep(30 * time.Second)
			if err := fetchProfile(srv.httpURL, time.Minute, profile); err != nil {
				fmt.Fprintln(os.Stderr, "  fleet: profile:", err)
			}
			fetch(srv.httpURL+"/debug/pprof/heap", strings.TrimSuffix(profile, ".pprof")+".heap.pprof")
		}()
	}
	wg.Wait()
	res.ingest = time.Since(t0)
	res.cpuIngest = srv.cpu() - cpu0
	res.rssIngest = maxRSS.Load()
	if err, ok := firstErr.Load().(error); ok {
		close(qdone)
		return nil, err
	}
	qmu.Lock()
	res.queryDuring = append([]time.Duration(nil), queries...)
	queries = queries[:0]
	qmu.Unlock()
	pace.Store(int64(10 * time.Millisecond))
	fmt.Fprintf(os.Stderr, "  fleet: %d samples in %v, waiting for the downsampler\n", total, res.ingest.Round(time.Millisecond))
	if profile != "" {
		// A minute of the catch-up too, from 70 s after the last write
		// (the days are quiet by then), and the heap at its end.
		go func() {
			time.Sleep(70 * time.Second)
			p := strings.TrimSuffix(profile, ".pprof") + ".catchup.pprof"
			if err := fetchProfile(srv.httpURL, time.Minute, p); err != nil {
				fmt.Fprintln(os.Stderr, "  fleet: profile:", err)
			}
			fetch(srv.httpURL+"/debug/pprof/heap", strings.TrimSuffix(p, ".pprof")+".heap.pprof")
		}()
	}
	// Idle: a run of the downsampler after the last checkpoint (a minute
	// after the last write) found nothing to do.
	if err := waitRollupIdle(srv, 2*time.Hour); err != nil {
		close(qdone)
		return nil, err
	}
	res.toIdle = time.Since(t0)
	res.cpuAll = srv.cpu() - cpu0
	close(qdone)
	<-qstopped
	res.queryCatchUp = queries
	res.peakRSS = procStatus(srv.cmd.Process.Pid, "VmHWM")
	r := rand.New(rand.NewPCG(2, 2))
	for i := 0; i < 300; i++ {
		s := ss[r.IntN(len(ss))]
		from := start + r.Int64N(23*60)*60_000
		v := url.Values{"query": {fmt.Sprintf(`%s{hostname="%s"}`, s.metric, s.host)}, "start": {strconv.FormatInt(from/1000, 10)},
			"end": {strconv.FormatInt(from/1000+3600, 10)}, "step": {"60"}}
		t := time.Now()
		resp, err := http.Get(srv.httpURL + "/api/v1/query_range?" + v.Encode())
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res.queryIdle = append(res.queryIdle, time.Since(t))
	}
	srv.cmd.Process.Signal(os.Interrupt)
	srv.cmd.Wait()
	stopped = true
	res.dirBytes = dirSize(data)
	db, err := storage.Open(data, storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour})
	if err != nil {
		return nil, err
	}
	res.raw, res.tiers, err = db.TierDiskBytes()
	db.Close()
	return res, err
}

// startPinnedServer starts `headroom serve` on data pinned to the second
// core (taskset -c 1), with its profiler, and waits until it serves.
func startPinnedServer(bin, data string, extra ...string) (*serverProc, error) {
	args := append([]string{"-c", "1", bin, "serve", "--data-dir", data, "--grpc-port", "0", "--http-port", "0", "--pprof"}, extra...)
	cmd := exec.Command("taskset", args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	srv := &serverProc{cmd: cmd}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
			srv.grpcAddr, srv.httpURL = m[1], m[2]
			break
		}
	}
	if srv.httpURL == "" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("server did not start")
	}
	go io.Copy(io.Discard, stderr)
	return srv, nil
}

// waitRollupIdle waits until a run of the server's downsampler after its
// next checkpoint (a minute on) finds no day due or waiting: every day
// written that is over is rolled up.
func waitRollupIdle(srv *serverProc, limit time.Duration) error {
	start := time.Now()
	after := start.Add(61 * time.Second)
	for {
		time.Sleep(time.Second)
		m, err := scrape(srv.httpURL)
		if err != nil {
			return err
		}
		if m["headroom_rollup_last_run_timestamp_seconds"] > float64(after.Unix()) &&
			m[`headroom_rollup_pending{state="due"}`]+m[`headroom_rollup_pending{state="waiting"}`] == 0 {
			return nil
		}
		if time.Since(start) > limit {
			return fmt.Errorf("the downsampler did not finish in %v", limit)
		}
	}
}

func postSnappy(hc *http.Client, base string, body []byte) (int, string, error) {
	req, _ := http.NewRequest("POST", base+"/api/v1/write", bytes.NewReader(body))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(msg), nil
}

// scrape reads a server's /metrics into name{labels} -> value.
func scrape(base string) (map[string]float64, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		f, err := strconv.ParseFloat(l[i+1:], 64)
		if err == nil {
			out[l[:i]] = f
		}
	}
	return out, sc.Err()
}

// procStatus reads a kB field of /proc/PID/status, in bytes.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n << 10
		}
	}
	return 0
}

func medianDur(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// benchFleet runs the fleet workload with the default tiers and records
// the figures against its targets.
func benchFleet(bin string, hosts int, extra []string, profile string) {
	bin = buildServer(bin)
	r, err := runFleet(bin, hosts, 10_000, 4, extra, profile)
	if err != nil {
		fatal(fmt.Errorf("fleet: %w", err))
	}
	n := float64(r.samples)
	rate := n / r.ingest.Seconds()
	cpu := r.cpuAll.Seconds() / n * 1e6
	record("fleet", "samples/s (ingest, server on one core)", rate, "samples/s", ">= 600k", boolp(rate >= 600e3))
	record("fleet", "server CPU per sample, ingest", r.cpuIngest.Seconds()/n*1e6, "us", "", nil)
	record("fleet", "server CPU per sample, until tiers are idle", cpu, "us", "<= 1.0", boolp(cpu <= 1.0))
	record("fleet", "time until the downsampler is idle", r.toIdle.Seconds(), "s", "", nil)
	record("fleet", "peak RSS", float64(r.peakRSS)/(1<<20), "MiB", "<= 300", boolp(r.peakRSS <= 300<<20))
	record("fleet", "largest RSS seen while ingesting", float64(r.rssIngest)/(1<<20), "MiB", "", nil)
	rawB := float64(r.raw) / n
	var tiers uint64
	for _, t := range r.tiers {
		tiers += t
	}
	record("fleet", "data directory after a clean stop", float64(r.dirBytes)/n, "B/sample", "", nil)
	record("fleet", "raw chunks at rest", rawB, "B/sample", "<= 0.6", boolp(rawB <= 0.6))
	record("fleet", "all tiers at rest, share of raw", float64(tiers)/float64(max(r.raw, 1)), "ratio", "<= 0.5", boolp(float64(tiers) <= 0.5*float64(r.raw)))
	for i, t := range r.tiers {
		record("fleet", fmt.Sprintf("tier %d at rest", i), float64(t)/n, "B/sample", "", nil)
	}
	qd, qc := medianDur(r.queryDuring), medianDur(r.queryCatchUp)
	record("fleet", fmt.Sprintf("query 1 metric x 1 host x 1 h, median while ingesting (%d, every 200 ms)", len(r.queryDuring)), float64(qd.Microseconds())/1000, "ms", "", nil)
	record("fleet", fmt.Sprintf("query 1 metric x 1 host x 1 h, median while tiers catch up (%d, every 10 ms)", len(r.queryCatchUp)), float64(qc.Microseconds())/1000, "ms", "<= 1", boolp(qc <= time.Millisecond && len(r.queryCatchUp) > 0))
	record("fleet", fmt.Sprintf("query 1 metric x 1 host x 1 h, median once idle (%d, back to back)", len(r.queryIdle)), float64(medianDur(r.queryIdle).Microseconds())/1000, "ms", "", nil)
}
