package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/headroomdb/headroom/auth"
	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
)

// syncBuffer is a log destination the server's goroutines share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAuthEveryEndpoint (issue 6, item 5): with a tokens file, every write
// and read endpoint of both ports refuses a request without a token or
// with an unknown one (401 / Unauthenticated) and one with a token of the
// other kind (403 / PermissionDenied), and serves the right kind; only
// /metrics, /healthz, /readyz and the gRPC health service stay open. No
// token, good or bad, ever shows in the log (at debug level) or in
// /metrics.
func TestAuthEveryEndpoint(t *testing.T) {
	const rtok, wtok, both = "read-token-0123456789", "write-token-0123456789", "both-token-0123456789"
	const wrong = "wrong-token-0123456789"
	tf := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tf, []byte("read "+rtok+" grafana\nwrite "+wtok+" agent\nread,write "+both+" admin\n"), 0o600)
	var logBuf syncBuffer
	ts := startServerLogging(t, slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})), "--tokens-file", tf, "--log-level", "debug")
	ctx := context.Background()
	now := time.Now().UnixMilli()
	sec := strconv.FormatInt(now/1000, 10)

	type endpoint struct {
		name  string
		scope string // "read", "write" or "open"
		http  func(token string) int
		grpc  func(conn *grpc.ClientConn) error
	}
	httpDo := func(method, path, ctype string, body []byte) func(string) int {
		return func(token string) int {
			req, _ := http.NewRequest(method, ts.httpURL+path, bytes.NewReader(body))
			if ctype != "" {
				req.Header.Set("Content-Type", ctype)
			}
			if method == "POST" && path == "/api/v1/write" {
				req.Header.Set("Content-Encoding", "snappy")
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}
	}
	get := func(path string) func(string) int { return httpDo("GET", path, "", nil) }
	write := &headroomv1.WriteRequest{Series: []*headroomv1.Series{{Labels: []*headroomv1.Label{{Name: "__name__", Value: "m"}}, Samples: []*headroomv1.Sample{{TimestampMs: now, Value: 1}}}}}
	endpoints := []endpoint{
		{name: "POST /api/v1/write", scope: "write", http: httpDo("POST", "/api/v1/write", "application/x-protobuf", remoteWriteBody(t, promSeries("rw", now, 1)))},
		{name: "GET /api/v1/query", scope: "read", http: get("/api/v1/query?query=up")},
		{name: "POST /api/v1/query", scope: "read", http: httpDo("POST", "/api/v1/query", "application/x-www-form-urlencoded", []byte("query=up"))},
		{name: "GET /api/v1/query_range", scope: "read", http: get("/api/v1/query_range?query=up&start=" + sec + "&end=" + sec + "&step=15")},
		{name: "GET /api/v1/labels", scope: "read", http: get("/api/v1/labels")},
		{name: "GET /api/v1/label/job/values", scope: "read", http: get("/api/v1/label/job/values")},
		{name: "GET /api/v1/series", scope: "read", http: get("/api/v1/series?match[]=up")},
		{name: "GET /api/v1/status/buildinfo", scope: "read", http: get("/api/v1/status/buildinfo")},
		{name: "GET /api/v1/status/tsdb", scope: "read", http: get("/api/v1/status/tsdb")},
		{name: "GET /api/v1/metadata", scope: "read", http: get("/api/v1/metadata")},
		{name: "GET /api/v1/query_exemplars", scope: "read", http: get("/api/v1/query_exemplars?query=up")},
		{name: "GET /api/v1/rules", scope: "read", http: get("/api/v1/rules")},
		{name: "GET /api/v1/alerts", scope: "read", http: get("/api/v1/alerts")},
		{name: "GET /api/v1/report", scope: "read", http: get("/api/v1/report?query=vector(1)&range=1h")},
		{name: "GET /metrics", scope: "open", http: get("/metrics")},
		{name: "GET /healthz", scope: "open", http: get("/healthz")},
		{name: "GET /readyz", scope: "open", http: get("/readyz")},
		{name: "Ingest/Write", scope: "write", grpc: func(c *grpc.ClientConn) error {
			_, err := headroomv1.NewIngestClient(c).Write(ctx, write)
			return err
		}},
		{name: "Ingest/WriteStream", scope: "write", grpc: func(c *grpc.ClientConn) error {
			st, err := headroomv1.NewIngestClient(c).WriteStream(ctx)
			if err != nil {
				return err
			}
			if err := st.Send(&headroomv1.WriteStreamRequest{Series: write.Series}); err != nil && err != io.EOF {
				return err
			}
			st.CloseSend()
			_, err = st.Recv()
			return err
		}},
		{name: "OTLP MetricsService/Export", scope: "write", grpc: func(c *grpc.ClientConn) error {
			_, err := colmetricspb.NewMetricsServiceClient(c).Export(ctx, &colmetricspb.ExportMetricsServiceRequest{})
			return err
		}},
		{name: "Query/InstantQuery", scope: "read", grpc: func(c *grpc.ClientConn) error {
			st, err := headroomv1.NewQueryClient(c).InstantQuery(ctx, &headroomv1.InstantQueryRequest{Query: "vector(1)"})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}},
		{name: "Query/RangeQuery", scope: "read", grpc: func(c *grpc.ClientConn) error {
			st, err := headroomv1.NewQueryClient(c).RangeQuery(ctx, &headroomv1.RangeQueryRequest{Query: "vector(1)", StartMs: now - 60_000, EndMs: now, StepMs: 15_000})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}},
		{name: "Reports/Report", scope: "read", grpc: func(c *grpc.ClientConn) error {
			_, err := headroomv1.NewReportsClient(c).Report(ctx, &headroomv1.ReportRequest{Query: "vector(1)", StartMs: now - 3600_000, EndMs: now})
			return err
		}},
		{name: "grpc.health.v1.Health/Check", scope: "open", grpc: func(c *grpc.ClientConn) error {
			_, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}},
	}
	conns := map[string]*grpc.ClientConn{}
	for _, tok := range []string{"", wrong, rtok, wtok, both} {
		var opts []grpc.DialOption
		if tok != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(auth.Credentials{Token: tok, Insecure: true}))
		}
		conns[tok] = ts.dial(t, opts...)
	}
	checked := 0
	for _, e := range endpoints {
		for _, tok := range []string{"", wrong, rtok, wtok, both} {
			// What the token may do here: "none" (no valid token), "deny"
			// (a valid token of the other kind), "allow".
			want := "allow"
			switch {
			case e.scope == "open":
			case tok == "" || tok == wrong:
				want = "none"
			case e.scope == "read" && tok == wtok, e.scope == "write" && tok == rtok:
				want = "deny"
			}
			checked++
			if e.http != nil {
				code := e.http(tok)
				got := map[int]string{401: "none", 403: "deny"}[code]
				if got == "" {
					got = "allow"
				}
				if got != want || (want == "allow" && code >= 300) {
					t.Errorf("%s with token %q: %d, want %s", e.name, tok, code, want)
				}
				continue
			}
			code := status.Code(e.grpc(conns[tok]))
			got := map[codes.Code]string{codes.Unauthenticated: "none", codes.PermissionDenied: "deny"}[code]
			if got == "" {
				got = "allow"
			}
			if got != want || (want == "allow" && code != codes.OK) {
				t.Errorf("%s with token %q: %v, want %s", e.name, tok, code, want)
			}
		}
	}
	// Basic auth with the token as password, as Grafana's data source
	// and Prometheus's remote_write basic_auth send it.
	req, _ := http.NewRequest("GET", ts.httpURL+"/api/v1/labels", nil)
	req.SetBasicAuth("grafana", rtok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("basic auth with a read token: %v %v", resp.StatusCode, err)
	}
	_, metrics := httpGet(t, ts.httpURL+"/metrics")
	logs := logBuf.String()
	if !strings.Contains(logs, "auth=true") {
		t.Fatalf("the captured log is not the server's:\n%s", logs)
	}
	for _, tok := range []string{rtok, wtok, both, wrong} {
		if strings.Contains(logs, tok) {
			t.Errorf("token %q is in the log", tok)
		}
		if strings.Contains(metrics, tok) {
			t.Errorf("token %q is in /metrics", tok)
		}
	}
	t.Logf("%d endpoint x token combinations checked", checked)
}

// TestGzipBombOverGRPC: a gRPC message is limited by --max-request-bytes
// after decompression as well: 64 MiB of zeros sent gzip-compressed (64
// KiB on the wire) are refused, not inflated.
func TestGzipBombOverGRPC(t *testing.T) {
	ts := startServer(t, "--max-request-bytes", "1048576")
	conn := ts.dial(t)
	bomb := make([]byte, 64<<20)
	var out []byte
	err := conn.Invoke(context.Background(), "/headroom.v1.Ingest/Write", bomb, &out, grpc.ForceCodec(rawCodec{}), grpc.UseCompressor(gzip.Name))
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "larger than max") {
		t.Fatalf("gzip bomb: %v %q, want ResourceExhausted", st.Code(), st.Message())
	}
	if code, _ := httpGet(t, ts.httpURL+"/healthz"); code != 200 {
		t.Fatalf("/healthz after the bomb: %d", code)
	}
}

// TestServeReloadOnSIGHUP: the real server reads its tokens file and TLS
// certificate again on SIGHUP: a removed token stops working, a new one
// works, new connections get the new certificate, and a tokens file
// that fails to load leaves the current tokens in force.
func TestServeReloadOnSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process; skipped with -short")
	}
	const oldTok, newTok = "old-token-0123456789", "new-token-0123456789"
	tf := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tf, []byte("read,write "+oldTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cert1, key1 := selfSigned(t)
	cert2, key2 := selfSigned(t)
	certPath, keyPath := filepath.Join(t.TempDir(), "cert.pem"), filepath.Join(t.TempDir(), "key.pem")
	copyFile := func(from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(cert1, certPath)
	copyFile(key1, keyPath)
	c := startChild(t, filepath.Join(t.TempDir(), "data"), "--tokens-file", tf, "--tls-cert", certPath, "--tls-key", keyPath)
	if c.addr == "" {
		t.Fatalf("server exited: %v\n%s", <-c.exited, c.log())
	}
	defer c.cmd.Process.Kill()
	// get asks for the labels with a token, trusting only caCert, over a
	// new connection (so a new handshake).
	get := func(caCert, token string) (int, error) {
		pool := x509.NewCertPool()
		pemBytes, _ := os.ReadFile(caCert)
		pool.AppendCertsFromPEM(pemBytes)
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		req, _ := http.NewRequest("GET", c.httpURL+"/api/v1/labels", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(cert1, oldTok); err != nil || code != 200 {
		t.Fatalf("before reload: %d %v", code, err)
	}
	if err := os.WriteFile(tf, []byte("read "+newTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	copyFile(cert2, certPath)
	copyFile(key2, keyPath)
	reloads := func() int { return strings.Count(c.log(), "reload: tokens file read") }
	hup := func(want int) {
		t.Helper()
		c.cmd.Process.Signal(syscall.SIGHUP)
		for deadline := time.Now().Add(10 * time.Second); strings.Count(c.log(), "reload:") < want; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no reload in the log after SIGHUP:\n%s", c.log())
			}
		}
	}
	hup(2) // the tokens and the certificate
	if code, err := get(cert2, oldTok); err != nil || code != 401 {
		t.Errorf("the removed token after reload: %d %v, want 401", code, err)
	}
	if code, err := get(cert2, newTok); err != nil || code != 200 {
		t.Errorf("the new token after reload: %d %v, want 200", code, err)
	}
	if _, err := get(cert1, newTok); err == nil {
		t.Error("a new connection still got the old certificate after reload")
	}
	// A broken tokens file is refused; the tokens in force stay.
	if err := os.WriteFile(tf, []byte("# nothing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup(4) // the error and the certificate again
	if !strings.Contains(c.log(), "reload: --tokens-file kept as it was") {
		t.Errorf("no error logged for a broken tokens file:\n%s", c.log())
	}
	if code, err := get(cert2, newTok); err != nil || code != 200 {
		t.Errorf("after a failed reload: %d %v, want the tokens in force to stay", code, err)
	}
	if reloads() != 1 {
		t.Errorf("%d successful token reloads, want 1", reloads())
	}
	if strings.Contains(c.log(), newTok) || strings.Contains(c.log(), oldTok) {
		t.Error("a token is in the log")
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-c.exited; err != nil {
		t.Fatalf("exit: %v\n%s", err, c.log())
	}
}
