package rollup

import (
	"bytes"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// values draws the shapes metrics have: percentages doing a random walk,
// latencies spread over decades, counters, negative gauges, zeros.
func values(r *rand.Rand, n int) []float64 {
	vs := make([]float64, n)
	shape := r.IntN(5)
	x := r.Float64() * 100
	for i := range vs {
		switch shape {
		case 0:
			x = math.Max(0, math.Min(100, x+float64(r.IntN(5)-2)))
		case 1:
			x = math.Exp(r.NormFloat64()*3) / 1000 // seconds, 1 µs .. 10 s
		case 2:
			x += float64(r.IntN(100))
		case 3:
			x = r.NormFloat64() * 50
		default:
			x = float64(r.IntN(3)) // zeros included
		}
		vs[i] = x
	}
	return vs
}

func TestSketchAccuracy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 300; iter++ {
		vs := values(r, 1+r.IntN(3000))
		var s Sketch
		for _, v := range vs {
			s.Add(v)
		}
		sort.Float64s(vs)
		if s.Count() != uint64(len(vs)) {
			t.Fatalf("count %d, want %d", s.Count(), len(vs))
		}
		for _, q := range []float64{0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1} {
			got, ok := s.Quantile(q)
			if !ok {
				t.Fatal("no quantile of a non-empty sketch")
			}
			// Prometheus's definition: ranks floor and ceil of q(n-1),
			// interpolated. Each of the two values may be off by 1% (or
			// be a zero for a magnitude under minValue).
			rank := q * float64(len(vs)-1)
			lo, hi := vs[int(math.Floor(rank))], vs[int(math.Ceil(rank))]
			frac := rank - math.Floor(rank)
			want := lo + frac*(hi-lo)
			tol := RelativeAccuracy*((1-frac)*math.Abs(lo)+frac*math.Abs(hi)) + minValue + 1e-12*math.Abs(want)
			if math.Abs(got-want) > tol {
				t.Fatalf("iteration %d q%v: %v for %v (ranks %v, %v)", iter, q, got, want, lo, hi)
			}
		}
	}
	var empty Sketch
	if _, ok := empty.Quantile(0.5); ok {
		t.Error("an empty sketch answered")
	}
}

// Sketches of parts merged are the sketch of the whole, bin for bin.
func TestSketchMergeIsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 200; iter++ {
		vs := values(r, 1+r.IntN(2000))
		var whole, merged Sketch
		for _, v := range vs {
			whole.Add(v)
		}
		for len(vs) > 0 {
			k := min(len(vs), 1+r.IntN(100))
			var part Sketch
			for _, v := range vs[:k] {
				part.Add(v)
			}
			merged.Merge(&part)
			vs = vs[k:]
		}
		if a, b := whole.AppendBinary(nil), merged.AppendBinary(nil); !bytes.Equal(a, b) {
			t.Fatalf("merged sketch differs from the whole's")
		}
	}
}

func TestSketchBoundedBins(t *testing.T) {
	var s Sketch
	for e := -300; e <= 300; e++ {
		s.Add(math.Pow(10, float64(e)))
	}
	if n := len(s.pos.counts); n > maxBins {
		t.Fatalf("%d bins", n)
	}
	// The top of the range keeps its accuracy.
	if got, _ := s.Quantile(1); math.Abs(got-1e300)/1e300 > RelativeAccuracy {
		t.Fatalf("max %v", got)
	}
}

// A bucket of all the samples equals the buckets of consecutive parts
// merged in order: what the 5m -> 1h -> 1d cascade relies on.
func TestBucketMergeEqualsWhole(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for iter := 0; iter < 300; iter++ {
		vs := values(r, 1+r.IntN(500))
		var whole Bucket
		for i, v := range vs {
			whole.Add(int64(i)*10_000, v)
		}
		var merged Bucket
		for i := 0; i < len(vs); {
			k := min(len(vs)-i, 1+r.IntN(40))
			var part Bucket
			for j := i; j < i+k; j++ {
				part.Add(int64(j)*10_000, vs[j])
			}
			merged.Merge(&part)
			i += k
		}
		same := func(a, b float64) bool { return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b)) }
		if merged.Count != whole.Count || merged.Min != whole.Min || merged.Max != whole.Max ||
			merged.First != whole.First || merged.Last != whole.Last || merged.FirstT != whole.FirstT || merged.LastT != whole.LastT ||
			!same(merged.Sum, whole.Sum) || !same(merged.Increase, whole.Increase) {
			t.Fatalf("merged %+v\nwhole  %+v", merged, whole)
		}
		if !bytes.Equal(merged.Sketch.AppendBinary(nil), whole.Sketch.AppendBinary(nil)) {
			t.Fatal("sketches differ")
		}
	}
}

func TestCounterIncrease(t *testing.T) {
	var b Bucket
	for i, v := range []float64{10, 15, 3, 8, 8, 20} { // a reset after 15
		b.Add(int64(i), v)
	}
	if b.Increase != 5+3+5+0+12 {
		t.Fatalf("increase %v", b.Increase)
	}
}

func randomBuckets(r *rand.Rand, n int, res int64) []Bucket {
	bs := make([]Bucket, 0, n)
	start := Align(r.Int64N(1<<42), res)
	for i := 0; i < n; i++ {
		start += res * int64(1+r.IntN(3))
		var b Bucket
		b.Start = start
		for j, v := range values(r, 1+r.IntN(40)) {
			b.Add(start+int64(j)*(res/41)+int64(r.IntN(7)), v)
		}
		bs = append(bs, b)
	}
	return bs
}

func TestBlockRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for iter := 0; iter < 200; iter++ {
		bs := randomBuckets(r, 1+r.IntN(300), 300_000)
		enc, err := AppendBlock(nil, bs)
		if err != nil {
			t.Fatal(err)
		}
		sk := AppendSketches(nil, bs)
		got, err := DecodeBlock(nil, enc, sk)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(bs) {
			t.Fatalf("%d buckets, want %d", len(got), len(bs))
		}
		for i := range bs {
			a, b := got[i], bs[i]
			eq := func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) }
			if a.Start != b.Start || a.Count != b.Count || a.FirstT != b.FirstT || a.LastT != b.LastT ||
				!eq(a.Sum, b.Sum) || !eq(a.Min, b.Min) || !eq(a.Max, b.Max) || !eq(a.First, b.First) || !eq(a.Last, b.Last) || !eq(a.Increase, b.Increase) {
				t.Fatalf("bucket %d: %+v, want %+v", i, a, b)
			}
			if !bytes.Equal(a.Sketch.AppendBinary(nil), b.Sketch.AppendBinary(nil)) {
				t.Fatalf("bucket %d: sketch differs", i)
			}
		}
		// Any damaged byte, in either block, is caught by the checksums.
		bad := append([]byte(nil), enc...)
		bad[r.IntN(len(bad))] ^= byte(1 + r.IntN(255))
		if _, err := DecodeBlock(nil, bad, sk); err == nil {
			t.Fatal("a damaged column block decoded")
		}
		badSk := append([]byte(nil), sk...)
		badSk[r.IntN(len(badSk))] ^= byte(1 + r.IntN(255))
		if _, err := DecodeBlock(nil, enc, badSk); err == nil {
			t.Fatal("a damaged sketch block decoded")
		}
	}
	if _, err := AppendBlock(nil, nil); err == nil {
		t.Error("empty block accepted")
	}
}

// The columnar decoding gives the buckets DecodeBlock gives, column by
// column, for any mask. One Columns serves every block, as a query reuses
// it from series to series: nothing of a block shows in the next, and a
// Bucket taken out keeps its sketch when the columns are reused.
func TestDecodeColumns(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	var c Columns
	var kept []Bucket
	var keptWant [][]byte
	for iter := 0; iter < 100; iter++ {
		bs := randomBuckets(r, 1+r.IntN(300), 3_600_000)
		enc, err := AppendBlock(nil, bs)
		if err != nil {
			t.Fatal(err)
		}
		c.Reset()
		if err := DecodeColumns(&c, enc, ColAll); err != nil {
			t.Fatal(err)
		}
		if err := DecodeSketches(&c, AppendSketches(nil, bs)); err != nil {
			t.Fatal(err)
		}
		if c.Len() != len(bs) {
			t.Fatalf("%d buckets, want %d", c.Len(), len(bs))
		}
		for i := range bs {
			got, want := c.Bucket(i), bs[i]
			if got.Start != want.Start || got.Count != want.Count || got.FirstT != want.FirstT || got.LastT != want.LastT ||
				math.Float64bits(got.Sum) != math.Float64bits(want.Sum) || math.Float64bits(got.Increase) != math.Float64bits(want.Increase) ||
				math.Float64bits(got.Min) != math.Float64bits(want.Min) || math.Float64bits(got.Last) != math.Float64bits(want.Last) {
				t.Fatalf("bucket %d: %+v, want %+v", i, got, want)
			}
			if !bytes.Equal(got.Sketch.AppendBinary(nil), want.Sketch.AppendBinary(nil)) {
				t.Fatalf("bucket %d: sketch differs", i)
			}
		}
		for i, b := range kept {
			if !bytes.Equal(b.Sketch.AppendBinary(nil), keptWant[i]) {
				t.Fatalf("a bucket taken from an earlier block changed its sketch when the columns were reused")
			}
		}
		kept, keptWant = append(kept, c.Bucket(0)), append(keptWant, bs[0].Sketch.AppendBinary(nil))
		// A mask decodes those columns and the starts only.
		c.Reset()
		if err := DecodeColumns(&c, enc, ColMax); err != nil {
			t.Fatal(err)
		}
		if c.Len() != len(bs) || len(c.Max) != len(bs) || len(c.Sum) != 0 || len(c.Sketches) != 0 {
			t.Fatalf("mask: %d starts, %d max, %d sum, %d sketches", c.Len(), len(c.Max), len(c.Sum), len(c.Sketches))
		}
		bad := append([]byte(nil), enc...)
		bad[r.IntN(len(bad))] ^= 0x40
		if err := DecodeColumns(&c, bad, ColAll); err == nil {
			t.Fatal("a damaged block decoded")
		}
	}
}

// AddLate: in any order, count, sum, min, max, first, last and the sketch
// are those of the samples in time order.
func TestAddLate(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for iter := 0; iter < 200; iter++ {
		vs := values(r, 1+r.IntN(100))
		var inOrder, late Bucket
		for i, v := range vs {
			inOrder.Add(int64(i)*1000, v)
		}
		for _, i := range r.Perm(len(vs)) {
			late.AddLate(int64(i)*1000, vs[i])
		}
		if late.Count != inOrder.Count || late.Min != inOrder.Min || late.Max != inOrder.Max || late.First != inOrder.First ||
			late.Last != inOrder.Last || late.FirstT != inOrder.FirstT || late.LastT != inOrder.LastT ||
			math.Abs(late.Sum-inOrder.Sum) > 1e-9*math.Max(1, math.Abs(inOrder.Sum)) {
			t.Fatalf("late %+v\nin order %+v", late, inOrder)
		}
		if !bytes.Equal(late.Sketch.AppendBinary(nil), inOrder.Sketch.AppendBinary(nil)) {
			t.Fatal("sketches differ")
		}
	}
}
