package chunk

import (
	"math"
	"math/rand/v2"
	"testing"
)

type tv struct {
	T int64
	V float64
}

// appendByNext is AppendRange's definition: the samples Next gives in
// [mint, maxt].
func appendByNext(b []byte, mint, maxt int64) ([]tv, error) {
	it := NewIterator(b)
	var out []tv
	for it.Next() {
		t, v := it.At()
		if t > maxt {
			break
		}
		if t >= mint {
			out = append(out, tv{t, v})
		}
	}
	return out, it.Err()
}

func sameTV(t *testing.T, got, want []tv, what string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d samples, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i].T != want[i].T || math.Float64bits(got[i].V) != math.Float64bits(want[i].V) {
			t.Fatalf("%s: sample %d is %v, want %v", what, i, got[i], want[i])
		}
	}
}

// The scan loop must give exactly what Next gives, on every encoding
// (XOR, decimal with and without grid, corrections, escapes) and range.
func TestAppendRangeMatchesNext(t *testing.T) {
	r := rand.New(rand.NewPCG(testSeed(t), 4))
	for iter := 0; iter < 2000; iter++ {
		var ss []sample
		if iter%3 == 0 {
			ss = randomSeries(r)
		} else {
			ss = decimalFriendly(r, iter%5 == 1)
		}
		if iter%4 == 0 {
			for i := range ss {
				if r.IntN(5) == 0 && ss[i].v != 0 && !math.IsNaN(ss[i].v) && !math.IsInf(ss[i].v, 0) {
					ss[i].v = math.Float64frombits(math.Float64bits(ss[i].v) + 1) // a correction
				}
			}
		}
		b := encode(t, ss)
		for _, c := range [][]byte{b, Optimize(b)} {
			first, last := ss[0].t, ss[len(ss)-1].t
			ranges := [][2]int64{{math.MinInt64, math.MaxInt64}, {first, last}}
			for k := 0; k < 3; k++ {
				a, z := ss[r.IntN(len(ss))].t, ss[r.IntN(len(ss))].t
				if a > z {
					a, z = z, a
				}
				ranges = append(ranges, [2]int64{a, z}, [2]int64{a + 1, z - 1})
			}
			for _, rg := range ranges {
				want, err := appendByNext(c, rg[0], rg[1])
				if err != nil {
					t.Fatal(err)
				}
				it := NewIterator(c)
				got, past := AppendRange(it, []tv(nil), rg[0], rg[1])
				if it.Err() != nil {
					t.Fatal(it.Err())
				}
				sameTV(t, got, want, "AppendRange")
				if wantPast := rg[1] < last; past != wantPast {
					t.Fatalf("past = %v for maxt %d, last sample %d", past, rg[1], last)
				}
			}
		}
	}
}
