package chunk

import (
	"math"
	"testing"
)

// FuzzIterator feeds arbitrary bytes to the decoder: it must never panic,
// and any chunk it accepts must re-encode to the same samples.
// Seed corpus: testdata/fuzz/FuzzIterator.
func FuzzIterator(f *testing.F) {
	f.Add([]byte{EncXOR, 0, 0})
	a := NewAppender()
	for i := int64(0); i < 50; i++ {
		a.Append(i*15000+i%3, float64(i%7)*1.5)
	}
	f.Add(append([]byte(nil), a.Bytes()...))
	// Sealed chunks: decimal, on a grid and off it, with a correction.
	for _, drift := range []int64{0, 1} {
		d := NewAppender()
		for i := int64(0); i < 60; i++ {
			v := float64(i*i%11) / 10
			if i == 30 {
				v = math.Float64frombits(math.Float64bits(v) + 1)
			}
			d.Append(1_700_000_000_000+i*10_000+drift*(i%3), v)
		}
		f.Add(Optimize(d.Bytes()))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		it := NewIterator(b)
		var ss []sample
		for it.Next() {
			ts, v := it.At()
			ss = append(ss, sample{ts, v})
		}
		// The scan loop decodes exactly what Next does, error included.
		fast := NewIterator(b)
		scanned, _ := AppendRange(fast, []tv(nil), math.MinInt64, math.MaxInt64)
		if (fast.Err() == nil) != (it.Err() == nil) {
			t.Fatalf("AppendRange error %v, Next error %v", fast.Err(), it.Err())
		}
		if len(scanned) != len(ss) {
			t.Fatalf("AppendRange decoded %d samples, Next %d", len(scanned), len(ss))
		}
		for i := range scanned {
			if scanned[i].T != ss[i].t || math.Float64bits(scanned[i].V) != math.Float64bits(ss[i].v) {
				t.Fatalf("AppendRange sample %d differs from Next's", i)
			}
		}
		if it.Err() != nil {
			return
		}
		if len(ss) != it.Count() {
			t.Fatalf("decoded %d samples without error, header says %d", len(ss), it.Count())
		}
		re := NewAppender()
		for _, s := range ss {
			if err := re.Append(s.t, s.v); err != nil {
				t.Fatalf("accepted chunk holds a sample the appender refuses: %v", err)
			}
		}
		got, err := decodeAll(re.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		for i := range ss {
			if got[i].t != ss[i].t || math.Float64bits(got[i].v) != math.Float64bits(ss[i].v) {
				t.Fatalf("re-encoded sample %d differs", i)
			}
		}
		// A resumed appender must accept the same bytes.
		if _, err := ResumeAppender(b); err != nil {
			t.Fatalf("ResumeAppender refused a chunk the iterator accepted: %v", err)
		}
	})
}
