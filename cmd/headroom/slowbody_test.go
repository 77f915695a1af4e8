package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
)

// slowPost opens a connection and sends a remote-write request's headers
// (a declared length, or chunked when length < 0) and first bytes of its
// body, then nothing more; it returns the connection, to read the answer.
func slowPost(t *testing.T, addr string, length int64) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	head := "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\n"
	body := "abc"
	if length < 0 {
		head += "Transfer-Encoding: chunked\r\n\r\n"
		body = "3\r\nabc\r\n" // a chunk, and never the last one
	} else {
		head += fmt.Sprintf("Content-Length: %d\r\n\r\n", length)
	}
	if _, err := c.Write([]byte(head + body)); err != nil {
		t.Fatal(err)
	}
	return c
}

// answerOn reads the HTTP status of the answer on c, waiting at most d.
func answerOn(t *testing.T, c net.Conn, d time.Duration) (int, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, b.String()
}

// TestSlowBodiesHoldNoSlot: clients that announce a huge body, or send a
// body a few bytes at a time, or chunked without end, must not take the
// write slots from everybody else; a body that does not come in time is
// refused with 408.
func TestSlowBodiesHoldNoSlot(t *testing.T) {
	ts := startServer(t, "--max-request-bytes", "1048576", "--max-concurrent-writes", "4",
		"--write-queue-timeout", "200ms", "--body-timeout", "3s")
	addr := strings.TrimPrefix(ts.httpURL, "http://")
	// Announced over the limit: refused at once, before any body.
	for i := 0; i < 4; i++ {
		c := slowPost(t, addr, 1_000_000_000)
		if code, msg := answerOn(t, c, time.Minute); code != 413 || !strings.Contains(msg, "body over 1048576 bytes: Content-Length 1000000000") {
			t.Fatalf("Content-Length 1e9: %d %q, want 413 at once", code, msg)
		}
	}
	// Twice as many trickling bodies as there are write slots.
	start := time.Now()
	var slow []net.Conn
	for i := 0; i < 8; i++ {
		length := int64(1000)
		if i%2 == 1 {
			length = -1
		}
		slow = append(slow, slowPost(t, addr, length))
	}
	time.Sleep(300 * time.Millisecond) // the trickling requests are in their handlers
	now := time.Now().UnixMilli()
	for i := 0; i < 3; i++ {
		if code, msg := postRemoteWrite(t, ts.httpURL, "", remoteWriteBody(t, promSeries("during_slow", now+int64(i), 1))); code != 204 {
			t.Fatalf("remote write beside slow bodies: %d %s", code, msg)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ic := headroomv1.NewIngestClient(ts.dial(t))
	if _, err := ic.Write(ctx, &headroomv1.WriteRequest{Series: []*headroomv1.Series{{
		Labels:  []*headroomv1.Label{{Name: "__name__", Value: "during_slow_grpc"}},
		Samples: []*headroomv1.Sample{{TimestampMs: now, Value: 1}},
	}}}); err != nil {
		t.Fatalf("gRPC write beside slow bodies: %v", err)
	}
	if time.Since(start) >= 3*time.Second {
		t.Logf("slow machine: the writes beside the slow bodies ended after their body timeout; the check above proves less")
	}
	// The trickling bodies are cut by --body-timeout.
	for i, c := range slow {
		if code, msg := answerOn(t, c, time.Minute); code != 408 || !strings.Contains(msg, "not received within 3s") {
			t.Errorf("slow body %d: %d %q, want 408", i, code, msg)
		}
	}
	if got := stored(t, ts.db); len(got) != 2 {
		t.Errorf("stored %v, want the two good writes' series", got)
	}
}
