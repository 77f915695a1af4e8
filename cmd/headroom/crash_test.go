package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

// TestServeChild is `headroom serve` in a child process for the crash and
// signal tests; it does nothing in a normal run.
func TestServeChild(t *testing.T) {
	args := os.Getenv("HEADROOM_SERVE_ARGS")
	if args == "" {
		t.Skip("only runs as the child of TestServeKill9")
	}
	if err := runServe(strings.Fields(args)); err != nil {
		fmt.Fprintln(os.Stderr, "headroom:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

type child struct {
	cmd     *exec.Cmd
	addr    string
	httpURL string
	serving [][]string // every "serving" line's addresses, the first included
	stderr  *strings.Builder
	mu      sync.Mutex
	exited  chan error
}

var servingRe = regexp.MustCompile(`msg=serving grpc=(\S+) http=(\S+)`)

// startChild starts a server process on dir and waits until it serves, or
// returns with the child exited (exited is then closed) when it fails.
func startChild(t *testing.T, dir string, extra ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeChild$")
	cmd.Env = append(os.Environ(), "HEADROOM_SERVE_ARGS=--data-dir "+dir+" --grpc-port 0 --http-port 0 --retention 30d "+strings.Join(extra, " "))
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stderr: &strings.Builder{}, exited: make(chan error, 1)}
	addr := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			c.mu.Lock()
			c.stderr.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if m := servingRe.FindStringSubmatch(sc.Text()); m != nil {
				c.mu.Lock()
				c.serving = append(c.serving, m[1:])
				first := len(c.serving) == 1
				c.mu.Unlock()
				if first {
					addr <- m[1:]
				}
			}
		}
		io.Copy(io.Discard, pipe)
		c.exited <- cmd.Wait()
		close(addr)
	}()
	select {
	case a, ok := <-addr:
		if ok {
			c.addr, c.httpURL = a[0], a[1]
		}
	case <-time.After(startGuard):
		t.Fatalf("server did not start in %v:\n%s", startGuard, c.stacks())
	}
	return c
}

// startGuard bounds a child's start, a hang guard: a start replays the
// log since the last checkpoint, and after a disk filled with log and
// no checkpoint could be written that is the disk's worth (about 7 M
// samples on the disk-full tests' 128 MiB), read at about 60 k samples
// a second with -race on a busy machine.
const startGuard = 5 * time.Minute

// stacks ends a child that hangs with SIGQUIT, so that its log ends with
// every goroutine's stack (where it hangs), and returns the log.
func (c *child) stacks() string {
	c.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
	}
	return c.log()
}

// servingAgain waits until the child has logged "serving" n times (it
// reopened its data directory in place) and returns the last addresses.
func (c *child) servingAgain(t *testing.T, n int, timeout time.Duration) (grpcAddr, httpURL string) {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		c.mu.Lock()
		got := c.serving
		c.mu.Unlock()
		if len(got) >= n {
			return got[n-1][0], got[n-1][1]
		}
	}
	t.Fatalf("the server did not serve a %d. time within %v:\n%s", n, timeout, c.log())
	return "", ""
}

func (c *child) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

const (
	crashWriters = 4
	crashSeries  = 20
	crashSamples = 5
)

func crashSample(w, b, s, k int) (series.Labels, int64, float64) {
	ls := series.FromStrings("__name__", "crash", "writer", fmt.Sprint(w), "s", fmt.Sprint(s))
	return ls, crashBase + int64(b*crashSamples+k)*1000, float64(w*1_000_000 + b*100 + k)
}

var crashBase = time.Now().Add(-time.Hour).Truncate(time.Second).UnixMilli()

// TestServeKill9 writes through the gRPC API from several clients, kills
// the server with SIGKILL, restarts it, checks that a second server on the
// same directory is refused, stops the first with SIGTERM, and then checks
// that every acknowledged sample is stored.
func TestServeKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes; skipped with -short")
	}
	dir := filepath.Join(t.TempDir(), "data")
	c := startChild(t, dir)
	if c.addr == "" {
		t.Fatalf("server exited: %v\n%s", <-c.exited, c.log())
	}
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	client := headroomv1.NewIngestClient(conn)
	var mu sync.Mutex
	acked := map[[2]int]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < crashWriters; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for b := 0; ; b++ {
				select {
				case <-stop:
					return
				default:
				}
				req := &headroomv1.WriteRequest{}
				for s := 0; s < crashSeries; s++ {
					ser := &headroomv1.Series{}
					ls, _, _ := crashSample(w, b, s, 0)
					for _, l := range ls {
						ser.Labels = append(ser.Labels, &headroomv1.Label{Name: l.Name, Value: l.Value})
					}
					for k := 0; k < crashSamples; k++ {
						_, ts, v := crashSample(w, b, s, k)
						ser.Samples = append(ser.Samples, &headroomv1.Sample{TimestampMs: ts, Value: v})
					}
					req.Series = append(req.Series, ser)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := client.Write(ctx, req)
				cancel()
				if err != nil {
					return // the server died under us: this batch is not acknowledged
				}
				mu.Lock()
				acked[[2]int{w, b}] = true
				mu.Unlock()
			}
		}(w)
	}
	// Kill some time after the first acknowledgement (a loaded machine
	// may take a while to get there).
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n > 0 {
			break
		}
	}
	time.Sleep(500 * time.Millisecond)
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
	close(stop)
	wg.Wait()
	conn.Close()
	if len(acked) == 0 {
		t.Fatalf("no batch was acknowledged before the kill:\n%s", c.log())
	}

	// Restart; a second server on the same directory must be refused.
	c2 := startChild(t, dir)
	if c2.addr == "" {
		t.Fatalf("restart failed: %v\n%s", <-c2.exited, c2.log())
	}
	c3 := startChild(t, dir)
	if c3.addr != "" {
		c3.cmd.Process.Kill()
		t.Fatal("a second server started on a data directory in use")
	}
	if err := <-c3.exited; err == nil || !strings.Contains(c3.log(), "data directory is in use") {
		t.Errorf("second server: exit %v, log:\n%s", err, c3.log())
	}
	c2.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c2.exited:
		if err != nil {
			t.Fatalf("server exited with %v on SIGTERM:\n%s", err, c2.log())
		}
	case <-time.After(60 * time.Second):
		c2.cmd.Process.Kill()
		t.Fatal("server did not stop within 60 s of SIGTERM")
	}
	if !strings.Contains(c2.log(), "data directory closed") {
		t.Errorf("no clean close in the log:\n%s", c2.log())
	}

	db, err := storage.Open(dir, storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got := stored(t, db)
	missing := 0
	for key := range acked {
		w, b := key[0], key[1]
		for s := 0; s < crashSeries; s++ {
			ls, _, _ := crashSample(w, b, s, 0)
			vs := map[float64]bool{}
			for _, v := range got[ls.String()] {
				vs[v] = true
			}
			for k := 0; k < crashSamples; k++ {
				if _, _, v := crashSample(w, b, s, k); !vs[v] {
					missing++
				}
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d acknowledged samples missing after kill -9 (of %d batches acknowledged)", missing, len(acked))
	}
	t.Logf("%d batches (%d samples) acknowledged before kill -9, all found", len(acked), len(acked)*crashSeries*crashSamples)
}
