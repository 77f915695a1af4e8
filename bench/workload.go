package main

import (
	"math"
	"math/rand/v2"
	"strconv"

	"github.com/headroomdb/headroom/storage/series"
)

// devops generates nSeries series of n samples at a 10 s interval ending at
// end (ms), shaped as DESIGN.md's devops workload says real gauges and
// counters are: mostly small integers doing random walks. Per six series:
// two counters (small random increments, as request and error counters),
// two integer gauges (connections, queue lengths: a walk of -2..+2), a
// percentage with two decimals (a walk of up to 0.5) and a load average
// (two decimals, daily wave plus noise, as /proc/loadavg prints it). One
// scrape in twenty lands a few milliseconds off the grid, as real scrapes
// do. Fixed seed.
func devops(nSeries, n int, end int64) dataset {
	r := rand.New(rand.NewPCG(2026, 11))
	d := dataset{name: "generated devops"}
	start := end - int64(n)*10_000
	kinds := []string{"counter", "counter", "gauge_int", "gauge_int", "percent", "load"}
	for i := 0; i < nSeries; i++ {
		kind := kinds[i%len(kinds)]
		ls := series.FromStrings("__name__", "devops_"+kind, "host", "host-"+strconv.Itoa(i/10), "i", strconv.Itoa(i%10))
		ss := make([]series.Sample, n)
		v := float64(r.IntN(1000))
		if kind == "percent" {
			v = float64(r.IntN(100))
		}
		maxInc := 1 + r.IntN(30)
		for k := range ss {
			ts := start + int64(k)*10_000
			if r.IntN(20) == 0 {
				ts += int64(r.IntN(7)) - 3
			}
			switch kind {
			case "counter":
				v += float64(r.IntN(maxInc + 1))
			case "gauge_int":
				v = math.Max(0, v+float64(r.IntN(5)-2))
			case "percent":
				v = math.Round(100*math.Max(0, math.Min(100, v+float64(r.IntN(101)-50)/100))) / 100
			case "load":
				v = math.Round(100*math.Max(0, 2+math.Sin(float64(ts)/1.37e7)+r.NormFloat64()*0.1)) / 100
			}
			ss[k] = series.Sample{T: ts, V: v}
		}
		d.series = append(d.series, loadedSeries{labels: ls, samples: ss})
	}
	return d
}
