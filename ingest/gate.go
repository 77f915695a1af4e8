package ingest

import (
	"context"
	"fmt"
	"time"
)

// Gate bounds the write requests being decoded and appended at once, so
// that memory is bounded by configuration however many clients push at
// the same time: a request waits for a slot up to the gate's wait, then is
// refused as over a limit (HTTP 429 / gRPC ResourceExhausted), which tells
// agents to back off and retry. A nil *Gate lets everything through.
type Gate struct {
	slots chan struct{}
	wait  time.Duration
}

// NewGate admits n requests at once; others wait up to wait.
func NewGate(n int, wait time.Duration) *Gate {
	return &Gate{slots: make(chan struct{}, n), wait: wait}
}

// enter takes a slot, or fails with ErrLimit after the wait (or when ctx
// ends: the client is gone).
func (g *Gate) enter(ctx context.Context) error {
	if g == nil {
		return nil
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
		return fmt.Errorf("%w: %d write requests in progress, none finished within %v: retry later", ErrLimit, cap(g.slots), g.wait)
	case <-ctx.Done():
		return fmt.Errorf("%w: %v while waiting for one of %d write slots", ErrUnavailable, ctx.Err(), cap(g.slots))
	}
}

// admit takes a write slot for a gRPC request of protocol, or counts the
// refusal and returns the status to answer with; the caller leaves the
// gate when done.
func (o *Options) admit(ctx context.Context, protocol string) error {
	if err := o.Gate.enter(ctx); err != nil {
		o.Metrics.Reject(protocol, reason(err))
		return grpcStatus(err)
	}
	return nil
}

func (g *Gate) leave() {
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
