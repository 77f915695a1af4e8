package rollup

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/headroomdb/headroom/storage/series"
)

// countReset is a stand-in for Prometheus's reset detection: the hint,
// else a count that fell or a finer schema.
func countReset(cur, prev *series.Histogram) bool {
	switch cur.CounterReset {
	case 1:
		return true
	case 2:
		return false
	}
	return cur.Count < prev.Count || cur.Schema > prev.Schema
}

// histRun draws a counter histogram series with resets, schema changes,
// custom buckets, gauge hints and float counts now and then.
func histRun(r *rand.Rand, n int) []series.HistSample {
	out := make([]series.HistSample, n)
	t := int64(r.IntN(1000))
	var c float64
	schema := int32(3)
	for i := range out {
		t += 1 + int64(r.IntN(30_000))
		c += float64(r.IntN(20))
		if r.IntN(15) == 0 {
			c = float64(r.IntN(5)) // a reset
		}
		if r.IntN(25) == 0 {
			schema = int32(r.IntN(5))
		}
		h := &series.Histogram{Schema: schema, Count: c, Sum: c * 1.5, CounterReset: uint8(r.IntN(4)) * uint8(r.IntN(2)),
			PositiveSpans: []series.Span{{Offset: int32(r.IntN(2)), Length: 2}}, PositiveBuckets: []float64{math.Floor(c / 2), c - math.Floor(c/2)}}
		switch r.IntN(20) {
		case 0:
			h.Schema = series.CustomBucketsSchema
			h.CustomValues = []float64{0.1, 1, 10}
		case 1:
			h.Float = true
			h.Count += 0.25
		}
		out[i] = series.HistSample{T: t, H: h}
	}
	return out
}

func addAll(b *HistBucket, hs []series.HistSample) {
	for _, x := range hs {
		b.Add(x.T, x.H, countReset)
	}
}

// TestHistBucketMerge: merging the buckets of any split of a run gives
// the bucket of the whole run, and that bucket keeps what rate needs:
// its first and last samples, the sample before each reset, and the
// second sample when it resets.
func TestHistBucketMerge(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 2000; iter++ {
		hs := histRun(r, 1+r.IntN(40))
		var whole HistBucket
		addAll(&whole, hs)
		// What the bucket must keep, from the definition.
		want := map[int64]uint8{hs[0].T: RoleFirst}
		want[hs[len(hs)-1].T] |= RoleLast
		minSchema := int32(math.MaxInt32)
		var rest uint8
		for i := 1; i < len(hs); i++ {
			minSchema = min(minSchema, hs[i].H.Schema)
			rest |= restOf(hs[i].H)
			if countReset(hs[i].H, hs[i-1].H) {
				want[hs[i-1].T] |= RolePreReset
				if i == 1 {
					want[hs[1].T] |= RoleSecond
				}
			}
		}
		got := map[int64]uint8{}
		for i, k := range whole.Kept {
			if i > 0 && k.T <= whole.Kept[i-1].T {
				t.Fatalf("kept samples out of order: %v", whole.Kept)
			}
			got[k.T] = k.Role
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("iteration %d: kept %v, want %v", iter, got, want)
		}
		if whole.Count != int64(len(hs)) || whole.Rest != rest || (len(hs) > 1 && whole.MinSchema != minSchema) {
			t.Fatalf("iteration %d: count %d rest %b schema %d, want %d %b %d", iter, whole.Count, whole.Rest, whole.MinSchema, len(hs), rest, minSchema)
		}
		// Any split into runs, merged left to right.
		var merged HistBucket
		for lo := 0; lo < len(hs); {
			hi := lo + 1 + r.IntN(len(hs)-lo)
			var part HistBucket
			addAll(&part, hs[lo:hi])
			merged.Merge(&part, countReset)
			lo = hi
		}
		if !sameHistBucket(&merged, &whole) {
			t.Fatalf("iteration %d: merged %+v, want %+v", iter, merged, whole)
		}
		// The block round trip, with a second bucket after it.
		var next HistBucket
		next.Start = 1 << 40
		addAll(&next, histRun(r, 1+r.IntN(5)))
		for i := range next.Kept {
			next.Kept[i].T += hs[len(hs)-1].T + 1
		}
		blk, err := AppendHistBlock(nil, []HistBucket{whole, next})
		if err != nil {
			t.Fatal(err)
		}
		dec, err := DecodeHistBlock(nil, blk)
		if err != nil {
			t.Fatal(err)
		}
		if len(dec) != 2 || !sameHistBucket(&dec[0], &whole) || !sameHistBucket(&dec[1], &next) {
			t.Fatalf("iteration %d: decoded %+v, want %+v", iter, dec, []HistBucket{whole, next})
		}
		// Damage is an error.
		blk[r.IntN(len(blk))] ^= 1 << r.IntN(8)
		if _, err := DecodeHistBlock(nil, blk); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a damaged block decoded: %v", err)
		}
	}
}

func sameHistBucket(a, b *HistBucket) bool {
	if a.Start != b.Start || a.Count != b.Count || a.Rest != b.Rest || len(a.Kept) != len(b.Kept) || (a.Count > 1 && a.MinSchema != b.MinSchema) {
		return false
	}
	for i := range a.Kept {
		x, y := a.Kept[i], b.Kept[i]
		if x.T != y.T || x.Role != y.Role || !sameHist(x.H, y.H) {
			return false
		}
	}
	return true
}

func sameHist(a, b *series.Histogram) bool {
	bits := func(xs []float64) []uint64 {
		out := make([]uint64, len(xs))
		for i, x := range xs {
			out[i] = math.Float64bits(x)
		}
		return out
	}
	return a.CounterReset == b.CounterReset && a.Float == b.Float && a.Schema == b.Schema &&
		math.Float64bits(a.Count) == math.Float64bits(b.Count) && math.Float64bits(a.Sum) == math.Float64bits(b.Sum) &&
		math.Float64bits(a.ZeroCount) == math.Float64bits(b.ZeroCount) && math.Float64bits(a.ZeroThreshold) == math.Float64bits(b.ZeroThreshold) &&
		reflect.DeepEqual(a.PositiveSpans, b.PositiveSpans) && reflect.DeepEqual(a.NegativeSpans, b.NegativeSpans) &&
		reflect.DeepEqual(bits(a.PositiveBuckets), bits(b.PositiveBuckets)) && reflect.DeepEqual(bits(a.NegativeBuckets), bits(b.NegativeBuckets)) &&
		reflect.DeepEqual(bits(a.CustomValues), bits(b.CustomValues))
}

// FuzzHistBlock: the histogram block decoder never panics on arbitrary
// bytes, and what it accepts encodes again to the same buckets.
func FuzzHistBlock(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 4 {
		var b HistBucket
		addAll(&b, histRun(r, 1+r.IntN(20)))
		blk, err := AppendHistBlock(nil, []HistBucket{b})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(blk)
	}
	f.Fuzz(func(t *testing.T, blk []byte) {
		bs, err := DecodeHistBlock(nil, blk)
		if err != nil {
			return
		}
		again, err := AppendHistBlock(nil, bs)
		if err != nil {
			return // a checksum-valid block of buckets the encoder refuses
		}
		bs2, err := DecodeHistBlock(nil, again)
		if err != nil || len(bs2) != len(bs) {
			t.Fatalf("re-encoded block: %v", err)
		}
		for i := range bs {
			if !sameHistBucket(&bs[i], &bs2[i]) {
				t.Fatalf("bucket %d changed on re-encoding", i)
			}
		}
	})
}

// AddLate of samples that each come before or after all the others (a
// backfill growing a bucket at either end) gives the bucket of the
// samples added in order; a sample among the others counts, with its
// schema and kind of buckets.
func TestHistBucketAddLate(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for iter := 0; iter < 2000; iter++ {
		hs := histRun(r, 1+r.IntN(30))
		var whole HistBucket
		addAll(&whole, hs)
		lo := r.IntN(len(hs))
		hi := lo + 1
		var late HistBucket
		late.AddLate(hs[lo].T, hs[lo].H, countReset)
		for lo > 0 || hi < len(hs) {
			if lo > 0 && (hi == len(hs) || r.IntN(2) == 0) {
				lo--
				late.AddLate(hs[lo].T, hs[lo].H, countReset)
			} else {
				late.AddLate(hs[hi].T, hs[hi].H, countReset)
				hi++
			}
		}
		if !sameHistBucket(&late, &whole) {
			t.Fatalf("iteration %d: grown at both ends %+v, want %+v", iter, late, whole)
		}
		if len(hs) < 3 {
			continue
		}
		// One sample among the others: counted, nothing else changes but
		// what it adds to Rest and MinSchema.
		mid := 1 + r.IntN(len(hs)-2)
		var gap HistBucket
		for i, x := range hs {
			if i != mid {
				gap.Add(x.T, x.H, countReset)
			}
		}
		gap.AddLate(hs[mid].T, hs[mid].H, countReset)
		if gap.Count != whole.Count || gap.Rest != whole.Rest || gap.MinSchema != whole.MinSchema || gap.First().T != whole.First().T || gap.Last().T != whole.Last().T {
			t.Fatalf("iteration %d: a sample among the others: %+v, want the count, kinds and schema of %+v", iter, gap, whole)
		}
	}
}
