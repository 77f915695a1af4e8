package main

// The ingest benchmark runs a real `headroom serve` process and pushes to
// it over each protocol from 1, 4 and 16 concurrent clients, in the two
// request shapes agents send: a scrape (one sample for each of 5,000
// series) and a backfill (1,000 samples for each of 10 series).
//
// Request bodies are built once per client as wire bytes and only their
// timestamps are patched per request, so that the clients, which share
// the machine's two cores with the server, spend as little CPU as an
// agent that has its samples ready. Server CPU comes from /proc, server
// allocations from its own /metrics (go_memstats_mallocs_total).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

// wire is a protobuf message under construction with the offsets of its
// timestamps, which are 8-byte varints (overlong when needed, which every
// decoder accepts) or fixed64 nanoseconds, so they can be patched in place.
type wire struct {
	b  []byte
	ts []tsField
}

type tsField struct {
	off   int
	nanos bool  // fixed64 nanoseconds (OTLP), else varint milliseconds
	delta int64 // milliseconds after the request's base time
}

func (w *wire) varint(field protowire.Number, v uint64) {
	w.b = protowire.AppendVarint(protowire.AppendTag(w.b, field, protowire.VarintType), v)
}
func (w *wire) str(field protowire.Number, s string) {
	w.b = protowire.AppendString(protowire.AppendTag(w.b, field, protowire.BytesType), s)
}
func (w *wire) double(field protowire.Number, v float64) {
	w.b = protowire.AppendFixed64(protowire.AppendTag(w.b, field, protowire.Fixed64Type), math.Float64bits(v))
}
func (w *wire) tsMillis(field protowire.Number, delta int64) {
	w.b = protowire.AppendTag(w.b, field, protowire.VarintType)
	w.ts = append(w.ts, tsField{off: len(w.b), delta: delta})
	w.b = append(w.b, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00)
}
func (w *wire) tsNanos(field protowire.Number, delta int64) {
	w.b = protowire.AppendTag(w.b, field, protowire.Fixed64Type)
	w.ts = append(w.ts, tsField{off: len(w.b), nanos: true, delta: delta})
	w.b = protowire.AppendFixed64(w.b, 0)
}

// msg appends inner as a length-delimited field, moving its timestamps.
func (w *wire) msg(field protowire.Number, inner *wire) {
	w.b = protowire.AppendTag(w.b, field, protowire.BytesType)
	w.b = protowire.AppendVarint(w.b, uint64(len(inner.b)))
	for _, t := range inner.ts {
		t.off += len(w.b)
		w.ts = append(w.ts, t)
	}
	w.b = append(w.b, inner.b...)
}

// patch sets every timestamp to base + its delta.
func (w *wire) patch(base int64) {
	for _, t := range w.ts {
		ms := base + t.delta
		if t.nanos {
			binary.LittleEndian.PutUint64(w.b[t.off:], uint64(ms)*1e6)
			continue
		}
		v := uint64(ms)
		for i := 0; i < 7; i++ {
			w.b[t.off+i] = byte(v&0x7f) | 0x80
			v >>= 7
		}
		w.b[t.off+7] = byte(v)
	}
}

// histPerSeries is how many series a request of histograms holds for each
// series of its shape: a histogram is some forty numbers.
const histPerSeries = 10

// histBuckets is how many buckets the ingest runs' histograms have
// (-ingest-hist-buckets).
var histBuckets = 40

// histogramMsg is a remote-write 2.0 Histogram: schema 3, histBuckets
// buckets of a latency around 100 ms as integer deltas (count_int = 1,
// sum = 3, schema = 4, positive_spans = 11, positive_deltas = 12,
// timestamp = 15).
func histogramMsg(i, k int, step int64) *wire {
	h := &wire{}
	var deltas []byte
	total, prev := uint64(0), int64(0)
	for b := range histBuckets {
		c := int64(100 + (i+b*7)%50)
		deltas = protowire.AppendVarint(deltas, protowire.EncodeZigZag(c-prev))
		prev = c
		total += uint64(c)
	}
	h.varint(1, total)
	h.double(3, float64(total)*0.1)
	h.varint(4, protowire.EncodeZigZag(3))
	span := &wire{}
	span.varint(1, protowire.EncodeZigZag(-46))
	span.varint(2, uint64(histBuckets))
	h.msg(11, span)
	h.b = protowire.AppendBytes(protowire.AppendTag(h.b, 12, protowire.BytesType), deltas)
	h.tsMillis(15, int64(k)*step)
	return h
}

// shape is one kind of request: series of labels, each with samples
// spaced step milliseconds apart.
type shape struct {
	name      string
	series    int
	perSeries int
	step      int64 // between samples of one request
	advance   int64 // between requests
}

var shapes = []shape{
	{"scrape", 5000, 1, 0, 10_000},
	{"backfill", 10, 1000, 1000, 1000 * 1000},
}

// labelsFor returns series i of a client as name/value pairs, __name__
// first: six labels, like a node exporter series.
func labelsFor(client, i int) [][2]string {
	return [][2]string{
		{"__name__", "node_metric_" + strconv.Itoa(i%100)},
		{"env", "prod"},
		{"host", fmt.Sprintf("c%d-h%d", client, i/100)},
		{"instance", fmt.Sprintf("10.%d.%d.%d:9100", client, i/100/250, i/100%250)},
		{"job", "node"},
		{"region", "eu-west-1"},
	}
}

// buildRequest returns the body of one request of shape sh for a client,
// in a protocol's wire format.
func buildRequest(protocol string, sh shape, client int) *wire {
	out := &wire{}
	switch protocol {
	case "grpc", "remote_write":
		for i := 0; i < sh.series; i++ {
			s := &wire{}
			for _, l := range labelsFor(client, i) {
				lb := &wire{}
				lb.str(1, l[0])
				lb.str(2, l[1])
				s.msg(1, lb)
			}
			for k := 0; k < sh.perSeries; k++ {
				sm := &wire{}
				v := float64((i*7+k)%1000) / 4
				if protocol == "grpc" { // Sample{timestamp_ms = 1, value = 2}
					sm.tsMillis(1, int64(k)*sh.step)
					sm.double(2, v)
				} else { // prompb.Sample{value = 1, timestamp = 2}
					sm.double(1, v)
					sm.tsMillis(2, int64(k)*sh.step)
				}
				s.msg(2, sm)
			}
			out.msg(1, s)
		}
	case "remote_write_2", "remote_write_2_hist":
		// io.prometheus.write.v2.Request: the strings once in the symbol
		// table (symbols = 4), series of packed label references
		// (labels_refs = 1) and samples (value = 1, timestamp = 2),
		// timeseries = 5.
		syms := map[string]uint64{"": 0}
		order := []string{""}
		ref := func(s string) uint64 {
			r, ok := syms[s]
			if !ok {
				r = uint64(len(order))
				syms[s] = r
				order = append(order, s)
			}
			return r
		}
		ts := &wire{}
		n := sh.series
		if protocol == "remote_write_2_hist" {
			n /= histPerSeries
		}
		for i := 0; i < n; i++ {
			s := &wire{}
			var refs []byte
			for _, l := range labelsFor(client, i) {
				refs = protowire.AppendVarint(refs, ref(l[0]))
				refs = protowire.AppendVarint(refs, ref(l[1]))
			}
			s.b = protowire.AppendBytes(protowire.AppendTag(s.b, 1, protowire.BytesType), refs)
			for k := 0; k < sh.perSeries; k++ {
				if protocol == "remote_write_2_hist" {
					s.msg(3, histogramMsg(i, k, sh.step))
					continue
				}
				sm := &wire{}
				sm.double(1, float64((i*7+k)%1000)/4)
				sm.tsMillis(2, int64(k)*sh.step)
				s.msg(2, sm)
			}
			ts.msg(5, s)
		}
		for _, s := range order {
			out.str(4, s)
		}
		off := len(out.b)
		for _, t := range ts.ts {
			t.off += off
			out.ts = append(out.ts, t)
		}
		out.b = append(out.b, ts.b...)
	case "otlp":
		// One resource for the client; one gauge per metric name with a
		// data point per host (scrape), or per sample (backfill).
		res := &wire{}
		for _, kv := range [][2]string{{"service.name", "node"}, {"service.instance.id", "client-" + strconv.Itoa(client)}} {
			k := &wire{}
			k.str(1, kv[0])
			av := &wire{}
			av.str(1, kv[1])
			k.msg(2, av)
			res.msg(1, k)
		}
		sm := &wire{}
		byName := map[string][]int{}
		var names []string
		for i := 0; i < sh.series; i++ {
			n := labelsFor(client, i)[0][1]
			if _, ok := byName[n]; !ok {
				names = append(names, n)
			}
			byName[n] = append(byName[n], i)
		}
		for _, n := range names {
			g := &wire{}
			for _, i := range byName[n] {
				for k := 0; k < sh.perSeries; k++ {
					dp := &wire{}
					for _, l := range labelsFor(client, i)[1:] {
						if l[0] == "job" || l[0] == "instance" {
							continue
						}
						kv := &wire{}
						kv.str(1, l[0])
						av := &wire{}
						av.str(1, l[1])
						kv.msg(2, av)
						dp.msg(7, kv)
					}
					dp.tsNanos(3, int64(k)*sh.step)
					dp.double(4, float64((i*7+k)%1000)/4)
					g.msg(1, dp)
				}
			}
			m := &wire{}
			m.str(1, n)
			m.msg(5, g)
			sm.msg(2, m)
		}
		rm := &wire{}
		rm.msg(1, res)
		rm.msg(2, sm)
		out.msg(1, rm)
	}
	return out
}

// rawCodec passes bytes through gRPC untouched.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

// serverProc is a `headroom serve` child process.
type serverProc struct {
	cmd      *exec.Cmd
	dir      string
	grpcAddr string
	httpURL  string
}

var servingLine = regexp.MustCompile(`msg=serving grpc=(\S+) http=(\S+)`)

// builtBin is the binary buildServer built, reused by later sections.
var builtBin string

// buildServer returns bin, or a headroom binary built from the tree into a
// temporary folder (left for the OS to clean: the process may exit
// through fatal).
func buildServer(bin string) string {
	if bin != "" {
		return bin
	}
	if builtBin != "" {
		return builtBin
	}
	dir, err := os.MkdirTemp("", "headroom-bench-bin-")
	if err != nil {
		fatal(err)
	}
	builtBin = filepath.Join(dir, "headroom")
	if out, err := exec.Command("go", "build", "-o", builtBin, "./cmd/headroom").CombinedOutput(); err != nil {
		fatal(fmt.Errorf("go build ./cmd/headroom: %v\n%s", err, out))
	}
	return builtBin
}

// startServerProc serves a fresh temporary data directory, removed by
// stop.
func startServerProc(bin string) (*serverProc, error) {
	dir, err := os.MkdirTemp("", "headroom-bench-ingest-")
	if err != nil {
		return nil, err
	}
	p, err := startServerProcDir(bin, filepath.Join(dir, "data"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p.dir = dir
	return p, nil
}

// startServerProcDir serves an existing data directory, with extra flags.
func startServerProcDir(bin, data string, extra ...string) (*serverProc, error) {
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", data, "--grpc-port", "0", "--http-port", "0",
		"--retention", "30d", "--max-request-bytes", strconv.Itoa(64 << 20), "--pprof"}, extra...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, stderr)
			return &serverProc{cmd: cmd, grpcAddr: m[1], httpURL: m[2]}, nil
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	return nil, fmt.Errorf("server did not start")
}

func (p *serverProc) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	p.cmd.Wait()
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
}

// cpu returns the server's user+system CPU time from /proc.
func (p *serverProc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// fetchProfile saves a CPU profile of the server over the run.
func fetchProfile(httpURL string, dur time.Duration, path string) error {
	return fetch(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", httpURL, max(1, int(dur.Seconds()))), path)
}

// fetch saves what url answers in path.
func fetch(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// mallocs scrapes the server's allocation count.
func (p *serverProc) mallocs() float64 {
	resp, err := http.Get(p.httpURL + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_mallocs_total "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

type ingestResult struct {
	samplesPerSec, cpuPerM, allocsPerSample float64
	p50, p99                                time.Duration
}

// runIngest measures one protocol, shape and client count on a fresh
// server: a warm-up request per client creates the series, then the
// clients send as fast as they are acknowledged for dur.
func runIngest(bin, protocol string, sh shape, clients int, dur time.Duration, profile string) (ingestResult, error) {
	srv, err := startServerProc(bin)
	if err != nil {
		return ingestResult{}, err
	}
	defer srv.stop()
	type client struct {
		body *wire
		send func(body []byte) error
		lat  []time.Duration
		n    int64
	}
	cs := make([]*client, clients)
	base := time.Now().Add(-24 * time.Hour).Truncate(time.Hour).UnixMilli()
	for c := range cs {
		cl := &client{body: buildRequest(protocol, sh, c)}
		switch protocol {
		case "grpc", "otlp":
			conn, err := grpc.NewClient(srv.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallSendMsgSize(64<<20)))
			if err != nil {
				return ingestResult{}, err
			}
			defer conn.Close()
			method := "/headroom.v1.Ingest/Write"
			if protocol == "otlp" {
				method = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
			}
			cl.send = func(body []byte) error {
				var out []byte
				return conn.Invoke(context.Background(), method, body, &out)
			}
		case "remote_write", "remote_write_2", "remote_write_2_hist":
			ctype := "application/x-protobuf"
			v2 := protocol != "remote_write"
			if v2 {
				ctype += ";proto=io.prometheus.write.v2.Request"
			}
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DialContext: (&net.Dialer{}).DialContext}}
			var buf []byte
			cl.send = func(body []byte) error {
				buf = snappy.Encode(buf[:cap(buf)], body)
				req, _ := http.NewRequest("POST", srv.httpURL+"/api/v1/write", bytes.NewReader(buf))
				req.Header.Set("Content-Encoding", "snappy")
				req.Header.Set("Content-Type", ctype)
				req.Header.Set("X-Prometheus-Remote-Write-Version", map[bool]string{false: "0.1.0", true: "2.0.0"}[v2])
				resp, err := hc.Do(req)
				if err != nil {
					return err
				}
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					return fmt.Errorf("remote write: %d %s", resp.StatusCode, msg)
				}
				return nil
			}
		}
		cs[c] = cl
	}
	perReq := int64(sh.series * sh.perSeries)
	if protocol == "remote_write_2_hist" {
		perReq /= histPerSeries // histograms, not samples
	}
	var reqNo atomic.Int64
	next := func(cl *client) []byte {
		cl.body.patch(base + reqNo.Add(1)*sh.advance)
		return cl.body.b
	}
	// Warm-up: every client's series exist before the clock starts.
	for _, cl := range cs {
		if err := cl.send(next(cl)); err != nil {
			return ingestResult{}, err
		}
	}
	cpu0, m0 := srv.cpu(), srv.mallocs()
	start := time.Now()
	profDone := make(chan error, 1)
	if profile != "" {
		go func() { profDone <- fetchProfile(srv.httpURL, dur, profile) }()
	} else {
		profDone <- nil
	}
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for _, cl := range cs {
		wg.Add(1)
		go func(cl *client) {
			defer wg.Done()
			for time.Since(start) < dur {
				body := next(cl)
				t := time.Now()
				if err := cl.send(body); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				cl.lat = append(cl.lat, time.Since(t))
				cl.n += perReq
			}
		}(cl)
	}
	wg.Wait()
	el := time.Since(start)
	cpu1, m1 := srv.cpu(), srv.mallocs()
	if err := <-profDone; err != nil {
		return ingestResult{}, err
	}
	if profile != "" {
		if err := fetch(srv.httpURL+"/debug/pprof/allocs", strings.TrimSuffix(profile, ".pprof")+".allocs.pprof"); err != nil {
			return ingestResult{}, err
		}
	}
	if err, ok := firstErr.Load().(error); ok {
		return ingestResult{}, err
	}
	var total int64
	var lat []time.Duration
	for _, cl := range cs {
		total += cl.n
		lat = append(lat, cl.lat...)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return ingestResult{
		samplesPerSec:   float64(total) / el.Seconds(),
		cpuPerM:         (cpu1 - cpu0).Seconds() / float64(total) * 1e6,
		allocsPerSample: (m1 - m0) / float64(total),
		p50:             q(0.50),
		p99:             q(0.99),
	}, nil
}

// benchIngest runs every protocol x shape x clients combination; only, if
// set, picks one ("grpc/scrape/4"), and profileDir saves a server CPU
// profile of each run there.
func benchIngest(bin string, dur time.Duration, only, profileDir string) {
	bin = buildServer(bin)
	best := map[string]float64{}
	for _, sh := range shapes {
		for _, protocol := range []string{"grpc", "remote_write", "remote_write_2", "otlp", "remote_write_2_hist"} {
			for _, clients := range []int{1, 2, 4, 16} {
				key := fmt.Sprintf("%s/%s/%d", protocol, sh.name, clients)
				if only != "" && only != key || only == "" && clients == 2 {
					continue // 2 clients: on request (1,000 series of histograms)
				}
				if only == "" && protocol == "remote_write_2_hist" && (sh.name != "scrape" || clients == 16) {
					continue // histograms: the scrape shape is enough
				}
				prof := ""
				if profileDir != "" {
					prof = filepath.Join(profileDir, strings.ReplaceAll(key, "/", "-")+".pprof")
				}
				r, err := runIngest(bin, protocol, sh, clients, dur, prof)
				if err != nil {
					fatal(fmt.Errorf("ingest %s %s %d clients: %w", protocol, sh.name, clients, err))
				}
				name := fmt.Sprintf("%s %s, %d clients", protocol, sh.name, clients)
				record("ingest", name+": samples/s", r.samplesPerSec, "samples/s", "", nil)
				record("ingest", name+": server CPU", r.cpuPerM, "s/M samples", "", nil)
				record("ingest", name+": server allocs", r.allocsPerSample, "allocs/sample", "", nil)
				record("ingest", name+": ack p50", float64(r.p50.Microseconds())/1000, "ms", "", nil)
				record("ingest", name+": ack p99", float64(r.p99.Microseconds())/1000, "ms", "", nil)
				if sh.name == "scrape" {
					best[protocol] = max(best[protocol], r.samplesPerSec)
				}
			}
		}
	}
	if only != "" {
		return
	}
	record("ingest", "grpc scrape, best of 1/4/16 clients", best["grpc"], "samples/s", ">= 1M", boolp(best["grpc"] >= 1e6))
	ratio := best["remote_write"] / best["grpc"]
	record("ingest", "remote-write / grpc (scrape, best)", ratio, "ratio", ">= 0.70", boolp(ratio >= 0.7))
}
