// Package admit decides whether the server takes on one more request: it
// bounds the requests in progress (a gate of slots with a short queue)
// and refuses new work while the process is near its memory budget. Both
// refusals are ErrBusy, which front ends answer with HTTP 429 or gRPC
// ResourceExhausted and a Retry-After, so that clients back off and the
// server recovers by itself when the load drops.
//
// It owns admission only: it never reads request bodies, never touches
// storage, and never blocks a request longer than the gate's wait.
package admit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// ErrBusy marks a request refused because the server has more work than
// it takes on at once; the same request sent later may pass.
var ErrBusy = errors.New("server busy")

// RetryAfter is what a refused client is told to wait.
const RetryAfter = time.Second

// Gate admits n requests of one kind at once; others wait up to wait for
// a slot. A nil *Gate lets everything through.
type Gate struct {
	slots  chan struct{}
	wait   time.Duration
	what   string
	memory *Memory
}

// NewGate admits n requests called what ("write requests") at once,
// refusing when memory (if not nil) is over its budget.
func NewGate(n int, wait time.Duration, what string, memory *Memory) *Gate {
	return &Gate{slots: make(chan struct{}, n), wait: wait, what: what, memory: memory}
}

// Enter takes a slot, or fails with ErrBusy (over the memory budget, or
// no slot within the wait) or with ctx's error when the client has gone.
// The caller calls Leave once done when Enter returned nil.
func (g *Gate) Enter(ctx context.Context) error {
	if g == nil {
		return nil
	}
	if err := g.memory.Check(); err != nil {
		return err
	}
	select {
	case g.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(g.wait)
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
		return nil
	case <-t.C:
		return fmt.Errorf("%w: %d %s in progress, none finished within %v: retry later", ErrBusy, cap(g.slots), g.what, g.wait)
	case <-ctx.Done():
		return fmt.Errorf("%v while waiting for one of %d slots for %s", ctx.Err(), cap(g.slots), g.what)
	}
}

// Leave gives back the slot Enter took.
func (g *Gate) Leave() {
	if g != nil {
		<-g.slots
	}
}

// InFlight returns the requests holding a slot and the number of slots,
// for /metrics.
func (g *Gate) InFlight() (int, int) {
	if g == nil {
		return 0, 0
	}
	return len(g.slots), cap(g.slots)
}

// Memory is the process's memory budget. It sets Go's soft memory limit
// (so that the collector works harder as the heap nears it) and refuses
// new requests while the heap that survived the last collection is over
// a share of it: what requests in flight still allocate has room to
// finish, and the server never trades an answer for an out-of-memory kill.
type Memory struct {
	limit int64
	shed  uint64 // live heap above which new work is refused

	mu        sync.Mutex
	checked   time.Time
	collected time.Time // when Check last started a collection
	live      atomic.Uint64
	refused   atomic.Int64
}

// ShedShare is the share of the budget the live heap may reach before new
// requests are refused: the collector needs the rest (a heap grows to
// twice its live size between collections under GOGC=100) and requests
// in flight finish in it.
const ShedShare = 0.6

// NewMemory applies a budget of limit bytes (debug.SetMemoryLimit) and
// returns its check. limit <= 0 returns nil, which admits everything.
func NewMemory(limit int64) *Memory {
	if limit <= 0 {
		return nil
	}
	debug.SetMemoryLimit(limit)
	return &Memory{limit: limit, shed: uint64(float64(limit) * ShedShare)}
}

// memCheckInterval bounds how often the heap is measured: reading the
// runtime's metrics costs about a microsecond, requests can come a
// hundred thousand a second.
const memCheckInterval = 20 * time.Millisecond

// collectInterval bounds the collections Check starts while refusing.
const collectInterval = 250 * time.Millisecond

// Check returns ErrBusy while the live heap is over the budget's share.
func (m *Memory) Check() error {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	if now := time.Now(); now.Sub(m.checked) >= memCheckInterval {
		m.checked = now
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(s)
		if s[0].Value.Kind() == metrics.KindUint64 {
			m.live.Store(s[0].Value.Uint64())
		}
	}
	live := m.live.Load()
	if live > m.shed && time.Since(m.collected) >= collectInterval {
		// The figure is from the last collection, and a server that
		// refuses everything allocates too little to start one: collect
		// now (in the background), so that a heap freed since lets work
		// in again.
		m.collected = time.Now()
		go func() {
			runtime.GC()
			s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
			metrics.Read(s)
			if s[0].Value.Kind() == metrics.KindUint64 {
				m.live.Store(s[0].Value.Uint64())
			}
		}()
	}
	m.mu.Unlock()
	if live > m.shed {
		m.refused.Add(1)
		return fmt.Errorf("%w: %d MiB of memory in use after the last collection, over %.0f%% of the budget of %d MiB (--memory-limit): retry later",
			ErrBusy, live>>20, ShedShare*100, m.limit>>20)
	}
	return nil
}

// Limit is the budget in bytes (0 for a nil Memory).
func (m *Memory) Limit() int64 {
	if m == nil {
		return 0
	}
	return m.limit
}

// Refused counts the requests refused over the budget, for /metrics.
func (m *Memory) Refused() int64 {
	if m == nil {
		return 0
	}
	return m.refused.Load()
}

// CheckMemory refuses, as Enter would, while the live heap is over the
// memory budget's share, without taking a slot: for work a request does
// before it needs one (reading its body).
func (g *Gate) CheckMemory() error {
	if g == nil {
		return nil
	}
	return g.memory.Check()
}
