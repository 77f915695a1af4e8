package rollup

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// FuzzDecodeBlock: arbitrary bytes as a column block and as a sketch
// block (with valid checksums appended, so that the decoders proper are
// reached) never panic; what decodes encodes back to blocks that decode
// the same.
func FuzzDecodeBlock(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{1, 3, 40} {
		bs := randomBuckets(r, n, 300_000)
		enc, err := AppendBlock(nil, bs)
		if err != nil {
			f.Fatal(err)
		}
		sk := AppendSketches(nil, bs)
		f.Add(enc[:len(enc)-4], sk[:len(sk)-4])
	}
	f.Add([]byte{1, 0}, []byte{1, 0})
	f.Fuzz(func(t *testing.T, colBody, skBody []byte) {
		seal := func(body []byte) []byte {
			return binary.BigEndian.AppendUint32(append([]byte(nil), body...), crc32.Checksum(body, castagnoli))
		}
		var c Columns
		if err := DecodeColumns(&c, seal(colBody), ColAll); err != nil {
			return
		}
		if err := DecodeSketches(&c, seal(skBody)); err != nil {
			return
		}
		bs := make([]Bucket, c.Len())
		for i := range bs {
			bs[i] = c.Bucket(i)
		}
		again, err := AppendBlock(nil, bs)
		if err != nil {
			t.Fatalf("decoded buckets do not encode: %v", err)
		}
		bs2, err := DecodeBlock(nil, again, AppendSketches(nil, bs))
		if err != nil || len(bs2) != len(bs) {
			t.Fatalf("re-encoded block: %v", err)
		}
		for i := range bs {
			if bs[i].Start != bs2[i].Start || bs[i].Count != bs2[i].Count {
				t.Fatalf("bucket %d differs after re-encoding", i)
			}
		}
	})
}

// FuzzDecodeSketch: arbitrary bytes never panic, and a decoded sketch
// answers quantiles without panicking.
func FuzzDecodeSketch(f *testing.F) {
	var s Sketch
	for _, v := range []float64{0, 1, 2.5, -3, 1e6, 1e-6} {
		s.Add(v)
	}
	f.Add(s.AppendBinary(nil))
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, _, err := DecodeSketch(b)
		if err != nil {
			return
		}
		s.Quantile(0.5)
		s.Quantile(1)
		var m Sketch
		m.Merge(s)
	})
}
