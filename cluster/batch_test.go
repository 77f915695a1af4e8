package cluster

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"

	"github.com/headroomdb/headroom/storage/series"
)

func randomBatch(r *rand.Rand) *Batch {
	b := &Batch{}
	for i := range 1 + r.IntN(20) {
		s := BatchSeries{Labels: series.FromStrings("__name__", "m"+strconv.Itoa(r.IntN(5)), "host", "h"+strconv.Itoa(i), "zone", "z"+strconv.Itoa(r.IntN(3)))}
		t := r.Int64N(1 << 40)
		for range r.IntN(30) {
			t += 1 + r.Int64N(60_000)
			v := r.NormFloat64() * 100
			if r.IntN(20) == 0 {
				v = series.StaleNaN
			}
			s.Samples = append(s.Samples, series.Sample{T: t, V: v})
		}
		for range r.IntN(4) {
			t += 1 + r.Int64N(60_000)
			h := &series.Histogram{Schema: 3, Count: 10, Sum: r.Float64(), PositiveSpans: []series.Span{{Offset: 1, Length: 2}}, PositiveBuckets: []float64{4, 6}}
			s.Hists = append(s.Hists, series.HistSample{T: t, H: h})
		}
		b.Series = append(b.Series, s)
	}
	return b
}

// A batch comes back as it went, NaN bits and histograms included; a
// split puts each series in its partition once; damage is an error.
func TestBatchRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 19))
	for iter := 0; iter < 300; iter++ {
		b := randomBatch(r)
		enc := AppendBatch(nil, b)
		got, err := DecodeBatch(enc)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(b)) {
			t.Fatalf("iteration %d: decoded %+v, want %+v", iter, got, b)
		}
		parts := Split(b, 7)
		n := 0
		for p, part := range parts {
			for _, s := range part.Series {
				if PartitionOf(s.Labels, 7) != p {
					t.Fatalf("series %s in part %d, its partition is %d", s.Labels, p, PartitionOf(s.Labels, 7))
				}
				n++
			}
		}
		if n != len(b.Series) {
			t.Fatalf("split kept %d of %d series", n, len(b.Series))
		}
		enc[r.IntN(len(enc))] ^= 1 << r.IntN(8)
		if _, err := DecodeBatch(enc); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a damaged batch decoded: %v", err)
		}
	}
}

// normalize compares floats by their bits (NaN equals NaN).
func normalize(b *Batch) []any {
	var out []any
	for _, s := range b.Series {
		out = append(out, s.Labels.String())
		for _, x := range s.Samples {
			out = append(out, x.T, math.Float64bits(x.V))
		}
		for _, x := range s.Hists {
			out = append(out, x.T, string(series.AppendHistogramBinary(nil, x.H)))
		}
	}
	return out
}

// FuzzDecodeBatch: a batch from the stream is outside bytes; the decoder
// never panics, and what it accepts encodes back to the same bytes.
func FuzzDecodeBatch(f *testing.F) {
	r := rand.New(rand.NewPCG(20, 20))
	for range 3 {
		f.Add(AppendBatch(nil, randomBatch(r)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBatch(data)
		if err != nil {
			return
		}
		again, err := DecodeBatch(AppendBatch(nil, b))
		if err != nil || !reflect.DeepEqual(normalize(again), normalize(b)) {
			t.Fatalf("re-encoded batch: %v", err)
		}
	})
}

// TestSeenSeries: the cache of published series keeps a series written
// in every epoch, forgets one not written for two epochs, and stays
// within its capacity (two generations of it).
func TestSeenSeries(t *testing.T) {
	s := newSeenSeries(64 * 4)                       // 4 a stripe
	steady, idle := uint64(1)<<58|1, uint64(1)<<58|2 // one stripe
	s.add(steady)
	s.add(idle)
	s.epoch.Add(1)
	if !s.has(steady) || !s.has(idle) {
		t.Fatal("forgot a series written in the last epoch")
	}
	s.epoch.Add(1)
	if !s.has(steady) {
		t.Fatal("forgot a series written in every epoch")
	}
	s.epoch.Add(1)
	s.epoch.Add(1)
	s.add(steady)
	s.epoch.Add(1)
	if !s.has(steady) {
		t.Fatal("forgot a series written one epoch ago")
	}
	if s.has(idle) {
		t.Fatal("a series not written for four epochs is still known")
	}
	// A stripe nobody touched meanwhile forgets too.
	quiet := uint64(2)<<58 | 1
	s.add(quiet)
	s.epoch.Add(3)
	if s.has(quiet) {
		t.Fatal("a series of an untouched stripe not written for three epochs is still known")
	}
	// Full: a generation holds at most 4 of the stripe's series.
	for i := uint64(0); i < 100; i++ {
		s.add(uint64(1)<<58 | (100 + i))
	}
	st := &s.stripes[1]
	if len(st.cur) > 4 || len(st.old) > 4 {
		t.Fatalf("a stripe holds %d and %d series, past its 4", len(st.cur), len(st.old))
	}
	if !s.has(uint64(1)<<58 | 199) {
		t.Fatal("forgot the last series added")
	}
}

// TestHandoverWaitsForServingOwner: a lower-ranked owner gives its slot
// to a better-ranked node only while the partition's other owner serves
// it (caught up), not merely holds it: otherwise nobody would serve the
// partition until one of them caught up.
func TestHandoverWaitsForServingOwner(t *testing.T) {
	n := &Node{cfg: Config{Node: "b"}}
	want, slots := []string{"a", "c"}, []string{"b", "c"}
	if n.better(3, want, slots, map[string]map[int]bool{"c": {1: true}}) {
		t.Error("gave way while the other owner catches up")
	}
	if n.better(3, want, slots, map[string]map[int]bool{}) {
		t.Error("gave way without knowing what the other owner serves")
	}
	if !n.better(3, want, slots, map[string]map[int]bool{"c": parseServing("1,3,7")}) {
		t.Error("kept a slot a better-ranked node wants while the other owner serves")
	}
	if n.better(3, []string{"b", "c"}, slots, map[string]map[int]bool{"c": {3: true}}) {
		t.Error("gave way with no better-ranked node waiting")
	}
	n.held = map[int]*owned{2: {}, 5: {}, 9: {}}
	n.held[5].ready.Store(true)
	n.held[9].ready.Store(true)
	n.held[9].incomplete.Store(true)
	if got := n.servingList(); got != "5" {
		t.Errorf("serving list %q, want 5 (2 catches up, 9 is incomplete)", got)
	}
	if got := parseServing(n.servingList()); len(got) != 1 || !got[5] {
		t.Errorf("the list read back: %v", got)
	}
	n.held = nil
	if got := parseServing(n.servingList()); len(got) != 0 {
		t.Errorf("a node serving nothing reads back as %v", got)
	}
}

// BenchmarkDecodeBatch is an owner's decode of one message: 1,000
// series of three labels x 10 samples.
func BenchmarkDecodeBatch(b *testing.B) {
	bt := &Batch{}
	for s := 0; s < 1000; s++ {
		bs := BatchSeries{Labels: series.FromStrings("__name__", "node_cpu_seconds_total", "instance", "host-"+strconv.Itoa(s)+":9100", "mode", "idle")}
		for i := 0; i < 10; i++ {
			bs.Samples = append(bs.Samples, series.Sample{T: 1_700_000_000_000 + int64(i)*15_000, V: float64(s*i) / 7})
		}
		bt.Series = append(bt.Series, bs)
	}
	msg := AppendBatch(nil, bt)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeBatch(msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10_000, "ns/sample")
}
