package chunk

import (
	"errors"
	"flag"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("chunk.seed", 0, "seed for the randomized codec tests (0: from the clock)")

func testSeed(t testing.TB) uint64 {
	s := *seedFlag
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -chunk.seed=%d)", s, s)
	return s
}

type sample struct {
	t int64
	v float64
}

func encode(t testing.TB, ss []sample) []byte {
	t.Helper()
	a := NewAppender()
	for i, s := range ss {
		if err := a.Append(s.t, s.v); err != nil {
			t.Fatalf("Append(#%d %d, %v) = %v", i, s.t, s.v, err)
		}
	}
	return append([]byte(nil), a.Bytes()...)
}

func decodeAll(b []byte) ([]sample, error) {
	var out []sample
	it := NewIterator(b)
	for it.Next() {
		t, v := it.At()
		out = append(out, sample{t, v})
	}
	return out, it.Err()
}

func sameSamples(t *testing.T, got, want []sample) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("decoded %d samples, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].t != want[i].t || math.Float64bits(got[i].v) != math.Float64bits(want[i].v) {
			t.Fatalf("sample %d = (%d, %x), want (%d, %x)", i, got[i].t, math.Float64bits(got[i].v), want[i].t, math.Float64bits(want[i].v))
		}
	}
}

var specials = []float64{
	math.NaN(), math.Float64frombits(0x7ff0000000000002), // Prometheus stale marker
	math.Float64frombits(0xfff8000000000001), math.Float64frombits(0x7ff4000000000000),
	math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 0, math.MaxFloat64, -math.MaxFloat64,
	math.SmallestNonzeroFloat64, 1, -1, 0.1, 1e300,
}

// randomSeries mixes the shapes real metrics have with adversarial ones:
// regular and jittered intervals, huge gaps, counters, gauges, special floats.
func randomSeries(r *rand.Rand) []sample {
	n := 1 + r.IntN(400)
	t := r.Int64N(1<<50) - 1<<49 // negative timestamps included
	if r.IntN(10) == 0 {
		t = math.MinInt64 + r.Int64N(1000)
	}
	step := int64(1 + r.IntN(60000))
	v := r.NormFloat64() * 100
	out := make([]sample, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, sample{t, v})
		var d int64
		switch r.IntN(8) {
		case 0:
			d = 1 + r.Int64N(1<<40) // huge gap
		case 1:
			d = 1 + r.Int64N(step*3)
		default:
			d = step
		}
		if t > math.MaxInt64-d {
			break
		}
		t += d
		switch r.IntN(6) {
		case 0:
			v = specials[r.IntN(len(specials))]
		case 1:
			v = math.Float64frombits(r.Uint64())
		case 2:
			v += float64(r.IntN(10)) // counter
		case 3:
			v = math.Round(r.Float64()*10000) / 100 // few decimals
		default:
			v += r.NormFloat64() // gauge
		}
	}
	return out
}

func TestRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(testSeed(t), 1))
	for iter := 0; iter < 2000; iter++ {
		ss := randomSeries(r)
		got, err := decodeAll(encode(t, ss))
		if err != nil {
			t.Fatalf("iteration %d: decode: %v", iter, err)
		}
		sameSamples(t, got, ss)
	}
}

func TestSpecialFloats(t *testing.T) {
	var ss []sample
	for i, v := range specials {
		ss = append(ss, sample{int64(i) * 15000, v})
	}
	// Every pair of specials one after the other, both orders.
	ts := int64(len(ss)) * 15000
	for _, a := range specials {
		for _, b := range specials {
			ss = append(ss, sample{ts, a}, sample{ts + 1, b})
			ts += 2
		}
	}
	got, err := decodeAll(encode(t, ss))
	if err != nil {
		t.Fatal(err)
	}
	sameSamples(t, got, ss)
}

func TestAppendRejectsNonIncreasing(t *testing.T) {
	a := NewAppender()
	if err := a.Append(100, 1); err != nil {
		t.Fatal(err)
	}
	for _, ts := range []int64{100, 99, math.MinInt64} {
		if err := a.Append(ts, 2); !errors.Is(err, ErrOutOfOrder) {
			t.Errorf("Append(%d) = %v, want ErrOutOfOrder", ts, err)
		}
	}
	if a.Count() != 1 {
		t.Errorf("Count = %d after refused appends, want 1", a.Count())
	}
}

func TestExtremeTimestamps(t *testing.T) {
	ss := []sample{{math.MinInt64, 0}, {math.MaxInt64 - 10, 0.5}, {math.MaxInt64 - 9, 1}}
	got0, err := decodeAll(encode(t, ss))
	if err != nil {
		t.Fatal(err)
	}
	sameSamples(t, got0, ss)
	ss = []sample{{math.MinInt64, 1}, {-1, 2}, {0, 3}, {1, 4}, {math.MaxInt64 - 1, 5}, {math.MaxInt64, 6}}
	got, err := decodeAll(encode(t, ss))
	if err != nil {
		t.Fatal(err)
	}
	sameSamples(t, got, ss)
}

func TestResumeAppender(t *testing.T) {
	r := rand.New(rand.NewPCG(testSeed(t), 2))
	for iter := 0; iter < 500; iter++ {
		ss := randomSeries(r)
		cut := r.IntN(len(ss) + 1)
		first := encode(t, ss[:cut])
		// Bytes after the stream (a larger buffer, garbage) must not leak into it.
		dirty := append(append([]byte(nil), first...), 0xff, 0xff)
		a, err := ResumeAppender(dirty)
		if err != nil {
			t.Fatalf("ResumeAppender: %v", err)
		}
		for _, s := range ss[cut:] {
			if err := a.Append(s.t, s.v); err != nil {
				t.Fatal(err)
			}
		}
		got, err := decodeAll(a.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		sameSamples(t, got, ss)
		if want := encode(t, ss); string(want) != string(a.Bytes()) {
			t.Fatalf("resumed chunk differs from a chunk written in one go")
		}
	}
}

func TestSeek(t *testing.T) {
	var ss []sample
	for i := int64(0); i < 100; i++ {
		ss = append(ss, sample{i * 10, float64(i)})
	}
	b := encode(t, ss)
	f := func(seek int64, wantOK bool, wantT int64) {
		t.Helper()
		it := NewIterator(b)
		ok := it.Seek(seek)
		if ok != wantOK {
			t.Fatalf("Seek(%d) = %v, want %v", seek, ok, wantOK)
		}
		if ok {
			if got, _ := it.At(); got != wantT {
				t.Fatalf("Seek(%d) at %d, want %d", seek, got, wantT)
			}
		}
	}
	f(-5, true, 0)
	f(0, true, 0)
	f(1, true, 10)
	f(990, true, 990)
	f(991, false, 0)

	// Seeking backwards stays put.
	it := NewIterator(b)
	it.Seek(500)
	if !it.Seek(100) {
		t.Fatal("Seek backwards returned false")
	}
	if got, _ := it.At(); got != 500 {
		t.Fatalf("Seek backwards moved to %d, want 500", got)
	}
}

func TestCorruptInputs(t *testing.T) {
	good := encode(t, []sample{{0, 1}, {10, 2}, {20, 2.5}, {35, 3}})
	f := func(name string, b []byte) {
		t.Helper()
		_, err := decodeAll(b)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
	f("empty", nil)
	f("short header", []byte{EncXOR, 0})
	f("unknown encoding", append([]byte{9}, good[1:]...))
	f("truncated", good[:len(good)-3])
	more := append([]byte(nil), good...)
	more[2] = 200 // count says more samples than the stream holds
	f("count too high", more)
	_, err := decodeAll([]byte{EncXOR, 0, 0})
	if err != nil {
		t.Errorf("empty chunk: %v", err)
	}
}
