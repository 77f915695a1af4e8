package ingest_test

import (
	"context"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/headroomdb/headroom/ingest"
	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/storage"
)

// db adapts the real storage engine to ingest.Appendable, as the binary does.
type db struct{ *storage.DB }

func (d db) Appender() ingest.Appender { return d.DB.Appender() }

// start runs the Ingest service on a loopback port over a real data
// directory and returns a client and the database.
func start(t *testing.T, limits ingest.Limits) (headroomv1.IngestClient, *storage.DB) {
	t.Helper()
	conn, d := startConn(t, limits)
	return headroomv1.NewIngestClient(conn), d
}

// startConn serves both gRPC services of ingest (Ingest and OTLP) on one
// loopback port, as the server does.
func startConn(t *testing.T, limits ingest.Limits) (*grpc.ClientConn, *storage.DB) {
	t.Helper()
	d, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ingest.ServerOptions()...)
	ingest.NewGRPC(db{d}, ingest.Options{Limits: limits}).Register(srv)
	ingest.NewOTLP(db{d}, ingest.Options{Limits: limits}).Register(srv)
	go srv.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		d.Close()
	})
	return conn, d
}

func lbls(nv ...string) []*headroomv1.Label {
	var out []*headroomv1.Label
	for i := 0; i < len(nv); i += 2 {
		out = append(out, &headroomv1.Label{Name: nv[i], Value: nv[i+1]})
	}
	return out
}

var now = time.Now().UnixMilli()

func good(name string) *headroomv1.Series {
	return &headroomv1.Series{Labels: lbls("host", "a", "__name__", name), Samples: []*headroomv1.Sample{{TimestampMs: now - 1000, Value: 1}, {TimestampMs: now, Value: math.NaN()}}}
}

func countSeries(t *testing.T, d *storage.DB) int {
	t.Helper()
	seen := map[string]bool{}
	for _, line := range dump(t, d) {
		seen[line[:strings.LastIndexByte(line, ' ')]] = true
	}
	return len(seen)
}

func TestWrite(t *testing.T) {
	c, d := start(t, ingest.Limits{LabelValueLength: 64, SeriesPerRequest: 3})
	ctx := context.Background()
	resp, err := c.Write(ctx, &headroomv1.WriteRequest{Series: []*headroomv1.Series{good("cpu"), good("mem")}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesWritten != 4 || resp.SeriesWritten != 2 {
		t.Errorf("Write = %v, want 4 samples of 2 series", resp)
	}
	if n := countSeries(t, d); n != 2 {
		t.Fatalf("%d series stored, want 2", n)
	}

	bad := func(name string, s *headroomv1.Series, code codes.Code, msg string) {
		t.Helper()
		// The bad series comes second: the good one before it must not be stored.
		_, err := c.Write(ctx, &headroomv1.WriteRequest{Series: []*headroomv1.Series{good("ok_" + strings.ReplaceAll(name, " ", "_")), s}})
		st, _ := status.FromError(err)
		if st.Code() != code || !strings.Contains(st.Message(), msg) {
			t.Errorf("%s: got %v %q, want %v mentioning %q", name, st.Code(), st.Message(), code, msg)
		}
		if code != codes.InvalidArgument {
			return
		}
		var field string
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) == 1 {
				field = br.FieldViolations[0].Field
			}
		}
		if field != "series[1]" {
			t.Errorf("%s: BadRequest detail names field %q, want series[1]", name, field)
		}
	}
	ts := []*headroomv1.Sample{{TimestampMs: now, Value: 1}}
	bad("empty labels", &headroomv1.Series{Samples: ts}, codes.InvalidArgument, "empty label set")
	bad("duplicate labels", &headroomv1.Series{Labels: lbls("__name__", "x", "a", "1", "a", "2"), Samples: ts}, codes.InvalidArgument, `duplicate label name "a"`)
	bad("no metric name", &headroomv1.Series{Labels: lbls("a", "1"), Samples: ts}, codes.InvalidArgument, "missing metric name")
	bad("bad label name", &headroomv1.Series{Labels: lbls("__name__", "x", "a\tb", "1"), Samples: ts}, codes.InvalidArgument, `invalid label name "a\tb"`)
	bad("huge label value", &headroomv1.Series{Labels: lbls("__name__", "x", "a", strings.Repeat("v", 65)), Samples: ts}, codes.InvalidArgument, "limit is 64")
	bad("negative timestamp", &headroomv1.Series{Labels: lbls("__name__", "x"), Samples: []*headroomv1.Sample{{TimestampMs: -5, Value: 1}}}, codes.InvalidArgument, "outside the range")
	bad("too old", &headroomv1.Series{Labels: lbls("__name__", "x"), Samples: []*headroomv1.Sample{{TimestampMs: now - 11*365*24*3600_000, Value: 1}}}, codes.InvalidArgument, "retention") // older than every tier keeps
	_, err = c.Write(ctx, &headroomv1.WriteRequest{Series: []*headroomv1.Series{good("a"), good("b"), good("c"), good("d")}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("4 series over a limit of 3: %v, want ResourceExhausted", err)
	}
	if n := countSeries(t, d); n != 2 {
		t.Fatalf("%d series stored after refused requests, want still 2", n)
	}
	// Still healthy.
	if _, err := c.Write(ctx, &headroomv1.WriteRequest{Series: []*headroomv1.Series{good("disk")}}); err != nil {
		t.Fatalf("write after refused requests: %v", err)
	}
}

func TestWriteStream(t *testing.T) {
	c, d := start(t, ingest.Limits{})
	stream, err := c.WriteStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	batches := []*headroomv1.WriteStreamRequest{
		{Sequence: 7, Series: []*headroomv1.Series{good("a")}},
		{Sequence: 8, Series: []*headroomv1.Series{{Labels: lbls("x", "1"), Samples: []*headroomv1.Sample{{TimestampMs: now}}}}},
		{Sequence: 9, Series: []*headroomv1.Series{good("b")}},
	}
	for _, b := range batches {
		if err := stream.Send(b); err != nil {
			t.Fatal(err)
		}
	}
	stream.CloseSend()
	for i, b := range batches {
		ack, err := stream.Recv()
		if err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
		if ack.Sequence != b.Sequence {
			t.Fatalf("ack %d has sequence %d, want %d", i, ack.Sequence, b.Sequence)
		}
		wantErr := b.Sequence == 8
		if (ack.Error != "") != wantErr || (wantErr && codes.Code(ack.Code) != codes.InvalidArgument) {
			t.Errorf("ack %d = %+v, want error %v", i, ack, wantErr)
		}
		if !wantErr && ack.SamplesWritten != 2 {
			t.Errorf("ack %d: %d samples written, want 2", i, ack.SamplesWritten)
		}
	}
	if n := countSeries(t, d); n != 2 {
		t.Fatalf("%d series stored, want 2", n)
	}
}

// A series sent again in the same bytes is found by them (the reference
// cache), and its samples land where its labels would put them: in the
// same series as ever, after it left the head and came back, and beside
// the same series sent with its labels in another order.
func TestRefCache(t *testing.T) {
	d, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true, HeadIdleTimeout: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ingest.ServerOptions()...)
	g := ingest.NewGRPC(db{d}, ingest.Options{})
	g.Register(srv)
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := headroomv1.NewIngestClient(conn)
	send := func(ts int64, order ...string) {
		t.Helper()
		var ss []*headroomv1.Series
		for _, host := range []string{"a", "b"} {
			ls := lbls("__name__", "load", "host", host)
			if len(order) > 0 {
				ls = lbls("host", host, "__name__", "load")
			}
			ss = append(ss, &headroomv1.Series{Labels: ls, Samples: []*headroomv1.Sample{{TimestampMs: ts, Value: float64(ts % 1000)}}})
		}
		if _, err := c.Write(context.Background(), &headroomv1.WriteRequest{Series: ss}); err != nil {
			t.Fatal(err)
		}
	}
	send(now - 5000)
	if n := ingest.RefCacheHits(g); n != 0 {
		t.Fatalf("%d hits on a first request", n)
	}
	send(now - 4000)
	if n := ingest.RefCacheHits(g); n != 2 {
		t.Fatalf("%d hits on the second request, want 2", n)
	}
	// Out of the head: two checkpoints after the idle timeout.
	for i := 0; i < 3; i++ {
		if err := d.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	if d.ActiveSeries() != 0 {
		t.Fatalf("%d series still in the head", d.ActiveSeries())
	}
	send(now - 3000) // stale references: by labels
	if n := ingest.RefCacheHits(g); n != 4 {
		t.Fatalf("%d hits, want 4", n)
	}
	send(now-2000, "other order") // other bytes, same series
	send(now - 1000)              // found again
	if n := ingest.RefCacheHits(g); n != 6 {
		t.Fatalf("%d hits, want 6 (the stale ones learned again)", n)
	}
	if got := dump(t, d); len(got) != 10 || countSeries(t, d) != 2 {
		t.Fatalf("stored: %v", got)
	}
	// A bad sample of a known series is refused, naming it.
	_, err = c.Write(context.Background(), &headroomv1.WriteRequest{Series: []*headroomv1.Series{
		{Labels: lbls("__name__", "load", "host", "a"), Samples: []*headroomv1.Sample{{TimestampMs: -5, Value: 1}}}}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `host="a"`) {
		t.Fatalf("a bad timestamp of a cached series: %v", err)
	}
}
