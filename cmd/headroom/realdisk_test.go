package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	prompb "github.com/headroomdb/headroom/proto/prometheus"
)

// smallDisk mounts a tmpfs of size bytes for the test and returns its
// path, or skips the test saying why it cannot: a mount needs root (and
// a container allowed to mount).
func smallDisk(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small real filesystem needs root; the errorfs tests cover the code paths")
	}
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v); the errorfs tests cover the code paths", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// diskFillWriters write random values (they do not compress) over gRPC
// and remote write until stop is closed, and count every answer by its
// code: only success, Unavailable / 503 and ResourceExhausted / 429 are
// allowed. acked counts the samples acknowledged per writer.
type diskFillWriters struct {
	answers sync.Map // code string -> *atomic.Int64
	acked   [4]atomic.Int64
	wg      sync.WaitGroup
	// first and last: the span of the timestamps sent, which the check
	// counts over (at its end, not at the wall clock).
	first int64
	last  atomic.Int64
}

func (w *diskFillWriters) count(code string) {
	v, _ := w.answers.LoadOrStore(code, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (w *diskFillWriters) get(code string) int64 {
	if v, ok := w.answers.Load(code); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

const fillSeries, fillSamples = 500, 20

// start starts the writers on c's current addresses: a server that
// reopens its data directory serves again on new ports when it was given
// port 0.
func (w *diskFillWriters) start(c *child, base int64, stop chan struct{}) {
	for k := range w.acked {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			r := rand.New(rand.NewPCG(uint64(k), 7))
			// Hang guards: a request may wait in the port's backlog
			// while a reopen replays the log.
			hc := &http.Client{Timeout: startGuard}
			var conn *grpc.ClientConn
			var ic headroomv1.IngestClient
			var addr string
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			// A refused attempt is sent again with the same timestamps
			// (nothing of it was stored): only the writes the server took,
			// or may have taken, move a writer's time on, so that a long
			// refusal does not carry the data across days and past the
			// wall clock.
			step := 1
			for batch := 0; ; batch += step {
				step = 1
				select {
				case <-stop:
					return
				default:
				}
				grpcAddr, httpURL := c.current()
				if grpcAddr != addr {
					if conn != nil {
						conn.Close()
					}
					var err error
					if conn, err = grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
						panic(err)
					}
					ic, addr = headroomv1.NewIngestClient(conn), grpcAddr
				}
				ts := base + int64(batch*fillSamples)*1000
				for end := ts + fillSamples*1000; ; {
					if old := w.last.Load(); old >= end || w.last.CompareAndSwap(old, end) {
						break
					}
				}
				if k%2 == 0 {
					req := &headroomv1.WriteRequest{}
					for s := 0; s < fillSeries; s++ {
						ser := &headroomv1.Series{Labels: []*headroomv1.Label{{Name: "__name__", Value: "fill"}, {Name: "w", Value: fmt.Sprint(k)}, {Name: "s", Value: fmt.Sprint(s)}}}
						for i := 0; i < fillSamples; i++ {
							ser.Samples = append(ser.Samples, &headroomv1.Sample{TimestampMs: ts + int64(i)*1000, Value: r.Float64()})
						}
						req.Series = append(req.Series, ser)
					}
					ctx, cancel := context.WithTimeout(context.Background(), startGuard)
					_, err := ic.Write(ctx, req)
					cancel()
					w.count(status.Code(err).String())
					if c := status.Code(err); c == codes.Unavailable || c == codes.ResourceExhausted {
						step = 0
					}
					if err == nil {
						w.acked[k].Add(fillSeries * fillSamples)
					}
				} else {
					req := &prompb.WriteRequest{}
					for s := 0; s < fillSeries; s++ {
						ser := &prompb.TimeSeries{Labels: []*prompb.Label{{Name: "__name__", Value: "fill"}, {Name: "s", Value: fmt.Sprint(s)}, {Name: "w", Value: fmt.Sprint(k)}}}
						for i := 0; i < fillSamples; i++ {
							ser.Samples = append(ser.Samples, &prompb.Sample{Timestamp: ts + int64(i)*1000, Value: r.Float64()})
						}
						req.Timeseries = append(req.Timeseries, ser)
					}
					hreq, _ := http.NewRequest("POST", httpURL+"/api/v1/write", bytes.NewReader(remoteWriteBodyOf(req)))
					hreq.Header.Set("Content-Encoding", "snappy")
					resp, err := hc.Do(hreq)
					if err != nil {
						w.count("http error: " + err.Error())
						time.Sleep(100 * time.Millisecond)
						continue
					}
					resp.Body.Close()
					w.count(fmt.Sprint(resp.StatusCode))
					if resp.StatusCode == 503 || resp.StatusCode == 429 {
						step = 0
					}
					if resp.StatusCode == 204 {
						w.acked[k].Add(fillSeries * fillSamples)
					}
				}
			}
		}()
	}
}

// TestServeRealDiskFull fills a real (tmpfs) filesystem under the server
// with gRPC and remote-write writers: writes must be refused with
// Unavailable / 503, never crash the process; queries go on; once space is
// freed, writes are taken again; SIGTERM ends the server in time; and
// every acknowledged sample is there after a restart.
func TestServeRealDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process; skipped with -short")
	}
	for _, tc := range []struct {
		name, minFree string
		termWhileFull bool // SIGTERM before space is freed
	}{{"check off", "0", false}, {"default reserve", "default", false}, {"SIGTERM while full", "0", true}} {
		minFree := tc.minFree
		t.Run(tc.name, func(t *testing.T) {
			// 80 MiB free, with the check off or before the default
			// reserve of 256 MiB refuses writes.
			size := int64(128 << 20)
			args := []string{"--checkpoint-interval", "2s", "--shutdown-timeout", "10s"}
			if minFree == "default" {
				size = 384 << 20
			} else {
				args = append(args, "--min-free-disk", minFree)
			}
			disk := smallDisk(t, size)
			// Ballast to free once the disk is full.
			ballast := filepath.Join(disk, "ballast")
			if err := os.WriteFile(ballast, make([]byte, 48<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(disk, "data")
			c := startChild(t, dir, args...)
			if c.addr == "" {
				t.Fatalf("server exited: %v\n%s", <-c.exited, c.log())
			}
			defer c.cmd.Process.Kill()
			base := time.Now().Add(-20 * time.Hour).Truncate(time.Hour).UnixMilli()
			w := &diskFillWriters{}
			stop := make(chan struct{})
			w.first = base
			w.start(c, base, stop)
			// Until writes have been refused for a while, or a hang guard.
			deadline := time.Now().Add(3 * time.Minute)
			for time.Now().Before(deadline) && w.get("Unavailable")+w.get("503") < 20 {
				select {
				case err := <-c.exited:
					close(stop)
					t.Fatalf("the server exited while the disk filled: %v\n%s", err, c.log())
				case <-time.After(200 * time.Millisecond):
				}
			}
			refused := w.get("Unavailable") + w.get("503")
			if refused < 20 {
				close(stop)
				w.wg.Wait()
				t.Fatalf("the disk did not fill in 3 minutes (answers %v)", w.summary())
			}
			// Queries go on. A query may meet the moment the server
			// reopens its data directory (it does once the released
			// ballast lets the disk take writes): the connection is
			// closed under it, and the same query is asked again.
			var qerr error
			for attempt := 0; attempt < 5; attempt++ {
				_, httpURL := c.current()
				var resp *http.Response
				if resp, qerr = http.Get(httpURL + "/api/v1/query?query=count(fill)"); qerr != nil {
					t.Logf("query on a full disk, attempt %d: %v", attempt+1, qerr)
					time.Sleep(time.Second)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("query on a full disk: %d %s", resp.StatusCode, body)
				}
				break
			}
			if qerr != nil {
				t.Errorf("query on a full disk: %v", qerr)
			}
			if tc.termWhileFull {
				start := time.Now()
				c.cmd.Process.Signal(syscall.SIGTERM)
				select {
				case err := <-c.exited:
					// A clean stop cannot checkpoint on a full disk: it
					// says so and exits 1; the log has everything.
					t.Logf("exit on a full disk after %v: %v", time.Since(start).Round(time.Millisecond), err)
				case <-time.After(60 * time.Second):
					t.Fatalf("SIGTERM on a full disk did not end the server in 60 s (--shutdown-timeout 10s)\n%s", c.stacks())
				}
				close(stop)
				w.wg.Wait()
				if err := os.Remove(ballast); err != nil {
					t.Fatal(err)
				}
				checkAcked(t, dir, args, w)
				return
			}
			// Space comes back: writes are taken again.
			if err := os.Remove(ballast); err != nil {
				t.Fatal(err)
			}
			okBefore := w.get("OK") + w.get("204")
			// A reopen replays the log (startGuard says how long that
			// may take).
			for deadline := time.Now().Add(startGuard); w.get("OK")+w.get("204") < okBefore+10; time.Sleep(200 * time.Millisecond) {
				if time.Now().After(deadline) {
					close(stop)
					t.Fatalf("writes not taken again %v after space was freed (answers %v)\n%s", startGuard, w.summary(), c.stacks())
				}
			}
			close(stop)
			w.wg.Wait()
			t.Logf("answers: %v", w.summary())
			for _, l := range strings.Split(c.log(), "\n") {
				if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
					t.Log(l)
				}
			}
			// A reopen closes the HTTP server's idle keep-alive
			// connections: a request sent on one just then is reset, or
			// its body meets a closed socket (broken pipe); a client
			// retries it, as it would any connection error. At most one
			// such reset per reopen and writer.
			c.mu.Lock()
			reopens := len(c.serving) - 1
			for _, addrs := range c.serving[1:] {
				if addrs[0] != c.serving[0][0] || addrs[1] != c.serving[0][1] {
					t.Errorf("reopened on %v, not on the ports it had (%v)", addrs, c.serving[0])
				}
			}
			c.mu.Unlock()
			// With the reserve, writes are refused before the disk fails
			// one; without it, the log's write fails and the directory is
			// reopened once space is back.
			if failed := strings.Contains(c.log(), "no space left on device"); failed != (minFree == "0") || failed != (reopens > 0) {
				t.Errorf("disk full failure %v, reopened %d times, with --min-free-disk %s\n%s", failed, reopens, minFree, c.log())
			}
			resets := int64(0)
			for _, code := range w.codes() {
				switch {
				case code == "OK", code == "204", code == "Unavailable", code == "503", code == "ResourceExhausted", code == "429":
				case strings.HasSuffix(code, "connection reset by peer"), strings.HasSuffix(code, ": EOF"), strings.HasSuffix(code, "write: broken pipe"):
					resets += w.get(code)
				default:
					t.Errorf("%d answers %q: a full disk must give Unavailable / 503 only", w.get(code), code)
				}
			}
			if resets > int64(reopens*len(w.acked)/2) {
				t.Errorf("%d connections reset in %d reopens", resets, reopens)
			}
			// SIGTERM ends it within the shutdown timeout.
			c.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-c.exited:
				if err != nil {
					t.Fatalf("exit after the disk filled: %v\n%s", err, c.log())
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("SIGTERM did not end the server in 60 s\n%s", c.stacks())
			}
			checkAcked(t, dir, args, w)
		})
	}
}

func (w *diskFillWriters) codes() []string {
	var out []string
	w.answers.Range(func(k, _ any) bool { out = append(out, k.(string)); return true })
	return out
}

func (w *diskFillWriters) summary() map[string]int64 {
	out := map[string]int64{}
	for _, c := range w.codes() {
		out[c] = w.get(c)
	}
	return out
}

// scalarOf is the value of a one-element vector answer (0 for none).
func scalarOf(t *testing.T, body string) float64 {
	t.Helper()
	var resp struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(resp.Data.Result) == 0 {
		return 0
	}
	s, _ := resp.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("value %q: %v", s, err)
	}
	return v
}

// current returns the addresses the child serves on now.
func (c *child) current() (grpcAddr, httpURL string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	last := c.serving[len(c.serving)-1]
	return last[0], last[1]
}

// checkAcked starts a server on dir and checks that every sample the
// writers had acknowledged is stored.
func checkAcked(t *testing.T, dir string, args []string, w *diskFillWriters) {
	t.Helper()
	c2 := startChild(t, dir, args...)
	if c2.addr == "" {
		t.Fatalf("server did not start again: %v\n%s", <-c2.exited, c2.log())
	}
	defer c2.cmd.Process.Kill()
	// Every sample sent, at the end of the span sent.
	at := w.last.Load() + 1000
	window := (at-w.first)/1000 + 3600
	for k := range w.acked {
		q := fmt.Sprintf("sum(count_over_time(fill{w=\"%d\"}[%ds]))", k, window)
		code, body := httpGet(t, c2.httpURL+"/api/v1/query?query="+url.QueryEscape(q)+fmt.Sprintf("&time=%.3f", float64(at)/1000))
		if code != 200 {
			t.Fatalf("%s: %d %s", q, code, body)
		}
		got := int64(scalarOf(t, body))
		if w.acked[k].Load() == 0 {
			t.Errorf("writer %d: nothing acknowledged", k)
		}
		if got < w.acked[k].Load() {
			t.Errorf("writer %d: %d samples acknowledged, %d stored", k, w.acked[k].Load(), got)
		}
	}
	c2.cmd.Process.Signal(syscall.SIGTERM)
	<-c2.exited
}
