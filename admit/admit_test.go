package admit

import (
	"context"
	"errors"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	g := NewGate(2, 30*time.Millisecond, "write requests", nil)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := g.Enter(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n, c := g.InFlight(); n != 2 || c != 2 {
		t.Fatalf("InFlight = %d/%d", n, c)
	}
	start := time.Now()
	err := g.Enter(ctx)
	if !errors.Is(err, ErrBusy) || time.Since(start) < 30*time.Millisecond || !strings.Contains(err.Error(), "2 write requests in progress") {
		t.Fatalf("third Enter: %v after %v, want ErrBusy naming the requests after the wait", err, time.Since(start))
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := g.Enter(cctx); err == nil || errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("Enter with a gone client: %v, want the context's error", err)
	}
	// A request waiting when a slot frees gets it.
	long := &Gate{slots: g.slots, wait: 5 * time.Second, what: g.what}
	done := make(chan error)
	go func() { done <- long.Enter(ctx) }()
	time.Sleep(5 * time.Millisecond)
	g.Leave()
	if err := <-done; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	var nilGate *Gate
	if err := nilGate.Enter(ctx); err != nil {
		t.Fatalf("nil gate: %v", err)
	}
	nilGate.Leave()
}

// TestMemory: over the budget's share of live heap, new work is refused;
// once the heap is collected, it is admitted again.
func TestMemory(t *testing.T) {
	defer debug.SetMemoryLimit(math.MaxInt64)
	m := NewMemory(64 << 20)
	if got := debug.SetMemoryLimit(-1); got != 64<<20 {
		t.Fatalf("Go's memory limit = %d, want the budget", got)
	}
	runtime.GC()
	time.Sleep(memCheckInterval)
	if err := m.Check(); err != nil {
		t.Fatalf("idle process: %v", err)
	}
	ballast := make([]byte, 48<<20)
	for i := range ballast {
		ballast[i] = byte(i)
	}
	runtime.GC()
	time.Sleep(memCheckInterval)
	err := m.Check()
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "--memory-limit") {
		t.Fatalf("live heap of 48 MiB on a 64 MiB budget: %v, want ErrBusy", err)
	}
	g := NewGate(4, time.Millisecond, "queries", m)
	if err := g.Enter(context.Background()); !errors.Is(err, ErrBusy) {
		t.Fatalf("gate over the budget: %v", err)
	}
	runtime.KeepAlive(ballast)
	ballast = nil
	runtime.GC()
	time.Sleep(memCheckInterval)
	if err := m.Check(); err != nil {
		t.Fatalf("after the heap was freed: %v", err)
	}
	if m.Refused() != 2 {
		t.Fatalf("Refused = %d, want 2", m.Refused())
	}
	if NewMemory(0) != nil || (*Memory)(nil).Check() != nil {
		t.Fatal("no budget must admit everything")
	}
}
