package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	prompb "github.com/headroomdb/headroom/proto/prometheus"
)

// procStatus reads a field of /proc/PID/status in bytes (VmRSS, VmHWM).
func procStatus(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// overloadCounts are the answers of one kind of client under overload.
type overloadCounts struct {
	ok, busy, other atomic.Int64
	noRetryAfter    atomic.Int64
	samples         atomic.Int64 // acknowledged samples (writers)
	firstOther      atomic.Pointer[string]
}

func (c *overloadCounts) unexpected(msg string) {
	c.other.Add(1)
	c.firstOther.CompareAndSwap(nil, &msg)
}

// answer counts one HTTP answer, okCode being success; a 429 must carry
// Retry-After. It reports whether the request was accepted.
func (c *overloadCounts) answer(what string, resp *http.Response, err error, okCode int) bool {
	if err != nil {
		c.unexpected(err.Error())
		return false
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case okCode:
		c.ok.Add(1)
		return true
	case http.StatusTooManyRequests:
		c.busy.Add(1)
		if resp.Header.Get("Retry-After") == "" {
			c.noRetryAfter.Add(1)
		}
	default:
		c.unexpected(fmt.Sprintf("%s %d: %s", what, resp.StatusCode, msg))
	}
	return false
}

// untilServing polls probe every 50 ms until it succeeds and returns how
// long after stopped that was; 30 s after stopped the test fails.
func untilServing(t *testing.T, stopped time.Time, probe func() error) time.Duration {
	t.Helper()
	for {
		err := probe()
		if err == nil {
			return time.Since(stopped)
		}
		// A hang guard: how fast it recovers is a figure for make soak,
		// and a loaded machine took a minute.
		if time.Since(stopped) > 3*time.Minute {
			t.Fatalf("not serving 3 minutes after the load stopped: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watchRSS samples the resident memory of process pid until stop is
// closed, and returns its peak (wg counts the sampler).
func watchRSS(pid int, stop <-chan struct{}, wg *sync.WaitGroup) *atomic.Int64 {
	var peak atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if rss := procStatus(pid, "VmRSS"); rss > peak.Load() {
				peak.Store(rss)
			}
		}
	}()
	return &peak
}

func (c *overloadCounts) String() string {
	s := fmt.Sprintf("%d accepted, %d refused busy, %d other", c.ok.Load(), c.busy.Load(), c.other.Load())
	if m := c.firstOther.Load(); m != nil {
		s += " (first: " + *m + ")"
	}
	return s
}

const (
	overloadMemory  = 512 << 20
	overloadWriters = 200 // a quarter of them over gRPC
	overloadQueries = 50
	overloadSeries  = 50 // a write request's series
	overloadSamples = 10 // of each series
)

func overloadBody(w, b int, base int64) []byte {
	req := &prompb.WriteRequest{}
	for s := 0; s < overloadSeries; s++ {
		ts := &prompb.TimeSeries{Labels: []*prompb.Label{{Name: "__name__", Value: "load"}, {Name: "s", Value: strconv.Itoa(s)}, {Name: "w", Value: strconv.Itoa(w)}}}
		for k := 0; k < overloadSamples; k++ {
			ts.Samples = append(ts.Samples, &prompb.Sample{Timestamp: base + int64(b*overloadSamples+k)*100, Value: float64(k)})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	return remoteWriteBodyOf(req)
}

// TestOverload drives the real server with 200 concurrent writers (remote
// write and gRPC) and 50 concurrent heavy queries, far more than its
// slots admit, for a few seconds. It must shed the excess with 429 /
// ResourceExhausted and a retry delay (nothing else: no 5xx, no reset
// connections), stay within its memory budget, keep every write it
// acknowledged, and serve again as soon as the load stops.
func TestOverload(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process; skipped with -short")
	}
	loadTime := 3 * time.Second
	dir := filepath.Join(t.TempDir(), "data")
	c := startChild(t, dir, "--memory-limit", strconv.Itoa(overloadMemory), "--max-concurrent-writes", "4", "--write-queue-timeout", "100ms",
		"--max-concurrent-queries", "2", "--query-queue-timeout", "100ms")
	if c.addr == "" {
		t.Fatalf("server exited: %v\n%s", <-c.exited, c.log())
	}
	defer c.cmd.Process.Kill()
	pid := c.cmd.Process.Pid
	base := time.Now().Add(-2 * time.Hour).UnixMilli()

	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := headroomv1.NewIngestClient(conn)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: overloadWriters + overloadQueries}}

	var writes, queries overloadCounts
	stop := make(chan struct{})
	var wg sync.WaitGroup
	peak := watchRSS(pid, stop, &wg)
	for w := 0; w < overloadWriters; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; ; b++ {
				select {
				case <-stop:
					return
				default:
				}
				if w%4 == 0 {
					overloadGRPC(client, w, b, base, &writes)
					continue
				}
				req, _ := http.NewRequest("POST", c.httpURL+"/api/v1/write", bytes.NewReader(overloadBody(w, b, base)))
				req.Header.Set("Content-Encoding", "snappy")
				req.Header.Set("Content-Type", "application/x-protobuf")
				resp, err := hc.Do(req)
				if writes.answer("remote write", resp, err, http.StatusNoContent) {
					writes.samples.Add(overloadSeries * overloadSamples)
				}
			}
		}()
	}
	q := url.Values{"query": {`sum by (s) (rate(load[5m])) / on (s) group_left max by (s) (max_over_time(load[10m]))`},
		"start": {strconv.FormatInt(base/1000, 10)}, "end": {strconv.FormatInt(base/1000+7200, 10)}, "step": {"5"}}
	for i := 0; i < overloadQueries; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := hc.Get(c.httpURL + "/api/v1/query_range?" + q.Encode())
				queries.answer("query", resp, err, http.StatusOK)
			}
		}()
	}
	time.Sleep(loadTime)
	close(stop)
	stopped := time.Now()
	wg.Wait()

	// Recovery: one write and one query, retried until they pass.
	recovered := untilServing(t, stopped, func() error {
		if _, err := client.Write(context.Background(), &headroomv1.WriteRequest{Series: []*headroomv1.Series{{
			Labels:  []*headroomv1.Label{{Name: "__name__", Value: "after_load"}},
			Samples: []*headroomv1.Sample{{TimestampMs: time.Now().UnixMilli(), Value: 1}}}}}); err != nil {
			return err
		}
		if code, body := httpGet(t, c.httpURL+"/api/v1/query?query=after_load"); code != 200 || !strings.Contains(body, `"1"`) {
			return fmt.Errorf("query after the load: %d %s", code, body)
		}
		return nil
	})
	hwm := procStatus(pid, "VmHWM")

	// Every acknowledged write is stored.
	code, body := httpGet(t, c.httpURL+"/api/v1/query?"+url.Values{"query": {"sum(count_over_time(load[1d]))"}}.Encode())
	want := fmt.Sprintf(`"%d"`, writes.samples.Load())
	if code != 200 || !strings.Contains(body, want) {
		t.Errorf("stored samples: %d %s, want %s acknowledged", code, body, want)
	}

	t.Logf("overload for %v: writes %v; queries %v; peak RSS %d MiB (high-water mark %d MiB) against a budget of %d MiB; serving again %v after the load stopped",
		loadTime, &writes, &queries, peak.Load()>>20, hwm>>20, overloadMemory>>20, recovered.Round(time.Millisecond))
	for name, cnt := range map[string]*overloadCounts{"writes": &writes, "queries": &queries} {
		if cnt.ok.Load() == 0 || cnt.busy.Load() == 0 {
			t.Errorf("%s: %v: want some accepted and some refused", name, cnt)
		}
		if cnt.other.Load() != 0 {
			t.Errorf("%s: %v: want only accepted or refused busy", name, cnt)
		}
		if n := cnt.noRetryAfter.Load(); n != 0 {
			t.Errorf("%s: %d refusals without Retry-After", name, n)
		}
	}
	// The race detector multiplies the memory of every goroutine and
	// allocation (5-10x): under it, the budget cannot be held to.
	if !raceBuild && hwm > overloadMemory {
		t.Errorf("peak RSS %d MiB over the budget of %d MiB", hwm>>20, overloadMemory>>20)
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-c.exited; err != nil {
		t.Fatalf("server exited with %v after the load:\n%s", err, c.log())
	}
}

// overloadGRPC sends one write over gRPC and counts the answer.
func overloadGRPC(client headroomv1.IngestClient, w, b int, base int64, cnt *overloadCounts) {
	req := &headroomv1.WriteRequest{}
	for s := 0; s < overloadSeries; s++ {
		ser := &headroomv1.Series{Labels: []*headroomv1.Label{{Name: "__name__", Value: "load"}, {Name: "s", Value: strconv.Itoa(s)}, {Name: "w", Value: strconv.Itoa(w)}}}
		for k := 0; k < overloadSamples; k++ {
			ser.Samples = append(ser.Samples, &headroomv1.Sample{TimestampMs: base + int64(b*overloadSamples+k)*100, Value: float64(k)})
		}
		req.Series = append(req.Series, ser)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := client.Write(ctx, req)
	st := status.Convert(err)
	switch st.Code() {
	case codes.OK:
		cnt.ok.Add(1)
		cnt.samples.Add(overloadSeries * overloadSamples)
	case codes.ResourceExhausted:
		cnt.busy.Add(1)
		retry := false
		for _, d := range st.Details() {
			if _, ok := d.(*errdetails.RetryInfo); ok {
				retry = true
			}
		}
		if !retry {
			cnt.noRetryAfter.Add(1)
		}
	default:
		cnt.unexpected(fmt.Sprintf("gRPC write: %v", err))
	}
}
