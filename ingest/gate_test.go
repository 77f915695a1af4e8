package ingest

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	g := NewGate(2, 30*time.Millisecond)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := g.enter(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n, c := g.InFlight(); n != 2 || c != 2 {
		t.Fatalf("InFlight = %d/%d", n, c)
	}
	start := time.Now()
	if err := g.enter(ctx); !errors.Is(err, ErrLimit) || time.Since(start) < 30*time.Millisecond {
		t.Fatalf("third enter: %v after %v, want ErrLimit after the wait", err, time.Since(start))
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := g.enter(cctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("enter with a gone client: %v, want ErrUnavailable", err)
	}
	// A request waiting when a slot frees gets it.
	done := make(chan error)
	go func() { done <- enterWithLongWait(g) }()
	time.Sleep(5 * time.Millisecond)
	g.leave()
	if err := <-done; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	// Over HTTP: a full gate answers 429 before reading the body.
	h := NewRemoteWrite(nil, Options{Gate: g})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader([]byte("x"))))
	if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "retry later") {
		t.Fatalf("full gate: %d %q, want 429", rec.Code, rec.Body)
	}
}

// enterWithLongWait enters g (sharing its slots) with a wait long enough
// for the test.
func enterWithLongWait(g *Gate) error {
	w := *g
	w.wait = time.Second
	return w.enter(context.Background())
}
