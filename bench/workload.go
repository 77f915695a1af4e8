package main

import (
	"math"
	"math/rand/v2"
	"strconv"

	"github.com/headroomdb/headroom/storage/series"
)

// devops generates nSeries series of n samples at a 10 s interval ending at
// end (ms), with the shapes real exporters produce: byte and request
// counters, integer gauges doing random walks (connections, queue
// lengths), percentages with two decimals, and float gauges (load averages).
// A little scrape jitter makes timestamps realistic. Fixed seed.
func devops(nSeries, n int, end int64) dataset {
	r := rand.New(rand.NewPCG(2026, 11))
	d := dataset{name: "generated devops"}
	start := end - int64(n)*10_000
	kinds := []string{"counter", "counter", "gauge_int", "gauge_int", "percent", "gauge_float"}
	for i := 0; i < nSeries; i++ {
		kind := kinds[i%len(kinds)]
		ls := series.FromStrings("__name__", "devops_"+kind, "host", "host-"+strconv.Itoa(i/10), "i", strconv.Itoa(i%10))
		ss := make([]series.Sample, n)
		v := float64(r.IntN(1000))
		rate := float64(1 + r.IntN(100))
		for k := range ss {
			ts := start + int64(k)*10_000
			if r.IntN(20) == 0 {
				ts += int64(r.IntN(7)) - 3
			}
			switch kind {
			case "counter":
				v += math.Round(rate * (0.5 + r.Float64()))
			case "gauge_int":
				v = math.Max(0, v+float64(r.IntN(5)-2))
			case "percent":
				v = math.Round(100*math.Max(0, math.Min(100, 40+30*math.Sin(float64(ts)/7.2e6)+r.NormFloat64()*3))) / 100
			case "gauge_float":
				v = math.Max(0, 2+math.Sin(float64(ts)/3.6e6)+r.NormFloat64()*0.1)
			}
			ss[k] = series.Sample{T: ts, V: v}
		}
		d.series = append(d.series, loadedSeries{labels: ls, samples: ss})
	}
	return d
}
