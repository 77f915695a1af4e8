package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/storage"
)

// walFaultEnv names a file: while it exists, a child server's writes to
// Pebble's log and to the disk probe fail with EIO.
const walFaultEnv = "HEADROOM_TEST_WAL_FAULT"

func init() {
	path := os.Getenv(walFaultEnv)
	if path == "" {
		return
	}
	testFS = errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() != errorfs.OpIsWrite ||
			!(strings.HasSuffix(op.Path, ".log") || filepath.Base(op.Path) == storage.ProbeFile) {
			return nil
		}
		if _, err := os.Stat(path); err == nil {
			return syscall.EIO
		}
		return nil
	}))
}

// TestServeRecoversFromDiskFault: the real server, its disk failing
// writes to the log. Writes are refused with Unavailable, queries go on,
// the process stays up; once the disk takes writes again the server
// reopens its data directory by itself, every acknowledged sample is
// there, and writes work again. When the failed write was a new series
// (its keys go through Pebble's log, whose failure leaves Pebble stuck
// inside its commit), the process restarts itself on the same ports.
func TestServeRecoversFromDiskFault(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process; skipped with -short")
	}
	for _, tc := range []struct {
		name      string
		newSeries bool // the write that meets the fault creates a series
	}{{"Headroom's log", false}, {"Pebble's log", true}} {
		t.Run(tc.name, func(t *testing.T) { testServeRecoversFromDiskFault(t, tc.newSeries) })
	}
}

func testServeRecoversFromDiskFault(t *testing.T, newSeries bool) {
	fault := filepath.Join(t.TempDir(), "fault")
	t.Setenv(walFaultEnv, fault)
	c := startChild(t, filepath.Join(t.TempDir(), "data"))
	if c.addr == "" {
		t.Fatalf("server exited: %v\n%s", <-c.exited, c.log())
	}
	defer c.cmd.Process.Kill()
	base := time.Now().Add(-time.Hour).UnixMilli()
	write := func(addr string, i int) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		labels := []*headroomv1.Label{{Name: "__name__", Value: "disk"}}
		if newSeries {
			labels = append(labels, &headroomv1.Label{Name: "i", Value: fmt.Sprint(i)})
		}
		_, err = headroomv1.NewIngestClient(conn).Write(ctx, &headroomv1.WriteRequest{Series: []*headroomv1.Series{{
			Labels: labels, Samples: []*headroomv1.Sample{{TimestampMs: base + int64(i)*1000, Value: float64(i)}}}}})
		return err
	}
	count := func(httpURL string) string {
		code, body := httpGet(t, httpURL+"/api/v1/query?query=sum(count_over_time(disk[2h]))")
		if code != 200 {
			t.Fatalf("query: %d %s", code, body)
		}
		return body
	}
	for i := 0; i < 10; i++ {
		if err := write(c.addr, i); err != nil {
			t.Fatalf("write %d before the fault: %v", i, err)
		}
	}
	if err := os.WriteFile(fault, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := write(c.addr, 10)
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "input/output error") {
		t.Fatalf("write on a failing disk: %v %q, want Unavailable naming the I/O error", st.Code(), st.Message())
	}
	if err := write(c.addr, 11); status.Code(err) != codes.Unavailable {
		t.Fatalf("second write on a failing disk: %v", err)
	}
	// Reads go on, with every acknowledged sample.
	if body := count(c.httpURL); !strings.Contains(body, `"10"`) {
		t.Fatalf("query on a failing disk: %s, want the 10 acknowledged samples", body)
	}
	time.Sleep(3 * storageCheckInterval) // the probe fails meanwhile: no restart
	c.mu.Lock()
	restarts := len(c.serving)
	c.mu.Unlock()
	if restarts != 1 {
		t.Fatalf("the server reopened while the disk still failed:\n%s", c.log())
	}
	if err := os.Remove(fault); err != nil {
		t.Fatal(err)
	}
	grpcAddr, httpURL := c.servingAgain(t, 2, 30*time.Second)
	if err := write(grpcAddr, 12); err != nil {
		t.Fatalf("write after the disk recovered: %v\n%s", err, c.log())
	}
	if body := count(httpURL); !strings.Contains(body, `"11"`) {
		t.Fatalf("after recovery: %s, want 11 samples (10 before the fault, 1 after)", body)
	}
	if !strings.Contains(c.log(), "the disk takes writes again") {
		t.Errorf("the log does not say why the server reopened:\n%s", c.log())
	}
	if restarted := strings.Contains(c.log(), "restarting the process to reopen"); restarted != newSeries {
		t.Errorf("restarted the process %v, want %v (a fault of Pebble's log only)\n%s", restarted, newSeries, c.log())
	}
	if grpcAddr != c.addr || httpURL != c.httpURL {
		t.Errorf("serves on %s and %s after the reopen, was on %s and %s", grpcAddr, httpURL, c.addr, c.httpURL)
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-c.exited; err != nil {
		t.Fatalf("exit after recovery: %v\n%s", err, c.log())
	}
}
