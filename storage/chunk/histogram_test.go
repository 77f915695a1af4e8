package chunk

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/headroomdb/headroom/storage/series"
)

// latencyHistograms is a counter histogram series as a service's request
// latency makes it: 20 buckets of schema 3 in two spans, scraped every
// 15 s, each bucket growing by a few requests a scrape.
func latencyHistograms(r *rand.Rand, n int, float bool) []series.Histogram {
	out := make([]series.Histogram, n)
	pos := make([]float64, 20)
	neg := make([]float64, 2)
	var count, zero, sum float64
	for i := range out {
		for b := range pos {
			pos[b] += float64(r.IntN(5 + b%7))
		}
		neg[0] += float64(r.IntN(2))
		zero += float64(r.IntN(2))
		count = zero + neg[0] + neg[1]
		for _, c := range pos {
			count += c
		}
		sum += float64(r.IntN(1000)) / 7
		h := series.Histogram{Float: float, Schema: 3, ZeroThreshold: 1e-128, ZeroCount: zero, Count: count, Sum: sum,
			PositiveSpans: []series.Span{{Offset: -2, Length: 12}, {Offset: 3, Length: 8}}, NegativeSpans: []series.Span{{Offset: 0, Length: 2}},
			PositiveBuckets: append([]float64(nil), pos...), NegativeBuckets: append([]float64(nil), neg...)}
		if float {
			for b := range h.PositiveBuckets {
				h.PositiveBuckets[b] /= 3 // rates and merges make fractions
			}
			h.Count /= 3
		}
		out[i] = h
	}
	return out
}

func histEqual(a, b *series.Histogram) bool {
	same := func(x, y []float64) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if math.Float64bits(x[i]) != math.Float64bits(y[i]) {
				return false
			}
		}
		return true
	}
	return a.Float == b.Float && a.Schema == b.Schema && sameFloat(a.ZeroThreshold, b.ZeroThreshold) &&
		sameFloat(a.ZeroCount, b.ZeroCount) && sameFloat(a.Count, b.Count) && sameFloat(a.Sum, b.Sum) &&
		reflect.DeepEqual(a.PositiveSpans, b.PositiveSpans) && reflect.DeepEqual(a.NegativeSpans, b.NegativeSpans) &&
		same(a.PositiveBuckets, b.PositiveBuckets) && same(a.NegativeBuckets, b.NegativeBuckets) && same(a.CustomValues, b.CustomValues)
}

// TestHistogramRoundTrip: integer and float histograms, irregular
// intervals, big jumps and special sums come back bit for bit.
func TestHistogramRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, float := range []bool{false, true} {
		hs := latencyHistograms(r, 500, float)
		hs[7].Sum = math.NaN()
		hs[8].Sum = math.Inf(1)
		hs[300].PositiveBuckets[5] += 1 << 40 // a burst: the widest varbit
		for i := 301; i < len(hs); i++ {
			hs[i].PositiveBuckets[5] += 1 << 40
		}
		a := NewHistogramAppender()
		ts := make([]int64, len(hs))
		tm := int64(1_700_000_000_000)
		for i := range hs {
			tm += 15_000 + int64(r.IntN(3)-1)*int64(r.IntN(2000))
			ts[i] = tm
			if err := a.Append(tm, &hs[i]); err != nil {
				t.Fatalf("float=%v sample %d: %v", float, i, err)
			}
		}
		it := NewHistogramIterator(a.Bytes())
		i := 0
		for it.Next() {
			gt, gh := it.At()
			if gt != ts[i] || !histEqual(gh, &hs[i]) {
				t.Fatalf("float=%v sample %d: got %d %+v, want %d %+v", float, i, gt, gh, ts[i], hs[i])
			}
			i++
		}
		if it.Err() != nil || i != len(hs) {
			t.Fatalf("float=%v: %d of %d samples, %v", float, i, len(hs), it.Err())
		}
		t.Logf("float=%v: %d samples of 22 buckets in %d bytes, %.1f bytes a sample", float, len(hs), a.Size(), float64(a.Size())/float64(len(hs)))
	}
}

// TestHistogramChunkBoundaries: a new layout, a schema change or a
// counter reset needs a new chunk; the first sample's hint is kept, the
// others read as "no reset"; gauges stay gauges.
func TestHistogramChunkBoundaries(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	hs := latencyHistograms(r, 3, false)
	a := NewHistogramAppender()
	hs[0].CounterReset = 1
	for i := range 2 {
		if err := a.Append(int64(i+1)*1000, &hs[i]); err != nil {
			t.Fatal(err)
		}
	}
	other := hs[2]
	other.Schema = 4
	if err := a.Append(3000, &other); !errors.Is(err, ErrLayout) {
		t.Errorf("schema change: %v", err)
	}
	other = hs[2]
	other.PositiveSpans = []series.Span{{Offset: -2, Length: 13}, {Offset: 2, Length: 8}}
	other.PositiveBuckets = append(append([]float64(nil), hs[2].PositiveBuckets...), 1)
	if err := a.Append(3000, &other); !errors.Is(err, ErrLayout) {
		t.Errorf("new bucket: %v", err)
	}
	reset := hs[2]
	reset.PositiveBuckets = append([]float64(nil), hs[2].PositiveBuckets...)
	reset.PositiveBuckets[0] = 0
	if err := a.Append(3000, &reset); !errors.Is(err, ErrLayout) {
		t.Errorf("a count that fell (counter reset): %v", err)
	}
	if err := a.Append(2000, &hs[2]); !errors.Is(err, ErrOutOfOrder) {
		t.Errorf("same timestamp: %v", err)
	}
	bad := hs[2]
	bad.PositiveBuckets = bad.PositiveBuckets[:3]
	if err := a.Append(3000, &bad); err == nil {
		t.Error("buckets that do not match the spans were accepted")
	}
	if err := a.Append(3000, &hs[2]); err != nil {
		t.Fatal(err)
	}
	it := NewHistogramIterator(a.Bytes())
	var hints []uint8
	for it.Next() {
		_, h := it.At()
		hints = append(hints, h.CounterReset)
	}
	if !reflect.DeepEqual(hints, []uint8{1, 2, 2}) {
		t.Errorf("hints %v, want [1 2 2]", hints)
	}
	// A gauge histogram may fall and stays a gauge.
	g := NewHistogramAppender()
	gs := latencyHistograms(r, 2, false)
	gs[0].CounterReset, gs[1].CounterReset = 3, 3
	gs[1].PositiveBuckets[0] = 0
	gs[1].Count -= gs[0].PositiveBuckets[0]
	for i := range gs {
		if err := g.Append(int64(i), &gs[i]); err != nil {
			t.Fatalf("gauge sample %d: %v", i, err)
		}
	}
	it = NewHistogramIterator(g.Bytes())
	for it.Next() {
		if _, h := it.At(); h.CounterReset != 3 {
			t.Errorf("gauge read with hint %d", h.CounterReset)
		}
	}
	// A float counter histogram that falls resets too: a chunk that kept
	// it would read "no reset" across it, and rate would count the fall
	// as a negative increase.
	fs := latencyHistograms(r, 2, true)
	f := NewHistogramAppender()
	if err := f.Append(1, &fs[0]); err != nil {
		t.Fatal(err)
	}
	fell := fs[1]
	fell.PositiveBuckets = append([]float64(nil), fs[1].PositiveBuckets...)
	fell.PositiveBuckets[0] = fs[0].PositiveBuckets[0] / 2
	if err := f.Append(2, &fell); !errors.Is(err, ErrLayout) {
		t.Errorf("a float count that fell (counter reset): %v", err)
	}
	// Custom buckets (schema -53) keep their bounds.
	c := series.Histogram{Schema: -53, CustomValues: []float64{0.1, 0.5, 1}, Count: 3, Sum: 1.2,
		PositiveSpans: []series.Span{{Length: 3}}, PositiveBuckets: []float64{1, 1, 1}}
	ca := NewHistogramAppender()
	if err := ca.Append(5, &c); err != nil {
		t.Fatal(err)
	}
	it = NewHistogramIterator(ca.Bytes())
	if !it.Next() {
		t.Fatal(it.Err())
	}
	if _, h := it.At(); !histEqual(h, &c) {
		t.Errorf("custom buckets: %+v", h)
	}
}

// FuzzHistogramChunk: arbitrary bytes never panic the iterator, and a
// chunk it reads whole is made of samples whose buckets match the spans.
func FuzzHistogramChunk(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, float := range []bool{false, true} {
		a := NewHistogramAppender()
		for i, h := range latencyHistograms(r, 5, float) {
			_ = a.Append(int64(i)*1000, &h)
		}
		f.Add(append([]byte(nil), a.Bytes()...))
	}
	f.Add([]byte{EncHistogram, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		it := NewHistogramIterator(b)
		n := 0
		for it.Next() {
			_, h := it.At()
			if err := checkShape(h); err != nil {
				t.Fatalf("sample %d: %v", n, err)
			}
			n++
		}
		if it.Err() != nil && !errors.Is(it.Err(), ErrCorrupt) {
			t.Fatalf("error not wrapping ErrCorrupt: %v", it.Err())
		}
	})
}

// BenchmarkHistogramAppend: samples of 22 buckets encoded a second, and
// the bytes a sample takes at rest.
func BenchmarkHistogramAppend(b *testing.B) {
	hs := latencyHistograms(rand.New(rand.NewPCG(7, 8)), 120, false)
	b.ReportAllocs()
	var size int
	for b.Loop() {
		a := NewHistogramAppender()
		for i := range hs {
			if err := a.Append(int64(i)*15_000, &hs[i]); err != nil {
				b.Fatal(err)
			}
		}
		size = a.Size()
	}
	b.ReportMetric(float64(size)/float64(len(hs)), "bytes/sample")
	b.ReportMetric(float64(len(hs)*b.N)/b.Elapsed().Seconds(), "samples/s")
}

// The timestamp ranges are asymmetric (-8191..8192 in 14 bits, as
// Prometheus's): a delta of delta of exactly 8192, 65536 or 524288 once
// decoded as its negative and turned the rest of the chunk to garbage.
func TestHistogramTimestampRangeEdges(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, dod := range []int64{8192, -8191, 8193, -8192, 65536, -65535, 65537, 524288, -524287, 524289, 1 << 40} {
		hs := latencyHistograms(r, 4, dod%2 == 0)
		ts := []int64{1_000_000_000, 1_001_000_000}
		ts = append(ts, ts[1]+1_000_000+dod)
		ts = append(ts, ts[2]+(ts[2]-ts[1]))
		a := NewHistogramAppender()
		for i := range hs {
			if err := a.Append(ts[i], &hs[i]); err != nil {
				t.Fatal(err)
			}
		}
		it := NewHistogramIterator(a.Bytes())
		for i := range hs {
			if !it.Next() {
				t.Fatalf("delta of delta %d: sample %d: %v", dod, i, it.Err())
			}
			if got, h := it.At(); got != ts[i] || !histEqual(h, &hs[i]) {
				t.Fatalf("delta of delta %d: sample %d at %d, want %d", dod, i, got, ts[i])
			}
		}
	}
}
