package chunk

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Benchmarks report ns/sample, samples/s and bytes/sample from fixed-seed
// input. Compare runs with:
//
//	go test -run=NONE -bench=. -count=10 ./storage/chunk > new.txt
//	benchstat old.txt new.txt

// benchChunks returns 1,000 chunks of 120 samples at a 10 s scrape interval
// with a little jitter, in one of the value shapes that dominate real data.
func benchChunks(shape string) [][]sample {
	r := rand.New(rand.NewPCG(42, uint64(len(shape))))
	out := make([][]sample, 1000)
	for c := range out {
		t := int64(1_700_000_000_000) + int64(c)*1_200_000
		v := float64(r.IntN(1000))
		ss := make([]sample, 120)
		for i := range ss {
			switch shape {
			case "counter":
				v += float64(r.IntN(50))
			case "gauge-int":
				v += float64(r.IntN(5) - 2)
			case "gauge-float":
				v = 50 + 20*math.Sin(float64(t)/3.6e6) + r.NormFloat64()
			}
			ss[i] = sample{t, v}
			t += 10_000
			if r.IntN(10) == 0 {
				t += int64(r.IntN(20)) - 10
			}
		}
		out[c] = ss
	}
	return out
}

var shapes = []string{"counter", "gauge-int", "gauge-float"}

func BenchmarkEncode(b *testing.B) {
	for _, shape := range shapes {
		b.Run(shape, func(b *testing.B) {
			chunks := benchChunks(shape)
			var bytes, n int
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ss := chunks[i%len(chunks)]
				a := NewAppender()
				for _, s := range ss {
					a.Append(s.t, s.v)
				}
				bytes += a.Size()
				n += len(ss)
			}
			nsPerSample := float64(b.Elapsed().Nanoseconds()) / float64(n)
			b.ReportMetric(nsPerSample, "ns/sample")
			b.ReportMetric(1e9/nsPerSample, "samples/s")
			b.ReportMetric(float64(bytes)/float64(n), "bytes/sample")
		})
	}
}

// BenchmarkDecode decodes head chunks (XOR) and sealed chunks (whatever
// Optimize chose: decimal for the integer shapes).
func BenchmarkDecode(b *testing.B) {
	for _, sealed := range []bool{false, true} {
		for _, shape := range shapes {
			name := "head/" + shape
			if sealed {
				name = "sealed/" + shape
			}
			b.Run(name, func(b *testing.B) { benchDecode(b, shape, sealed) })
		}
	}
}

func benchDecode(b *testing.B, shape string, sealed bool) {
	var encoded [][]byte
	for _, ss := range benchChunks(shape) {
		a := NewAppender()
		for _, s := range ss {
			a.Append(s.t, s.v)
		}
		chk := append([]byte(nil), a.Bytes()...)
		if sealed {
			chk = Optimize(chk)
		}
		encoded = append(encoded, chk)
	}
	var it Iterator
	var n int
	var sum float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		it.Reset(encoded[i%len(encoded)])
		for it.Next() {
			_, v := it.At()
			sum += v
			n++
		}
	}
	nsPerSample := float64(b.Elapsed().Nanoseconds()) / float64(n)
	b.ReportMetric(nsPerSample, "ns/sample")
	b.ReportMetric(1e9/nsPerSample, "samples/s")
	_ = sum
}
