package rollup

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// cpuBlock is a 1-hour tier block as the downsampling benchmark writes:
// 288 buckets of 60 per-minute CPU percentages in hundredths.
func cpuBlock(r *rand.Rand) []Bucket {
	bs := make([]Bucket, 288)
	for i := range bs {
		b := &bs[i]
		b.Start = int64(i) * 3_600_000
		for m := 1; m <= 60; m++ {
			v := 35 + 15*math.Sin(float64(i)/24*2*math.Pi) + r.NormFloat64()*3
			b.Add(b.Start+int64(m)*60_000, math.Round(v*100)/100)
		}
	}
	return bs
}

// BenchmarkDecodeColumns: the columns avg_over_time and max_over_time
// read, per bucket, from a version 1 and a version 2 block.
func BenchmarkDecodeColumns(b *testing.B) {
	bs := cpuBlock(rand.New(rand.NewPCG(1, 2)))
	v1, err := appendBlockV1(nil, bs)
	if err != nil {
		b.Fatal(err)
	}
	v2, err := AppendBlock(nil, bs)
	if err != nil {
		b.Fatal(err)
	}
	for _, blk := range []struct {
		name string
		enc  []byte
	}{{"v1", v1}, {"v2", v2}} {
		for _, cols := range []struct {
			name string
			mask uint
		}{{"sum+count", ColSum | ColCount}, {"max", ColMax}, {"rate", ColCount | ColFirst | ColLast | ColIncrease | ColFirstT | ColLastT}} {
			b.Run(fmt.Sprintf("%s/%s", blk.name, cols.name), func(b *testing.B) {
				var c Columns
				b.SetBytes(int64(len(blk.enc)))
				for b.Loop() {
					c.Reset()
					if err := DecodeColumns(&c, blk.enc, cols.mask); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(bs)), "ns/bucket")
				b.ReportMetric(float64(len(blk.enc)), "B/block")
			})
		}
	}
}
