package ingest

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/storage/series"
)

// GRPC implements headroom.v1.Ingest over an Appendable.
type GRPC struct {
	headroomv1.UnimplementedIngestServer
	db   *appenderPool
	opts Options
}

// NewGRPC returns the Ingest service. Register it with Register, on a
// server created with ServerOptions, for the zero-allocation Write path;
// headroomv1.RegisterIngestServer works too, through the generic protobuf
// decoder.
func NewGRPC(db Appendable, o Options) *GRPC {
	o.Limits = o.Limits.withDefaults()
	return &GRPC{db: newAppenderPool(db), opts: o}
}

// Write stores the request whole, or refuses it whole.
func (g *GRPC) Write(ctx context.Context, req *headroomv1.WriteRequest) (*headroomv1.WriteResponse, error) {
	n, err := g.store(ctx, req.GetSeries())
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
		n, err := g.store(stream.Context(), req.GetSeries())
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
func (g *GRPC) store(ctx context.Context, ss []*headroomv1.Series) (int, error) {
	if err := g.opts.admit(ctx, "grpc"); err != nil {
		return 0, err
	}
	defer g.opts.Gate.Leave()
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

// Codec is gRPC's protobuf codec, except that it hands the Ingest
// service's Write request over undecoded, for decodeWrite.
type Codec struct{}

var protoCodec = encoding.GetCodecV2("proto")

// rawRequest is a request body as received.
type rawRequest []byte

func (Codec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*rawRequest); ok {
		// Materialize copies into a slice of our own, which nothing
		// reuses: decoded label strings may share its memory.
		*r = data.Materialize()
		return nil
	}
	return protoCodec.Unmarshal(data, v)
}
func (Codec) Name() string { return "proto" }

// ServerOptions are the options a gRPC server needs for Register.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ForceServerCodecV2(Codec{})}
}

// Register registers the Ingest service on s, whose Write decodes the
// request without the generic protobuf decoder. s must have been created
// with ServerOptions.
func (g *GRPC) Register(s grpc.ServiceRegistrar) {
	d := headroomv1.Ingest_ServiceDesc
	d.Methods = []grpc.MethodDesc{{MethodName: "Write", Handler: rawHandler(headroomv1.Ingest_Write_FullMethodName, func(ctx context.Context, b []byte) (any, error) {
		return g.writeRaw(ctx, b)
	})}}
	s.RegisterService(&d, g)
}

// rawHandler is a unary method handler that receives its request as
// bytes (see Codec) and hands them to serve, through the interceptors.
func rawHandler(method string, serve func(context.Context, []byte) (any, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		var raw rawRequest
		if err := dec(&raw); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, req any) (any, error) { return serve(ctx, *req.(*rawRequest)) }
		if interceptor == nil {
			return h(ctx, &raw)
		}
		return interceptor(ctx, &raw, &grpc.UnaryServerInfo{Server: srv, FullMethod: method}, h)
	}
}

func (g *GRPC) writeRaw(ctx context.Context, body []byte) (*headroomv1.WriteResponse, error) {
	if err := g.opts.admit(ctx, "grpc"); err != nil {
		return nil, err
	}
	defer g.opts.Gate.Leave()
	fb := getFlat()
	defer fb.release()
	fb.cache = g.db.cache
	if err := decodeWrite(body, ownSchema, fb); err != nil {
		g.opts.Metrics.Reject("grpc", reason(err))
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	n, err := write(g.db, &g.opts, "grpc", fb)
	if err != nil {
		return nil, grpcStatus(err)
	}
	return &headroomv1.WriteResponse{SamplesWritten: uint64(n), SeriesWritten: uint64(fb.Len())}, nil
}
