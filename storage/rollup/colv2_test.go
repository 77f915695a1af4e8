package rollup

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"testing"
)

// unpack reads len(dst) fields of w bits from src as the decoder does:
// one load a field while 8 bytes remain, fieldSlow after.
func unpack(dst []uint64, src []byte, w int) {
	var mask uint64 = 1<<w - 1
	if w == 64 {
		mask = ^uint64(0)
	}
	fast := fastFields(len(src), w, len(dst))
	for i := range dst {
		if i < fast {
			dst[i] = binary.LittleEndian.Uint64(src[i*w>>3:]) >> (i * w & 7) & mask
		} else {
			dst[i] = fieldSlow(src, i*w, w)
		}
	}
}

func TestPackUnpack(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for w := 0; w <= 64; w++ {
		for _, n := range []int{0, 1, 2, 7, 8, 9, 63, 64, 65, 300} {
			vals := make([]uint64, n)
			for i := range vals {
				vals[i] = r.Uint64()
				if w < 64 {
					vals[i] &= 1<<w - 1
				}
			}
			enc := pack([]byte{0xAA}, vals, w)
			if len(enc)-1 != packedLen(n, w) {
				t.Fatalf("w=%d n=%d: %d bytes, want %d", w, n, len(enc)-1, packedLen(n, w))
			}
			got := make([]uint64, n)
			for i := range got {
				got[i] = 12345 // unpack must overwrite, also at w = 0
			}
			unpack(got, enc[1:], w)
			for i := range vals {
				if got[i] != vals[i] {
					t.Fatalf("w=%d n=%d: value %d is %#x, want %#x", w, n, i, got[i], vals[i])
				}
			}
		}
	}
}

// columnCase is a column of bucket values and the encoding it should get.
type columnCase struct {
	name string
	gen  func(r *rand.Rand, i int) float64
	enc  byte
	// bits per value at most (0: no bound checked)
	maxBits float64
}

// anyEncoding: the test checks the round trip only.
const anyEncoding = 255

func hundredths(r *rand.Rand) float64 { return float64(r.IntN(10001)) / 100 }

var columnCases = []columnCase{
	{"constant count", func(r *rand.Rand, i int) float64 { return 60 }, encConst, 0.5},
	{"constant offset", func(r *rand.Rand, i int) float64 { return 59_000 }, encConst, 0.5},
	{"hundredths", func(r *rand.Rand, i int) float64 { return hundredths(r) }, encDecimal, 15},
	{"integers", func(r *rand.Rand, i int) float64 { return float64(r.IntN(1000)) }, encDecimal, 11},
	{"sums of hundredths", func(r *rand.Rand, i int) float64 {
		var s float64
		for j := 0; j < 60; j++ {
			s += hundredths(r)
		}
		return s
	}, encDecimal, 40},
	{"a counter", func(r *rand.Rand, i int) float64 { return 1e9 + float64(i)*3600 + float64(r.IntN(100)) }, encDecimal, 10},
	{"scrape offsets", func(r *rand.Rand, i int) float64 { return float64(r.IntN(60_000)) }, encDecimal, 17},
	{"tiny decimals", func(r *rand.Rand, i int) float64 { return float64(r.IntN(1000)) / 1e9 }, encDecimal, 30},
	{"ratios", func(r *rand.Rand, i int) float64 { return r.Float64() }, encChunk, 0},
	{"huge", func(r *rand.Rand, i int) float64 { return r.Float64() * 1e300 }, encChunk, 0},
	{"specials", func(r *rand.Rand, i int) float64 {
		return []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 0, 1.5, math.Float64frombits(0x7ff8000000000bad)}[r.IntN(7)]
	}, encChunk, 0},
	{"negative zero among decimals", func(r *rand.Rand, i int) float64 {
		if i%50 == 7 {
			return math.Copysign(0, -1)
		}
		return -hundredths(r)
	}, anyEncoding, 0},
	{"decimals with a NaN", func(r *rand.Rand, i int) float64 {
		if i == 3 {
			return math.NaN()
		}
		return hundredths(r)
	}, encChunk, 0},
}

// Every kind of column comes back bit for bit, in the encoding meant for
// it, at its expected size.
func TestColumnEncodings(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, tc := range columnCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []int{2, 17, 288, MaxBlockBuckets} {
				vals := make([]float64, n)
				starts := make([]int64, n)
				for i := range vals {
					vals[i] = tc.gen(r, i)
					starts[i] = int64(i) * 3_600_000
				}
				exp := exactExp(vals)
				hint := -1
				if tc.name == "sums of hundredths" {
					hint = 2
				}
				enc := appendColumn(nil, vals, starts, exp, hint)
				if enc[0] != tc.enc && tc.enc != anyEncoding && n >= 17 {
					t.Fatalf("n=%d: encoding %d, want %d", n, enc[0], tc.enc)
				}
				if perValue := float64(len(enc)*8) / float64(n); tc.maxBits > 0 && n >= 288 && perValue > tc.maxBits {
					t.Errorf("n=%d: %.1f bits a value, want at most %v", n, perValue, tc.maxBits)
				}
				h := v2Header{n: n}
				h.cols[0] = appendCRC(enc)
				got, err := h.decodeColumn([]float64{42}, 0, starts)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != n+1 || got[0] != 42 {
					t.Fatalf("%d values (and the one before), want %d", len(got), n+1)
				}
				for i, v := range vals {
					if math.Float64bits(got[i+1]) != math.Float64bits(v) {
						t.Fatalf("n=%d: value %d is %v (%#x), want %v (%#x)", n, i, got[i+1], math.Float64bits(got[i+1]), v, math.Float64bits(v))
					}
				}
			}
		})
	}
}

func appendCRC(b []byte) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), b...), crc32.Checksum(b, castagnoli))
}

// Blocks written in version 1 still read, column by column, as they did.
func TestVersion1BlocksStillRead(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for iter := 0; iter < 50; iter++ {
		bs := randomBuckets(r, 1+r.IntN(300), 3_600_000)
		v1, err := appendBlockV1(nil, bs)
		if err != nil {
			t.Fatal(err)
		}
		if v1[0] != 1 {
			t.Fatalf("version %d", v1[0])
		}
		v2, err := AppendBlock(nil, bs)
		if err != nil {
			t.Fatal(err)
		}
		var a, b Columns
		for _, mask := range []uint{ColAll, ColMax, ColSum | ColCount, ColFirstT, 0} {
			a.Reset()
			b.Reset()
			if err := DecodeColumns(&a, v1, mask); err != nil {
				t.Fatal(err)
			}
			if err := DecodeColumns(&b, v2, mask); err != nil {
				t.Fatal(err)
			}
			for i := range bs {
				x, y := a.Bucket(i), b.Bucket(i)
				if x.Start != y.Start || x.Count != y.Count || x.FirstT != y.FirstT || x.LastT != y.LastT ||
					math.Float64bits(x.Sum) != math.Float64bits(y.Sum) || math.Float64bits(x.Max) != math.Float64bits(y.Max) ||
					math.Float64bits(x.Increase) != math.Float64bits(y.Increase) {
					t.Fatalf("mask %#x bucket %d: version 1 %+v, version 2 %+v", mask, i, x, y)
				}
			}
			if a.Len() != len(bs) || b.Len() != len(bs) || len(a.Max) != len(b.Max) || len(a.Sum) != len(b.Sum) {
				t.Fatalf("mask %#x: %d/%d buckets, %d/%d max", mask, a.Len(), b.Len(), len(a.Max), len(b.Max))
			}
		}
	}
}

// Starts: regular runs and gaps, near the ends of int64, and a single
// bucket.
func TestBlockStarts(t *testing.T) {
	mk := func(starts ...int64) []Bucket {
		bs := make([]Bucket, len(starts))
		for i, s := range starts {
			bs[i].Start = s
			bs[i].Add(s+1, float64(i))
		}
		return bs
	}
	for _, starts := range [][]int64{
		{0},
		{-3_600_000},
		{0, 300_000, 600_000},
		{0, 300_000, 1_200_000, 1_500_000},
		{math.MinInt64 + 7, 0},
		{math.MaxInt64 - 10, math.MaxInt64 - 2},
		{-10, -5, 0, 5, 100},
	} {
		bs := mk(starts...)
		enc, err := AppendBlock(nil, bs)
		if err != nil {
			t.Fatalf("%v: %v", starts, err)
		}
		var c Columns
		if err := DecodeColumns(&c, enc, ColLast); err != nil {
			t.Fatalf("%v: %v", starts, err)
		}
		if !equalInts(c.Start, starts) {
			t.Fatalf("starts %v, want %v", c.Start, starts)
		}
	}
	if _, err := AppendBlock(nil, mk(5, 5)); err == nil {
		t.Error("two buckets at one start accepted")
	}
	if _, err := AppendBlock(nil, mk(5, 1)); err == nil {
		t.Error("buckets out of order accepted")
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A query reading a column checks the bytes of that column and of the
// header: a damaged byte in them is an error; one elsewhere does not stop
// it.
func TestColumnChecksums(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	bs := randomBuckets(r, 200, 3_600_000)
	enc, err := AppendBlock(nil, bs)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseV2(enc)
	if err != nil {
		t.Fatal(err)
	}
	at := len(enc)
	for _, col := range h.cols {
		at -= len(col)
	}
	hdrEnd := at
	sumFrom := hdrEnd + len(h.cols[0])
	sumTo := sumFrom + len(h.cols[1])
	for i := range enc {
		bad := append([]byte(nil), enc...)
		bad[i] ^= 0x10
		var c Columns
		err := DecodeColumns(&c, bad, ColSum)
		inRead := i < hdrEnd || (i >= sumFrom && i < sumTo)
		if inRead && err == nil {
			t.Fatalf("byte %d damaged (header %d bytes, sum column at %d-%d), and the sum column decoded", i, hdrEnd, sumFrom, sumTo)
		}
		if !inRead {
			if err != nil {
				t.Fatalf("byte %d damaged, outside the sum column: %v", i, err)
			}
			for j := range bs {
				if c.Sum[j] != bs[j].Sum {
					t.Fatalf("byte %d damaged, outside the sum column: sum %d changed", i, j)
				}
			}
		}
	}
}

// counterBlock is n 5-minute buckets of a counter scraped every 10 s,
// which never resets: min = first, max = last, increase = last - first.
func counterBlock(r *rand.Rand, n int) []Bucket {
	bs := make([]Bucket, n)
	v := float64(r.IntN(1000))
	for i := range bs {
		bs[i].Start = int64(i) * 300_000
		for k := 1; k <= 30; k++ {
			v += float64(r.IntN(20))
			bs[i].Add(bs[i].Start+int64(k)*10_000, v)
		}
	}
	return bs
}

// A counter's min, max and increase columns are derived from first and
// last (a few bytes each), and come back bit for bit, each alone too; a
// damaged derived column is an error.
func TestDerivedColumns(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	bs := counterBlock(r, 288)
	b, err := AppendBlock(nil, bs)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseV2(b)
	if err != nil {
		t.Fatal(err)
	}
	for c, want := range map[int]byte{colMin: encSame, colMax: encSame, colIncrease: encDiff} {
		if h.cols[c][0] != want || len(h.cols[c]) > 7 {
			t.Fatalf("column %d: encoding %d, %d bytes", c, h.cols[c][0], len(h.cols[c]))
		}
	}
	for _, col := range []uint{ColMin, ColMax, ColIncrease, ColAll &^ ColSketch} {
		var c Columns
		if err := DecodeColumns(&c, b, col); err != nil {
			t.Fatal(err)
		}
		for i := range bs {
			got, w := c.Bucket(i), bs[i]
			if col&ColMin != 0 && got.Min != w.Min || col&ColMax != 0 && got.Max != w.Max || col&ColIncrease != 0 && got.Increase != w.Increase {
				t.Fatalf("columns %b, bucket %d: %+v, want %+v", col, i, got, w)
			}
		}
	}
	// A gauge's are stored.
	g := randomBuckets(r, 288, 300_000)
	gb, _ := AppendBlock(nil, g)
	if h, _ := parseV2(gb); h.cols[colIncrease][0] == encDiff {
		t.Error("a gauge's increase derived")
	}
	// A derived column naming another derived column is refused.
	hh, _ := parseV2(b)
	hh.unchecked = true
	hh.cols[colMin] = []byte{encSame, colMax, 0, 0, 0, 0}
	if _, err := hh.decodeColumn(nil, colMin, nil); err == nil {
		t.Error("min derived from a derived max was accepted")
	}
}
