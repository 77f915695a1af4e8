package rollup

import (
	"encoding/binary"
	"hash/crc32"
	"math"
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
		n, lenErr := BlockLen(seal(colBody)) // a block taken as it is: never panics
		if err := DecodeColumns(&c, seal(colBody), ColAll); err != nil {
			return
		}
		if lenErr != nil || n != len(c.Start) {
			t.Fatalf("BlockLen %d, %v; the block decodes to %d buckets", n, lenErr, len(c.Start))
		}
		m, lenErr := SketchBlockLen(seal(skBody))
		if err := DecodeSketches(&c, seal(skBody)); err != nil {
			return
		}
		if lenErr != nil || m != len(c.Sketches) {
			t.Fatalf("SketchBlockLen %d, %v; the block decodes to %d sketches", m, lenErr, len(c.Sketches))
		}
		bs, again := reencode(t, &c)
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

// FuzzDecodeColumnsV2: arbitrary bytes as a version 2 column block, its
// checksums not checked (so that the decoders behind them are reached),
// never panic; what decodes encodes back to a block that decodes to the
// same values, bit for bit.
func FuzzDecodeColumnsV2(f *testing.F) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, n := range []int{1, 3, 40, 288} {
		for _, bs := range [][]Bucket{randomBuckets(r, n, 3_600_000), cpuBlock(r)[:n], counterBlock(r, n)} {
			enc, err := AppendBlock(nil, bs)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(enc)
		}
	}
	f.Add([]byte{2, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Columns
		if len(b) == 0 || b[0] != colVersion2 {
			return
		}
		if err := decodeV2(&c, b, ColAll&^ColSketch, false); err != nil {
			return
		}
		bs, again := reencode(t, &c)
		var c2 Columns
		if err := DecodeColumns(&c2, again, ColAll&^ColSketch); err != nil {
			t.Fatalf("re-encoded block: %v", err)
		}
		for i := range bs {
			x, y := bs[i], c2.Bucket(i)
			same := func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }
			if x.Start != y.Start || x.Count != y.Count || x.FirstT != y.FirstT || x.LastT != y.LastT || !same(x.Sum, y.Sum) ||
				!same(x.Min, y.Min) || !same(x.Max, y.Max) || !same(x.First, y.First) || !same(x.Last, y.Last) || !same(x.Increase, y.Increase) {
				t.Fatalf("bucket %d: %+v after re-encoding, was %+v", i, y, x)
			}
		}
	})
}

// reencode returns the buckets of c and their column block: what decodes
// must encode again.
func reencode(t *testing.T, c *Columns) ([]Bucket, []byte) {
	bs := make([]Bucket, c.Len())
	for i := range bs {
		bs[i] = c.Bucket(i)
	}
	again, err := AppendBlock(nil, bs)
	if err != nil {
		t.Fatalf("decoded buckets do not encode: %v", err)
	}
	return bs, again
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
