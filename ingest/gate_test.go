package ingest

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/headroomdb/headroom/admit"
)

// TestGateHTTP: a full gate answers remote-write with 429 and a
// Retry-After before reading the body.
func TestGateHTTP(t *testing.T) {
	g := admit.NewGate(1, 10*time.Millisecond, "write requests", nil)
	if err := g.Enter(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := NewRemoteWrite(nil, Options{Gate: g})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader([]byte("x"))))
	if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "retry later") || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("full gate: %d %q Retry-After %q, want 429, retry later, 1", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	g.Leave()
}
