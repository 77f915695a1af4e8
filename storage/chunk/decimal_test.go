package chunk

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestOptimizeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(testSeed(t), 3))
	decimalWins, corrected, gridded, griddedDoD := 0, 0, 0, 0
	for iter := 0; iter < 3000; iter++ {
		var ss []sample
		if iter%2 == 0 {
			ss = randomSeries(r)
		} else {
			ss = decimalFriendly(r, iter%7 == 1)
		}
		if iter%3 == 0 {
			// Float artefacts among decimals, as CloudWatch emits them.
			for i := range ss {
				if r.IntN(4) == 0 && ss[i].v != 0 && !math.IsNaN(ss[i].v) && !math.IsInf(ss[i].v, 0) {
					ss[i].v = math.Float64frombits(math.Float64bits(ss[i].v) + uint64(r.IntN(5)) - 2)
				}
			}
		}
		b := encode(t, ss)
		o := Optimize(b)
		if len(o) > len(b) {
			t.Fatalf("Optimize grew the chunk from %d to %d bytes", len(b), len(o))
		}
		if len(o) > 0 && o[0] == EncDecimal {
			decimalWins++
			if o[3]&corrFlag != 0 {
				corrected++
			}
			if o[3]&gridFlag != 0 {
				gridded++
				if o[3]&0x10 != 0 {
					griddedDoD++
				}
			}
		}
		got, err := decodeAll(o)
		if err != nil {
			t.Fatalf("iteration %d: decode optimized chunk: %v", iter, err)
		}
		sameSamples(t, got, ss)
		// An optimized chunk can be resumed.
		a, err := ResumeAppender(o)
		if err != nil {
			t.Fatal(err)
		}
		if a.Count() != len(ss) {
			t.Fatalf("resumed %d samples, want %d", a.Count(), len(ss))
		}
	}
	if gridded < 100 {
		t.Errorf("grid timestamps chosen %d times (%d with value deltas of deltas): too few to test them", gridded, griddedDoD)
	}
	if corrected < 100 {
		t.Errorf("decimal with corrections chosen %d times, expected it for many of the chunks with artefacts", corrected)
	}
	if decimalWins < 1000 {
		t.Errorf("decimal encoding chosen %d times of 3000, expected most of the decimal-friendly half", decimalWins)
	}
}

func TestOptimizeSizes(t *testing.T) {
	f := func(name string, v func(i int) float64, maxBytesPerSample float64) {
		t.Helper()
		a := NewAppender()
		for i := 0; i < 120; i++ {
			a.Append(int64(i)*10_000, v(i))
		}
		o := Optimize(a.Bytes())
		if got := float64(len(o)) / 120; got > maxBytesPerSample {
			t.Errorf("%s: %.3f bytes/sample after Optimize, want <= %.3f (XOR: %.3f)", name, got, maxBytesPerSample, float64(a.Size())/120)
		}
	}
	f("constant", func(int) float64 { return 42 }, 0.17)
	f("steady counter", func(i int) float64 { return float64(1000 + 17*i) }, 0.2)
	f("walk of small ints", func(i int) float64 { return float64(i%5 - 2 + 100) }, 0.55)
	f("two decimals", func(i int) float64 { return float64(5000+i%7) / 100 }, 0.7)
	f("NaN keeps XOR", func(i int) float64 { return math.NaN() }, 0.5)
	// 1.7619999999999998 among 1.762-style values: corrected decimals.
	f("artefacts", func(i int) float64 {
		v := float64(1700+i%13) / 1000
		if i%4 == 0 {
			v = math.Float64frombits(math.Float64bits(v) - 1)
		}
		return v
	}, 1.5)
}

// Grid timestamps with each value mode, with and without corrections: a
// late scrape, a missed one, and the grid flag actually set.
func TestGridTimestamps(t *testing.T) {
	for _, corr := range []bool{false, true} {
		for _, dod := range []bool{false, true} {
			var ts, ms, cs []int64
			for i := int64(0); i < 60; i++ {
				tt := 1_700_000_000_000 + i*10_000
				if i%9 == 4 {
					tt += 3 // late
				}
				if i > 30 {
					tt += 20_000 // two scrapes missed
				}
				ts = append(ts, tt)
				ms = append(ms, i*i%7)
				if corr {
					cs = append(cs, i%3-1)
				}
			}
			b := encodeDecimal(ts, ms, cs, 0, dod)
			if b[3]&gridFlag == 0 {
				t.Fatalf("dod=%v corr=%v: grid not chosen (header %x)", dod, corr, b[:6])
			}
			var it Iterator
			it.Reset(b)
			i := 0
			for it.Next() {
				gt, gv := it.At()
				want := math.Float64bits(float64(ms[i]))
				if corr {
					want += uint64(cs[i])
				}
				if gt != ts[i] || math.Float64bits(gv) != want {
					t.Fatalf("dod=%v corr=%v: sample %d = (%d, %x), want (%d, %x)", dod, corr, i, gt, math.Float64bits(gv), ts[i], want)
				}
				i++
			}
			if it.Err() != nil || i != len(ts) {
				t.Fatalf("dod=%v corr=%v: stopped after %d samples: %v", dod, corr, i, it.Err())
			}
		}
	}
}

// decimalFriendly makes the shapes EncDecimal is for: counters, walks and
// few decimals, scraped on a 10 s grid with some samples late by a few
// ms and some missing; drift: every interval a little off the grid.
func decimalFriendly(r *rand.Rand, drift bool) []sample {
	var ss []sample
	n := 2 + r.IntN(300)
	e := r.IntN(5)
	m := r.Int64N(1<<40) - 1<<39
	step := r.Int64N(1000)
	ts := r.Int64N(1 << 45)
	grid := ts
	for i := 0; i < n; i++ {
		ss = append(ss, sample{ts, float64(m) / pow10[e]})
		grid += 10_000
		if r.IntN(30) == 0 {
			grid += 10_000 * int64(1+r.IntN(3))
		}
		ts = grid
		if r.IntN(8) == 0 {
			ts += r.Int64N(7) - 3
		}
		if drift {
			ts = ss[len(ss)-1].t + 10_000 + r.Int64N(3)
		}
		switch r.IntN(3) {
		case 0:
			m += step
		case 1:
			m += r.Int64N(7) - 3
		default:
			m += r.Int64N(1 << 20)
		}
	}
	return ss
}
