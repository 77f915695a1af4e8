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
	f.Fuzz(func(t *testing.T, b []byte) {
		it := NewIterator(b)
		var ss []sample
		for it.Next() {
			ts, v := it.At()
			ss = append(ss, sample{ts, v})
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
