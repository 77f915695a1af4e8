package ingest

import (
	"context"
	"errors"
	"fmt"

	"github.com/headroomdb/headroom/admit"
)

// enter takes a write slot from the gate (Options.Gate): refused with
// admit.ErrBusy when the server is full, ErrUnavailable when the client
// left while waiting.
func (o *Options) enter(ctx context.Context) error {
	err := o.Gate.Enter(ctx)
	if err != nil && !errors.Is(err, admit.ErrBusy) {
		err = fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// admit takes a write slot for a gRPC request of protocol, or counts the
// refusal and returns the status to answer with; the caller leaves the
// gate when done.
func (o *Options) admit(ctx context.Context, protocol string) error {
	if err := o.enter(ctx); err != nil {
		o.Metrics.Reject(protocol, reason(err))
		return grpcStatus(err)
	}
	return nil
}
