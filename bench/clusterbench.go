package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/headroomdb/headroom/cluster"
	"github.com/headroomdb/headroom/internal/natstest"
	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
)

// The cost and the shape of cluster mode (issue 19), on this one machine
// where three nodes and three NATS servers share two cores: server CPU a
// sample (Headroom and NATS) in cluster mode against a single node, the
// acknowledgement latency, the time a node takes to catch up from the
// stream, and query latency through the fan-out. No speed-up can show
// here: these figures feed the model in RESULTS.md.
const (
	clusterBenchSeries   = 1000
	clusterBenchPerReq   = 10 // samples of each series a request
	clusterBenchRequests = 100
	clusterBenchWriters  = 4

	// The history (backfill) phase: a week of one-minute samples,
	// written an hour of every series a request, oldest first, as an
	// agent catching up or an import sends them.
	historySeries = 200
	historyDays   = 7
)

// rollupFlags make the downsampler roll a backfilled day up seconds
// after its last sample, so that the tier queries can be timed both
// before (days computed from raw samples) and after.
var rollupFlags = []string{"--rollup-interval", "2s", "--rollup-quiet", "5s", "--checkpoint-interval", "10s"}

func benchCluster(bin string) {
	bin = buildServer(bin)
	tmp, err := os.MkdirTemp("", "headroom-bench-cluster-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(tmp)
	base := time.Now().Add(-2 * time.Hour).Truncate(time.Minute).UnixMilli()

	// A single node, the same load.
	single, err := startServerProcDir(bin, filepath.Join(tmp, "single"), rollupFlags...)
	if err != nil {
		fatal(err)
	}
	// The CPU of a write is all the work it makes, the background work
	// after it included (checkpoints; a cluster's owners' apply): until
	// the servers are idle.
	sIdle := idleRate([]*serverProc{single})
	sm := startMeter([]*serverProc{single}, sIdle)
	_, sSelf, sLat := clusterLoad([]*serverProc{single}, base, 0)
	waitIdle([]*serverProc{single}, sIdle, 5*time.Minute)
	sCPU := sm.used()
	samples := float64(clusterBenchSeries * clusterBenchPerReq * clusterBenchRequests)
	record("cluster", "single node: server CPU a sample", float64(sCPU.Nanoseconds())/samples, "ns", "", nil)
	record("cluster", "single node: ack p50", ms(sLat[len(sLat)/2]), "ms", "", nil)
	record("cluster", "single node: ack p99", ms(sLat[len(sLat)*99/100]), "ms", "", nil)
	sq := clusterQueries(single.httpURL, base)
	sh := historyPhase([]*serverProc{single}, sIdle)
	single.stop()

	// Three nodes on three NATS servers (in this process).
	var dirs []string
	for i := 0; i < 3; i++ {
		dirs = append(dirs, filepath.Join(tmp, "nats"+strconv.Itoa(i)))
	}
	nats, err := natstest.StartIn(dirs)
	if err != nil {
		fatal(err)
	}
	defer nats.Stop()
	urls := natsURLs(nats)
	startNode := func(name string) *serverProc {
		p, err := startServerProcDir(bin, filepath.Join(tmp, name), append([]string{"--cluster", urls, "--cluster-node", name, "--cluster-partitions", "16", "--cluster-lease", "3s"}, rollupFlags...)...)
		if err != nil {
			fatal(err)
		}
		return p
	}
	nodes := []*serverProc{startNode("h0"), startNode("h1"), startNode("h2")}
	defer func() {
		for _, p := range nodes {
			p.stop()
		}
	}()
	waitClusterServing(nodes, 2*time.Minute)
	cIdle := idleRate(nodes)
	record("cluster", "cluster: idle CPU of 3 nodes (16 partitions)", ms(cIdle), "ms/s", "", nil)
	cm, self0 := startMeter(nodes, cIdle), cpuTime()
	_, _, cLat := clusterLoad(nodes, base, 0)
	start := time.Now()
	waitClusterServing(nodes, 5*time.Minute) // applied everywhere
	applied := time.Since(start)
	waitIdle(nodes, cIdle, 5*time.Minute)
	// The CPU of the whole write: publish, the stream, and both owners'
	// apply, which ends after the last acknowledgement.
	cCPU := cm.used()
	natsCPU := max(cpuTime()-self0-sSelf, 0)
	record("cluster", "cluster: Headroom CPU a sample (3 nodes)", float64(cCPU.Nanoseconds())/samples, "ns", "", nil)
	record("cluster", "cluster: NATS CPU a sample (3 servers)", float64(natsCPU.Nanoseconds())/samples, "ns", "", nil)
	record("cluster", "cluster: ack p50", ms(cLat[len(cLat)/2]), "ms", "", nil)
	record("cluster", "cluster: ack p99", ms(cLat[len(cLat)*99/100]), "ms", "", nil)
	record("cluster", "cluster: owners applied the rest after the writes", ms(applied), "ms", "", nil)
	cq := clusterQueries(nodes[0].httpURL, base)
	for i, q := range sq {
		record("cluster", "query "+q.name+": single node", ms(q.d), "ms", "", nil)
		record("cluster", "query "+q.name+": fan-out", ms(cq[i].d), "ms", "", nil)
	}

	// A fourth node joins: it takes the partitions it ranks first for
	// and catches up on them from the stream (every message since the
	// start).
	joined := time.Now()
	h3 := startNode("h3")
	nodes = append(nodes, h3)
	var st cluster.Status
	for {
		st = clusterStatus(h3.httpURL)
		owned, serving := 0, 0
		for _, p := range st.Partition {
			if p.Serving != nil {
				owned++
				if *p.Serving {
					serving++
				}
			}
		}
		if owned > 0 && serving == owned {
			took := time.Since(joined)
			// Its share of the samples: its partitions' share of the
			// series (the hash spreads them evenly).
			share := samples * float64(owned) / float64(st.Partitions)
			record("cluster", fmt.Sprintf("catch-up of a new node (%d of %d partitions)", owned, st.Partitions), ms(took), "ms", "", nil)
			record("cluster", "catch-up per million samples", took.Seconds()*1e6/share, "s", "", nil)
			break
		}
		if time.Since(joined) > 5*time.Minute {
			fatal(fmt.Errorf("h3 did not catch up in 5 minutes: %+v", st))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The backfill through the four nodes, then the tier queries.
	ch := historyPhase(nodes, idleRate(nodes))
	hs := float64(historySeries * historyDays * 1440)
	record("cluster", "backfill: single node: server CPU a sample", float64(sh.cpu.Nanoseconds())/hs, "ns", "", nil)
	record("cluster", "backfill: cluster: Headroom CPU a sample (4 nodes)", float64(ch.cpu.Nanoseconds())/hs, "ns", "", nil)
	record("cluster", "backfill: single node: ack p50", ms(sh.lat[len(sh.lat)/2]), "ms", "", nil)
	record("cluster", "backfill: single node: ack p99", ms(sh.lat[len(sh.lat)*99/100]), "ms", "", nil)
	record("cluster", "backfill: cluster: ack p50", ms(ch.lat[len(ch.lat)/2]), "ms", "", nil)
	record("cluster", "backfill: cluster: ack p99", ms(ch.lat[len(ch.lat)*99/100]), "ms", "", nil)
	for i, q := range sh.queries {
		record("cluster", "tier query "+q.name+": single node", ms(q.d), "ms", "", nil)
		record("cluster", "tier query "+q.name+": fan-out", ms(ch.queries[i].d), "ms", "", nil)
	}
}

// history is what historyPhase measured.
type history struct {
	cpu     time.Duration   // the servers', for the whole backfill
	lat     []time.Duration // every request's, sorted
	queries []namedDur
}

// historyPhase backfills historyDays of historySeries series through
// the nodes (requests spread over them, four writers), then times tier
// queries over it: first at once (the days not rolled up are computed
// from raw samples), then once the downsampler has rolled them up.
func historyPhase(nodes []*serverProc, idle time.Duration) history {
	day := int64(24 * time.Hour / time.Millisecond)
	end := (time.Now().UnixMilli() - int64(10*time.Minute/time.Millisecond)) / day * day
	start := end - historyDays*day
	var h history
	m := startMeter(nodes, idle)
	h.lat = writeRequests(nodes, historyDays*24, func(r int) *headroomv1.WriteRequest {
		req := &headroomv1.WriteRequest{}
		for s := 0; s < historySeries; s++ {
			ser := &headroomv1.Series{Labels: []*headroomv1.Label{{Name: "__name__", Value: "bench_history"}, {Name: "instance", Value: "host-" + strconv.Itoa(s)}}}
			for k := 0; k < 60; k++ {
				m := r*60 + k
				ser.Samples = append(ser.Samples, &headroomv1.Sample{TimestampMs: start + int64(m)*60_000, Value: float64((m*(s+1))%10_000) / 10})
			}
			req.Series = append(req.Series, ser)
		}
		return req
	})
	if len(nodes) > 1 {
		waitClusterServing(nodes, 10*time.Minute)
	}
	written := m.used()
	qs := []struct{ name, q, step, tier string }{
		{"avg_over_time[1h] 7d at 1h, 200 series", "avg_over_time(bench_history[1h])", "3600", ""},
		{"sum(rate[1h]) 7d at 1h", "sum(rate(bench_history[1h]))", "3600", ""},
		{"max_over_time[1d] 7d at 1d", "max_over_time(bench_history[1d])", "86400", ""},
		{"avg_over_time[1h] 7d at 1h, raw samples", "avg_over_time(bench_history[1h])", "3600", "raw"},
	}
	run := func(when string) {
		for _, q := range qs {
			var ds []time.Duration
			for i := 0; i < 5; i++ {
				u := fmt.Sprintf("%s/api/v1/query_range?query=%s&start=%d&end=%d&step=%s&tier=%s", nodes[0].httpURL, url.QueryEscape(q.q), (start+day)/1000, end/1000, q.step, q.tier)
				t := time.Now()
				resp, err := http.Get(u)
				if err != nil {
					fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.Contains(string(body), `"result":[{`) {
					fatal(fmt.Errorf("%s: %s: %.300s", q.q, resp.Status, body))
				}
				ds = append(ds, time.Since(t))
			}
			h.queries = append(h.queries, namedDur{q.name + ", " + when, medianDur(ds)})
		}
	}
	run("just written")
	// The backfill's cost is all the work it makes: the write, the
	// owners' apply, and the downsampler's rolling of the days up (the
	// queries' CPU left out).
	m = startMeter(nodes, idle)
	waitRolledUp(nodes, 5*time.Minute)
	waitIdle(nodes, idle, 5*time.Minute)
	h.cpu = written + m.used()
	run("rolled up")
	return h
}

// idleRate measures the servers' CPU a second while nothing is written
// or asked: a cluster's nodes renew their leases and their idle
// consumers poll the stream.
func idleRate(nodes []*serverProc) time.Duration {
	c0, t0 := serversCPU(nodes), time.Now()
	time.Sleep(5 * time.Second)
	return time.Duration(float64(serversCPU(nodes)-c0) / time.Since(t0).Seconds())
}

// cpuMeter measures the servers' CPU above their idle rate.
type cpuMeter struct {
	nodes []*serverProc
	idle  time.Duration // a second
	c0    time.Duration
	t0    time.Time
}

func startMeter(nodes []*serverProc, idle time.Duration) *cpuMeter {
	return &cpuMeter{nodes, idle, serversCPU(nodes), time.Now()}
}

func (m *cpuMeter) used() time.Duration {
	return serversCPU(m.nodes) - m.c0 - time.Duration(float64(m.idle)*time.Since(m.t0).Seconds())
}

// waitIdle waits until the servers have used less than their idle rate
// and 20 ms a second each for three seconds in a row: the background
// work a load made (the owners' apply, checkpoints, the downsampler) is
// done.
func waitIdle(nodes []*serverProc, idle time.Duration, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	quiet := 0
	prev := serversCPU(nodes)
	for quiet < 3 {
		if time.Now().After(deadline) {
			fatal(fmt.Errorf("the servers were still busy after %v", timeout))
		}
		time.Sleep(time.Second)
		cur := serversCPU(nodes)
		if cur-prev < idle+time.Duration(len(nodes))*20*time.Millisecond {
			quiet++
		} else {
			quiet = 0
		}
		prev = cur
	}
}

// waitRolledUp waits until no node has series-days due or waiting for
// the downsampler (headroom_rollup_pending).
func waitRolledUp(nodes []*serverProc, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		pending := 0.0
		for _, n := range nodes {
			resp, err := http.Get(n.httpURL + "/metrics")
			if err != nil {
				fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, line := range strings.Split(string(body), "\n") {
				if strings.HasPrefix(line, `headroom_rollup_pending{state="due"}`) || strings.HasPrefix(line, `headroom_rollup_pending{state="waiting"}`) {
					f := strings.Fields(line)
					v, _ := strconv.ParseFloat(f[len(f)-1], 64)
					pending += v
				}
			}
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			fatal(fmt.Errorf("%v series-days still pending for the downsampler after %v", pending, timeout))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func natsURLs(c *natstest.Cluster) string {
	var u []string
	for _, s := range c.Servers {
		u = append(u, s.ClientURL())
	}
	return strings.Join(u, ",")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// clusterLoad writes clusterBenchRequests requests of clusterBenchSeries
// series over gRPC, spread over the nodes, from clusterBenchWriters
// writers; it returns the servers' CPU, this process's CPU less
// selfBase (the NATS servers, with the writers' own share taken off),
// and every request's latency, sorted.
func clusterLoad(nodes []*serverProc, base int64, selfBase time.Duration) (server, self time.Duration, lat []time.Duration) {
	cpu0 := serversCPU(nodes)
	self0 := cpuTime()
	lat = writeRequests(nodes, clusterBenchRequests, func(r int) *headroomv1.WriteRequest {
		req := &headroomv1.WriteRequest{}
		for s := 0; s < clusterBenchSeries; s++ {
			ser := &headroomv1.Series{Labels: []*headroomv1.Label{{Name: "__name__", Value: "bench_cluster"}, {Name: "instance", Value: "host-" + strconv.Itoa(s)}}}
			for k := 0; k < clusterBenchPerReq; k++ {
				t := base + int64(r*clusterBenchPerReq+k)*1000
				ser.Samples = append(ser.Samples, &headroomv1.Sample{TimestampMs: t, Value: float64(s + k)})
			}
			req.Series = append(req.Series, ser)
		}
		return req
	})
	server = serversCPU(nodes)
	self = cpuTime() - self0
	return server - cpu0, max(self-selfBase, 0), lat
}

// writeRequests sends requests 0 to n-1 (made by build) over gRPC,
// spread over the nodes, from clusterBenchWriters writers, and returns
// their latencies, sorted.
func writeRequests(nodes []*serverProc, n int, build func(r int) *headroomv1.WriteRequest) []time.Duration {
	var conns []headroomv1.IngestClient
	for _, p := range nodes {
		c, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fatal(err)
		}
		defer c.Close()
		conns = append(conns, headroomv1.NewIngestClient(c))
	}
	var lat []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan int)
	go func() {
		for r := 0; r < n; r++ {
			next <- r
		}
		close(next)
	}()
	for w := 0; w < clusterBenchWriters; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range next {
				req := build(r)
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				_, err := conns[r%len(conns)].Write(ctx, req)
				cancel()
				if err != nil {
					fatal(fmt.Errorf("cluster bench write: %w", err))
				}
				mu.Lock()
				lat = append(lat, time.Since(start))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat
}

func serversCPU(nodes []*serverProc) time.Duration {
	var d time.Duration
	for _, n := range nodes {
		d += n.cpu()
	}
	return d
}

type namedDur struct {
	name string
	d    time.Duration
}

// clusterQueries times three queries over the data written (median of
// five runs each).
func clusterQueries(httpURL string, base int64) []namedDur {
	end := base + int64(clusterBenchRequests*clusterBenchPerReq)*1000
	qs := []struct{ name, q string }{
		{"sum(rate) 1000 series", "sum(rate(bench_cluster[1m]))"},
		{"topk(5, max_over_time) 1000 series", "topk(5, max_over_time(bench_cluster[5m]))"},
		{"one series", `bench_cluster{instance="host-7"}`},
	}
	var out []namedDur
	for _, q := range qs {
		var ds []time.Duration
		for i := 0; i < 5; i++ {
			u := fmt.Sprintf("%s/api/v1/query_range?query=%s&start=%d&end=%d&step=15", httpURL, url.QueryEscape(q.q), base/1000, end/1000)
			start := time.Now()
			resp, err := http.Get(u)
			if err != nil {
				fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				fatal(fmt.Errorf("%s: %s", q.q, resp.Status))
			}
			ds = append(ds, time.Since(start))
		}
		out = append(out, namedDur{q.name, medianDur(ds)})
	}
	return out
}

func clusterStatus(httpURL string) cluster.Status {
	resp, err := http.Get(httpURL + "/api/v1/status/cluster")
	if err != nil {
		fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data cluster.Status `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		fatal(err)
	}
	return r.Data
}

// waitClusterServing waits until every partition is served by two nodes
// with no lag.
func waitClusterServing(nodes []*serverProc, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		var served []int
		ok := true
		for _, n := range nodes {
			st := clusterStatus(n.httpURL)
			if served == nil {
				served = make([]int, st.Partitions)
			}
			for _, p := range st.Partition {
				if p.Serving != nil {
					if *p.Serving && *p.Lag == 0 {
						served[p.Partition]++
					}
				}
			}
		}
		for _, k := range served {
			ok = ok && k == 2
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			fatal(fmt.Errorf("partitions not served by two caught-up owners in %v: %v", timeout, served))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
