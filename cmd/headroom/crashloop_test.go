package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	prompb "github.com/headroomdb/headroom/proto/prometheus"
)

// The crash loop (issue 6, item 1): the real server in a child process,
// writers over gRPC and remote-write at once, SIGKILL at a random moment,
// restart, and a check of every batch. `make test` runs a few cycles;
// `make soak` sets HEADROOM_SOAK_CYCLES for the long run.

const (
	loopWritersPerProto = 3
	loopSeries          = 5 // series a batch writes
	loopSamples         = 4 // samples of each series in a batch
	loopCycleSpan       = 2_000_000
)

// loopBatch names one write request: protocol (0 gRPC, 1 remote-write),
// writer, cycle and batch number.
type loopBatch struct{ proto, writer, cycle, batch int }

func (b loopBatch) labels(s int) []string {
	return []string{"__name__", "loop", "proto", strconv.Itoa(b.proto), "writer", strconv.Itoa(b.writer),
		"cycle", strconv.Itoa(b.cycle), "s", strconv.Itoa(s)}
}

// sample k of series s: the times grow with the batch so that each series
// is written in order; the values are distinct and not round, so that a
// changed bit shows.
func (b loopBatch) sample(base int64, s, k int) (int64, float64) {
	t := base + int64(b.cycle)*loopCycleSpan + int64(b.batch*loopSamples+k)
	v := float64(((b.proto*10+b.writer)*1000+b.cycle)*1_000_000+b.batch*100+s*10+k) + 1.0/3
	return t, v
}

func (b loopBatch) grpcRequest(base int64) *headroomv1.WriteRequest {
	req := &headroomv1.WriteRequest{}
	for s := 0; s < loopSeries; s++ {
		ser := &headroomv1.Series{}
		ls := b.labels(s)
		for i := 0; i < len(ls); i += 2 {
			ser.Labels = append(ser.Labels, &headroomv1.Label{Name: ls[i], Value: ls[i+1]})
		}
		for k := 0; k < loopSamples; k++ {
			t, v := b.sample(base, s, k)
			ser.Samples = append(ser.Samples, &headroomv1.Sample{TimestampMs: t, Value: v})
		}
		req.Series = append(req.Series, ser)
	}
	return req
}

func (b loopBatch) remoteWriteBody(base int64) []byte {
	req := &prompb.WriteRequest{}
	for s := 0; s < loopSeries; s++ {
		ts := &prompb.TimeSeries{}
		ls := b.labels(s)
		for i := 0; i < len(ls); i += 2 {
			ts.Labels = append(ts.Labels, &prompb.Label{Name: ls[i], Value: ls[i+1]})
		}
		for k := 0; k < loopSamples; k++ {
			t, v := b.sample(base, s, k)
			ts.Samples = append(ts.Samples, &prompb.Sample{Timestamp: t, Value: v})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	return remoteWriteBodyOf(req)
}

// loopResult is what the writers of one cycle got: the acknowledged
// batches, and the last batch each writer sent (acknowledged or not).
type loopResult struct {
	mu    sync.Mutex
	acked map[loopBatch]bool
	sent  map[[2]int]int // proto, writer -> batches sent
}

// writeUntilKilled runs the writers of one cycle until the server dies.
func writeUntilKilled(c *child, cycle int, base int64, res *loopResult) {
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	client := headroomv1.NewIngestClient(conn)
	hc := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for p := 0; p < 2; p++ {
		for w := 0; w < loopWritersPerProto; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for b := 0; b < loopCycleSpan/loopSamples; b++ {
					batch := loopBatch{p, w, cycle, b}
					res.mu.Lock()
					res.sent[[2]int{p, w}] = b + 1
					res.mu.Unlock()
					ok := false
					if p == 0 {
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						_, err := client.Write(ctx, batch.grpcRequest(base))
						cancel()
						ok = err == nil
					} else {
						req, _ := http.NewRequest("POST", c.httpURL+"/api/v1/write", bytes.NewReader(batch.remoteWriteBody(base)))
						req.Header.Set("Content-Encoding", "snappy")
						req.Header.Set("Content-Type", "application/x-protobuf")
						resp, err := hc.Do(req)
						if err == nil {
							resp.Body.Close()
							ok = resp.StatusCode/100 == 2
						}
					}
					if !ok {
						return // the server is gone: this batch is not acknowledged
					}
					res.mu.Lock()
					res.acked[batch] = true
					res.mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
}

// storedLoop reads every sample of cycle's series through the HTTP query
// API, as series label string -> time -> value.
func storedLoop(t *testing.T, httpURL string, cycle int) map[string]map[int64]float64 {
	t.Helper()
	q := url.Values{"query": {fmt.Sprintf(`loop{cycle="%d"}[10y]`, cycle)}, "time": {strconv.FormatInt(time.Now().Unix()+60, 10)}}
	resp, err := http.Get(httpURL + "/api/v1/query?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Values [][2]json.RawMessage
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Status != "success" {
		t.Fatalf("query of cycle %d: %v %s %s", cycle, err, body.Status, body.Error)
	}
	out := map[string]map[int64]float64{}
	for _, r := range body.Data.Result {
		key := fmt.Sprintf("%s/%s/%s", r.Metric["proto"], r.Metric["writer"], r.Metric["s"])
		m := map[int64]float64{}
		for _, p := range r.Values {
			var ts float64
			var vs string
			if err := json.Unmarshal(p[0], &ts); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(p[1], &vs); err != nil {
				t.Fatal(err)
			}
			v, err := strconv.ParseFloat(vs, 64)
			if err != nil {
				t.Fatal(err)
			}
			m[int64(ts*1000+0.5)] = v
		}
		out[key] = m
	}
	return out
}

// checkLoopCycle checks one cycle's batches against what the server
// answers: every acknowledged batch whole with its exact values, every
// other batch whole or absent. It returns the acknowledged samples and
// the ones lost.
func checkLoopCycle(t *testing.T, httpURL string, cycle int, base int64, res *loopResult) (acked, lost int) {
	t.Helper()
	got := storedLoop(t, httpURL, cycle)
	for pw, sent := range res.sent {
		for b := 0; b < sent; b++ {
			batch := loopBatch{pw[0], pw[1], cycle, b}
			present := 0
			for s := 0; s < loopSeries; s++ {
				m := got[fmt.Sprintf("%d/%d/%d", pw[0], pw[1], s)]
				for k := 0; k < loopSamples; k++ {
					ts, v := batch.sample(base, s, k)
					if gv, ok := m[ts]; ok {
						if gv != v {
							t.Errorf("cycle %d %+v series %d sample %d: value %v, want %v", cycle, batch, s, k, gv, v)
						}
						present++
					}
				}
			}
			all := loopSeries * loopSamples
			if res.acked[batch] {
				acked += all
				lost += all - present
			} else if present != 0 && present != all {
				t.Errorf("cycle %d: unacknowledged batch %+v is half applied: %d of %d samples", cycle, batch, present, all)
			}
		}
	}
	return acked, lost
}

// TestCrashLoop kills the server with SIGKILL at random moments while six
// clients write over gRPC and remote-write, restarts it on the same
// directory each time, and checks after each restart that the directory
// opened and that every acknowledged sample of the cycle before is there
// with its exact value.
func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes; skipped with -short")
	}
	cycles := 3
	if s := os.Getenv("HEADROOM_SOAK_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("HEADROOM_SOAK_CYCLES=%q: want a positive number", s)
		}
		cycles = n
	}
	dir := filepath.Join(t.TempDir(), "data")
	base := time.Now().Add(-24 * time.Hour).Truncate(time.Second).UnixMilli()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 6))
	var results []*loopResult
	totalAcked, totalLost := 0, 0
	start := time.Now()
	for cycle := 0; cycle <= cycles; cycle++ {
		c := startChild(t, dir)
		if c.addr == "" {
			t.Fatalf("cycle %d: the server did not start after kill -9: %v\n%s", cycle, <-c.exited, c.log())
		}
		// Every cycle so far, not only the last: a later recovery must not
		// lose what an earlier one kept.
		totalAcked, totalLost = 0, 0
		for prev, res := range results {
			a, l := checkLoopCycle(t, c.httpURL, prev, base, res)
			totalAcked += a
			totalLost += l
		}
		if totalLost > 0 {
			c.cmd.Process.Kill()
			t.Fatalf("after %d kills: %d of %d acknowledged samples lost", cycle, totalLost, totalAcked)
		}
		if cycle == cycles {
			c.cmd.Process.Signal(syscall.SIGTERM)
			if err := <-c.exited; err != nil {
				t.Fatalf("server exited with %v on SIGTERM:\n%s", err, c.log())
			}
			break
		}
		res := &loopResult{acked: map[loopBatch]bool{}, sent: map[[2]int]int{}}
		results = append(results, res)
		done := make(chan struct{})
		go func() { writeUntilKilled(c, cycle, base, res); close(done) }()
		// From the first acknowledgement on (a slow machine may take a
		// while to connect and fsync), a random moment of the writing.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			res.mu.Lock()
			n := len(res.acked)
			res.mu.Unlock()
			if n > 0 {
				break
			}
		}
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.exited
		<-done
		if len(res.acked) == 0 {
			t.Fatalf("cycle %d: no batch acknowledged before the kill:\n%s", cycle, c.log())
		}
	}
	t.Logf("crash loop: %d kill -9 cycles in %v, %d samples acknowledged, %d lost, every unacknowledged batch whole or absent",
		cycles, time.Since(start).Round(time.Second), totalAcked, totalLost)
}
