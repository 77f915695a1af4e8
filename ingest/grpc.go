package ingest

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/storage/series"
)

// GRPC implements headroom.v1.Ingest over an Appendable.
type GRPC struct {
	headroomv1.UnimplementedIngestServer
	db     Appendable
	limits Limits
}

// NewGRPC returns the Ingest service; register it with
// headroomv1.RegisterIngestServer.
func NewGRPC(db Appendable, limits Limits) *GRPC {
	return &GRPC{db: db, limits: limits.withDefaults()}
}

// Write stores the request whole, or refuses it whole.
func (g *GRPC) Write(ctx context.Context, req *headroomv1.WriteRequest) (*headroomv1.WriteResponse, error) {
	n, err := g.store(req.GetSeries())
	if err != nil {
		return nil, err
	}
	return &headroomv1.WriteResponse{SamplesWritten: uint64(n), SeriesWritten: uint64(len(req.GetSeries()))}, nil
}

// WriteStream acknowledges each batch, in order, once it is durable; a
// refused batch is acknowledged with its error and the stream goes on.
func (g *GRPC) WriteStream(stream headroomv1.Ingest_WriteStreamServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp := &headroomv1.WriteStreamResponse{Sequence: req.GetSequence()}
		n, err := g.store(req.GetSeries())
		if err != nil {
			st, _ := status.FromError(err)
			resp.Error, resp.Code = st.Message(), int32(st.Code())
		} else {
			resp.SamplesWritten = uint64(n)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// store appends and commits a batch, returning a gRPC status error.
func (g *GRPC) store(ss []*headroomv1.Series) (int, error) {
	if len(ss) > g.limits.SeriesPerRequest {
		return 0, status.Errorf(codes.ResourceExhausted, "request holds %d series, the limit is %d", len(ss), g.limits.SeriesPerRequest)
	}
	total := 0
	for _, s := range ss {
		total += len(s.GetSamples())
	}
	if total > g.limits.SamplesPerRequest {
		return 0, status.Errorf(codes.ResourceExhausted, "request holds %d samples, the limit is %d", total, g.limits.SamplesPerRequest)
	}
	app := g.db.Appender()
	var ls series.Labels
	for i, s := range ss {
		ls = ls[:0]
		for _, l := range s.GetLabels() {
			ls = append(ls, series.Label{Name: l.GetName(), Value: l.GetValue()})
		}
		ls.Sort()
		if err := g.limits.checkLabels(ls); err != nil {
			app.Rollback()
			return 0, status.Errorf(codes.ResourceExhausted, "series %d: %v", i, err)
		}
		for _, smp := range s.GetSamples() {
			if err := app.Append(ls, smp.GetTimestampMs(), smp.GetValue()); err != nil {
				app.Rollback()
				return 0, status.Errorf(codes.InvalidArgument, "series %d: %v", i, err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		if errors.Is(err, series.ErrClosed) {
			return 0, status.Error(codes.Unavailable, err.Error())
		}
		return 0, status.Errorf(codes.Unavailable, "commit: %v", err)
	}
	return total, nil
}
