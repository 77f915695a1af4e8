package ingest

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/status"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/storage/series"
)

// GRPC implements headroom.v1.Ingest over an Appendable.
type GRPC struct {
	headroomv1.UnimplementedIngestServer
	db   Appendable
	opts Options
}

// NewGRPC returns the Ingest service; register it with
// headroomv1.RegisterIngestServer.
func NewGRPC(db Appendable, o Options) *GRPC {
	o.Limits = o.Limits.withDefaults()
	return &GRPC{db: db, opts: o}
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
	n, err := write(g.db, &g.opts, "grpc", ownBatch(ss))
	if err != nil {
		return 0, grpcStatus(err)
	}
	return n, nil
}

// ownBatch reads Headroom's own request without copying it.
type ownBatch []*headroomv1.Series

func (b ownBatch) Len() int { return len(b) }
func (b ownBatch) Labels(i int, dst series.Labels) series.Labels {
	for _, l := range b[i].GetLabels() {
		dst = append(dst, series.Label{Name: l.GetName(), Value: l.GetValue()})
	}
	return dst
}
func (b ownBatch) NumSamples(i int) int { return len(b[i].GetSamples()) }
func (b ownBatch) Sample(i, j int) (int64, float64) {
	s := b[i].GetSamples()[j]
	return s.GetTimestampMs(), s.GetValue()
}
