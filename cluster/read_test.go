package cluster

import (
	"context"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	gproto "google.golang.org/protobuf/proto"

	clusterv1 "github.com/headroomdb/headroom/proto/headroom/cluster/v1"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

// selectResponseOf encodes b's series as an owner's Select sends them.
func selectResponseOf(t testing.TB, b *Batch) *clusterv1.SelectResponse {
	resp := &clusterv1.SelectResponse{}
	for _, s := range b.Series {
		hc, err := encodeHists(s.Hists)
		if err != nil {
			t.Fatal(err)
		}
		resp.Series = append(resp.Series, &clusterv1.Series{Labels: labelsToProto(s.Labels), Chunks: encodeFloats(s.Samples), HistogramChunks: hc})
	}
	return resp
}

// TestSelectChunksRoundTrip: what an owner encodes, the asking node
// decodes to the same samples, NaN bits and histograms included, across
// the cut between chunks.
func TestSelectChunksRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	b := randomBatch(r)
	// One long series, cut into several chunks.
	long := BatchSeries{Labels: series.FromStrings("__name__", "long")}
	for i := 0; i < 3*chunkSamples+7; i++ {
		long.Samples = append(long.Samples, series.Sample{T: int64(i) * 15_000, V: r.Float64()})
	}
	b.Series = append(b.Series, long)
	resp := selectResponseOf(t, b)
	if n := len(resp.Series[len(resp.Series)-1].Chunks); n != 4 {
		t.Errorf("%d samples in %d chunks, want 4", len(long.Samples), n)
	}
	got := &Batch{}
	for _, s := range resp.Series {
		r, err := decodeSeries(s)
		if err != nil {
			t.Fatal(err)
		}
		got.Series = append(got.Series, BatchSeries{Labels: r.ls, Samples: r.ss, Hists: r.hists})
	}
	// A histogram chunk keeps its own reset hints (Prometheus's chunk
	// semantics), not the sender's.
	for _, b := range []*Batch{got, b} {
		for _, s := range b.Series {
			for _, h := range s.Hists {
				h.H.CounterReset = 0
			}
		}
	}
	g, w := normalize(got), normalize(b)
	for i := range min(len(g), len(w)) {
		if !reflect.DeepEqual(g[i], w[i]) {
			t.Fatalf("decoded series differ from those encoded at %d: %v, want %v (lengths %d, %d)", i, g[i], w[i], len(g), len(w))
		}
	}
	if len(g) != len(w) {
		t.Fatalf("decoded %d items, want %d", len(g), len(w))
	}
}

// FuzzSelectResponse: a peer's answer, however damaged, decodes or
// fails with an error; it never panics the asking node.
func FuzzSelectResponse(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 3 {
		data, err := gproto.Marshal(selectResponseOf(f, randomBatch(r)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp clusterv1.SelectResponse
		if gproto.Unmarshal(data, &resp) != nil {
			return
		}
		for _, s := range resp.Series {
			decodeSeries(s)
		}
	})
}

// FuzzExemplarsResponse: a peer's exemplars, however damaged, convert
// or are refused by the protobuf decoder; they never panic the node.
func FuzzExemplarsResponse(f *testing.F) {
	resp := &clusterv1.ExemplarsResponse{Series: []*clusterv1.SeriesExemplars{{
		Labels:    labelsToProto(series.FromStrings("__name__", "req", "path", "/a")),
		Exemplars: []*clusterv1.Exemplar{{Labels: labelsToProto(series.FromStrings("trace_id", "a")), Value: 1.5, TimestampMs: 1000}},
	}}}
	data, err := gproto.Marshal(resp)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp clusterv1.ExemplarsResponse
		if gproto.Unmarshal(data, &resp) != nil {
			return
		}
		mergeExemplars(exemplarsFromProto(&resp))
	})
}

// FuzzCheckSeriesRequest: a peer's series check, however damaged (labels
// unsorted, repeated, empty), is answered or refused without a panic,
// and never brings a series into the store.
func FuzzCheckSeriesRequest(f *testing.F) {
	for _, lss := range [][]series.Labels{
		{series.FromStrings("__name__", "a", "i", "0"), series.FromStrings("__name__", "a", "i", "1"), series.FromStrings("__name__", "b")},
		{series.FromStrings("__name__", "a", "i", "0"), series.FromStrings("__name__", "a", "i", "0")},
		{{{Name: "z", Value: "1"}, {Name: "a", Value: ""}}},
	} {
		req := &clusterv1.CheckSeriesRequest{}
		for _, ls := range lss {
			req.Series = append(req.Series, &clusterv1.Series{Labels: labelsToProto(ls)})
		}
		data, err := gproto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	db, err := storage.Open(f.TempDir(), storage.Options{MaxActiveSeries: 3, MaxActiveSeriesPerMetric: 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	a := db.Appender()
	if err := a.Append(series.FromStrings("__name__", "a", "i", "0"), time.Now().UnixMilli(), 1); err != nil {
		f.Fatal(err)
	}
	if err := a.Commit(); err != nil {
		f.Fatal(err)
	}
	srv := selectServer{n: &Node{local: store{db}}}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req clusterv1.CheckSeriesRequest
		if gproto.Unmarshal(data, &req) != nil {
			return
		}
		resp, err := srv.CheckSeries(context.Background(), &req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Refused != "" && !strings.Contains(resp.Refused, "the limit is") {
			t.Fatalf("a refusal that does not name the limit: %q", resp.Refused)
		}
		if n := db.ActiveSeries(); n != 1 {
			t.Fatalf("the check left %d series in the store, want the 1 written", n)
		}
	})
}
