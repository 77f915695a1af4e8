package query

import (
	"context"
	"errors"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/headroomdb/headroom/admit"
	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/storage/series"
)

// GRPC implements headroom.v1.Query over a Source.
type GRPC struct {
	headroomv1.UnimplementedQueryServer
	src    Source
	engine *Engine
	// BatchPoints bounds the points in one streamed message. Default
	// 10,000.
	BatchPoints int
}

// NewGRPC returns the Query service; register it with
// headroomv1.RegisterQueryServer.
func NewGRPC(src Source, engine *Engine) *GRPC {
	if engine == nil {
		engine = &Engine{}
	}
	return &GRPC{src: src, engine: engine, BatchPoints: 10_000}
}

func (g *GRPC) RangeQuery(req *headroomv1.RangeQueryRequest, stream headroomv1.Query_RangeQueryServer) error {
	res, err := g.engine.Range(WithTier(stream.Context(), req.GetTier()), g.src, req.GetQuery(), req.GetStartMs(), req.GetEndMs(), req.GetStepMs())
	if err != nil {
		return GRPCError(err)
	}
	return g.send(res, stream.Send)
}

func (g *GRPC) InstantQuery(req *headroomv1.InstantQueryRequest, stream headroomv1.Query_InstantQueryServer) error {
	t := req.GetTimeMs()
	if t == 0 {
		t = time.Now().UnixMilli()
	}
	res, err := g.engine.Instant(WithTier(stream.Context(), req.GetTier()), g.src, req.GetQuery(), t)
	if err != nil {
		return GRPCError(err)
	}
	return g.send(res, stream.Send)
}

// send streams a result: the type first, then series in batches of about
// BatchPoints points, each batch encoded only when sent.
func (g *GRPC) send(res *Result, send func(*headroomv1.QueryResponse) error) error {
	msg := &headroomv1.QueryResponse{ResultType: res.Type, Tiers: res.Tiers, Warnings: res.Warnings, Infos: res.Infos}
	switch res.Type {
	case "scalar", "string":
		msg.Scalar = &headroomv1.Sample{TimestampMs: res.Scalar.T, Value: res.Scalar.V}
		msg.StringValue = res.String
		return send(msg)
	}
	points := 0
	for _, s := range res.Series {
		rs := &headroomv1.ResultSeries{Labels: protoLabels(s.Labels), Samples: make([]*headroomv1.Sample, len(s.Points))}
		for i, p := range s.Points {
			rs.Samples[i] = &headroomv1.Sample{TimestampMs: p.T, Value: p.V}
		}
		for _, p := range s.Histograms {
			hp := &headroomv1.HistogramPoint{TimestampMs: p.T, Count: p.H.Count, Sum: p.H.Sum}
			for _, b := range HistogramBuckets(p.H) {
				hp.Buckets = append(hp.Buckets, &headroomv1.HistogramBucket{Boundaries: int32(b.Boundaries), Lower: b.Lower, Upper: b.Upper, Count: b.Count})
			}
			rs.Histograms = append(rs.Histograms, hp)
		}
		msg.Series = append(msg.Series, rs)
		points += len(s.Points) + len(s.Histograms)
		if points >= g.BatchPoints {
			if err := send(msg); err != nil {
				return err
			}
			msg, points = &headroomv1.QueryResponse{ResultType: res.Type}, 0
		}
	}
	if len(msg.Series) > 0 || points == 0 {
		return send(msg)
	}
	return nil
}

func protoLabels(ls series.Labels) []*headroomv1.Label {
	out := make([]*headroomv1.Label, len(ls))
	for i, l := range ls {
		out[i] = &headroomv1.Label{Name: l.Name, Value: l.Value}
	}
	return out
}

// grpcError maps evaluation errors to status codes.
// GRPCError maps engine errors to gRPC status codes.
func GRPCError(err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, ErrBadQuery):
		code = codes.InvalidArgument
	case errors.Is(err, admit.ErrBusy):
		st, _ := status.New(codes.ResourceExhausted, err.Error()).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(admit.RetryAfter)})
		return st.Err()
	case errors.Is(err, ErrTooLarge):
		code = codes.ResourceExhausted
	case errors.Is(err, ErrExec):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}
