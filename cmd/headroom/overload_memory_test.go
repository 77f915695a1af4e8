package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	prompb "github.com/headroomdb/headroom/proto/prometheus"
)

// TestOverloadMemory: heavy queries, far more than a small --memory-limit
// holds, against the real server. The budget must hold (peak RSS under
// it, outside the race detector): queries are admitted, refused with 429
// while the heap is over the budget's share, or refused as too large for
// their share of the budget (422); never a 5xx, never a killed process;
// and the server answers again once the load stops.
func TestOverloadMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process; skipped with -short")
	}
	const budget = 224 << 20 // 128 MiB for Go once Pebble's 96 MiB are set aside
	c := startChild(t, filepath.Join(t.TempDir(), "data"), "--memory-limit", strconv.Itoa(budget),
		"--max-concurrent-queries", "4", "--query-queue-timeout", "200ms")
	if c.addr == "" {
		t.Fatalf("server exited: %v\n%s", <-c.exited, c.log())
	}
	defer c.cmd.Process.Kill()
	pid := c.cmd.Process.Pid
	base := time.Now().Add(-3 * time.Hour).UnixMilli()
	// 200 series of 1,000 samples at 10 s: each query loads 200,000
	// samples, under its share of the budget (262,144).
	for batch := 0; batch < 4; batch++ {
		req := &prompb.WriteRequest{}
		for s := 0; s < 50; s++ {
			ts := &prompb.TimeSeries{Labels: []*prompb.Label{{Name: "__name__", Value: "mem"}, {Name: "s", Value: strconv.Itoa(batch*50 + s)}}}
			for k := 0; k < 1000; k++ {
				ts.Samples = append(ts.Samples, &prompb.Sample{Timestamp: base + int64(k)*10_000, Value: float64(k%97) + float64(s)/7})
			}
			req.Timeseries = append(req.Timeseries, ts)
		}
		if code, msg := postRemoteWrite(t, c.httpURL, "", remoteWriteBodyOf(req)); code != 204 {
			t.Fatalf("preload: %d %s", code, msg)
		}
	}
	queries := []url.Values{
		{"query": {"mem[3h]"}, "time": {strconv.FormatInt(base/1000+10_000, 10)}},
		{"query": {"sum by (s) (rate(mem[1m]))"}, "start": {strconv.FormatInt(base/1000, 10)}, "end": {strconv.FormatInt(base/1000+10_000, 10)}, "step": {"10"}},
		{"query": {"quantile_over_time(0.9, mem[10m])"}, "start": {strconv.FormatInt(base/1000, 10)}, "end": {strconv.FormatInt(base/1000+10_000, 10)}, "step": {"10"}},
	}
	var ok, busy, memBusy, tooLarge, other atomic.Int64
	var firstOther atomic.Pointer[string]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	peak := watchRSS(pid, stop, &wg)
	hc := &http.Client{Timeout: 60 * time.Second}
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				q := queries[(i+j)%len(queries)]
				path := "/api/v1/query_range?"
				if q.Has("time") {
					path = "/api/v1/query?"
				}
				resp, err := hc.Get(c.httpURL + path + q.Encode())
				if err != nil {
					msg := err.Error()
					firstOther.CompareAndSwap(nil, &msg)
					other.Add(1)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200:
					ok.Add(1)
				case resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "":
					busy.Add(1)
					if strings.Contains(string(body), "--memory-limit") {
						memBusy.Add(1)
					}
				case resp.StatusCode == 422 && strings.Contains(string(body), "too large"):
					tooLarge.Add(1)
				default:
					msg := fmt.Sprintf("%d %.200s", resp.StatusCode, body)
					firstOther.CompareAndSwap(nil, &msg)
					other.Add(1)
				}
			}
		}()
	}
	time.Sleep(4 * time.Second)
	close(stop)
	stopped := time.Now()
	wg.Wait()
	recovered := untilServing(t, stopped, func() error {
		if code, _ := httpGet(t, c.httpURL+"/api/v1/query?query=count(last_over_time(mem[10m]))&time="+strconv.FormatInt(base/1000+10_000, 10)); code != 200 {
			return fmt.Errorf("query answered %d", code)
		}
		return nil
	})
	hwm := procStatus(pid, "VmHWM")
	_, metrics := httpGet(t, c.httpURL+"/metrics")
	t.Logf("heavy queries for 4 s on a %d MiB budget: %d answered, %d refused busy (%d of them over the memory share), %d refused as too large, %d other; peak RSS %d MiB (high-water mark %d MiB); answering again %v after the load",
		budget>>20, ok.Load(), busy.Load(), memBusy.Load(), tooLarge.Load(), other.Load(), peak.Load()>>20, hwm>>20, recovered.Round(time.Millisecond))
	if other.Load() != 0 {
		t.Errorf("%d answers other than 200, 429 and 422 too large (first: %s)", other.Load(), *firstOther.Load())
	}
	if ok.Load() == 0 || busy.Load() == 0 {
		t.Errorf("want some queries answered and some refused: %d and %d", ok.Load(), busy.Load())
	}
	if !strings.Contains(metrics, "headroom_memory_limit_bytes 1.34217728e+08") {
		t.Errorf("/metrics does not show the Go budget of 128 MiB")
	}
	// The race detector multiplies memory: the budget holds only without it.
	if !raceBuild && hwm > budget {
		t.Errorf("peak RSS %d MiB over the budget of %d MiB", hwm>>20, budget>>20)
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-c.exited; err != nil {
		t.Fatalf("exit: %v\n%s", err, c.log())
	}
}
