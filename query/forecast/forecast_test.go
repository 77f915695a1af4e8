package forecast

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// days makes n daily levels: f(day) plus normal noise of spread sd.
func days(r *rand.Rand, n int, sd float64, f func(d int) float64) []float64 {
	out := make([]float64, n)
	for d := range out {
		out[d] = f(d) + r.NormFloat64()*sd
	}
	return out
}

func TestKnownAnswers(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for iter := 0; iter < 20; iter++ {
		// Linear growth, 1 a day from 50, threshold 120: the trend reaches
		// it 10 days after day 59.
		lv := days(r, 60, 1, func(d int) float64 { return 50 + float64(d) })
		f := Run(Input{Levels: lv, Threshold: 120})
		if f.Kind != Crosses || f.Day < 6 || f.Day > 12 || f.Lo > f.Day || f.Hi < f.Day || math.Abs(f.Slope-1) > 0.1 {
			t.Fatalf("linear growth: %+v, want a crossing in about 10 days", f)
		}
		// Growth that stopped 20 days ago: the regime is the plateau.
		lv = days(r, 60, 1, func(d int) float64 { return 50 + float64(min(d, 40)) })
		if f := Run(Input{Levels: lv, Threshold: 120}); f.Kind != NotWithinHorizon || f.RegimeStart < 35 || f.RegimeStart > 45 {
			t.Fatalf("growth that stopped at day 40: %+v, want not within the horizon from a regime starting near day 40", f)
		}
		// A step 10 days ago, flat on both sides.
		lv = days(r, 60, 1, func(d int) float64 { return 50 + 20*float64(min(max(d-49, 0), 1)) })
		if f := Run(Input{Levels: lv, Threshold: 100}); f.Kind == Crosses || f.RegimeStart < 48 || f.RegimeStart > 52 {
			t.Fatalf("a step 10 days ago: %+v, want no date, from a regime starting at the step", f)
		}
		// A step 3 days ago: too recent to say.
		lv = days(r, 60, 1, func(d int) float64 { return 50 + 20*float64(min(max(d-56, 0), 1)) })
		if f := Run(Input{Levels: lv, Threshold: 100}); f.Kind != NoReliableTrend || !strings.Contains(f.Why, "changed") {
			t.Fatalf("a step 3 days ago: %+v, want no reliable trend (the level changed)", f)
		}
		// Flat.
		lv = days(r, 60, 2, func(int) float64 { return 50 })
		if f := Run(Input{Levels: lv, Threshold: 70}); f.Kind != NotWithinHorizon {
			t.Fatalf("flat: %+v, want not within the horizon", f)
		}
	}
	// A level without growth in strong noise, the threshold beyond the
	// noise's reach: a date now and then (the 80% interval of the slope
	// misses zero one time in ten on the high side), not more.
	dated := 0
	for range 100 {
		lv := days(r, 30, 20, func(int) float64 { return 50 })
		if f := Run(Input{Levels: lv, Threshold: 160}); f.Kind == Crosses {
			dated++
		}
	}
	if dated > 20 {
		t.Fatalf("flat levels in strong noise: %d of 100 given a crossing date", dated)
	}
	if f := Run(Input{Levels: []float64{1, 2, 3, math.NaN(), 4, 5}, Threshold: 10}); f.Kind != NoReliableTrend || !strings.Contains(f.Why, "5 days") {
		t.Fatalf("five days: %+v", f)
	}
	if f := Run(Input{Levels: []float64{1, 2, 3, 4, 5, 6, 7, 8, 11}, Threshold: 10}); f.Kind != AlreadyAbove {
		t.Fatalf("the last day above: %+v", f)
	}
}

// Outliers move Theil-Sen's slope little: a few days ten times the
// level leave the growth at 1 a day.
func TestOutliers(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	lv := days(r, 45, 1, func(d int) float64 { return 50 + float64(d) })
	for _, d := range []int{5, 17, 30, 40} {
		lv[d] *= 10
	}
	f := Run(Input{Levels: lv, Threshold: 110})
	if math.Abs(f.Slope-1) > 0.1 || f.Kind != Crosses {
		t.Fatalf("%+v: want the slope near 1 and a crossing", f)
	}
}

// A weekly cycle is found and used: the level crosses first on a
// weekday of the peak, not at the weekend.
func TestWeekly(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	// Day 0 is a Monday; Saturdays and Sundays 15 lower.
	lv := days(r, 56, 1, func(d int) float64 {
		v := 50 + 0.5*float64(d)
		if wd := (d + 1) % 7; wd == 0 || wd == 6 {
			v -= 15
		}
		return v
	})
	f := Run(Input{Levels: lv, Weekday0: time.Monday, Threshold: 100})
	if !f.Seasonal || f.Kind != Crosses {
		t.Fatalf("%+v: want a weekly pattern and a crossing", f)
	}
	// The crossing day, counted from the last (day 55), is not a weekend.
	wd := time.Weekday((int(time.Monday) + 55 + int(f.Day)) % 7)
	if wd == time.Saturday || wd == time.Sunday {
		t.Fatalf("crossing on a %v: %+v", wd, f)
	}
}

// Calibration on many linear series with noise: the 80% interval holds
// the day the level first reached the threshold in 70 to 90% of them.
func TestIntervalCoverage(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	covered, n := 0, 0
	for iter := 0; iter < 300; iter++ {
		slope := 0.2 + r.Float64()
		sd := 1 + 4*r.Float64()
		all := days(r, 60+200, sd, func(d int) float64 { return 50 + slope*float64(d) })
		thr := 50 + slope*float64(60+5+r.IntN(60))
		truth := math.Inf(1)
		for d := 60; d < len(all); d++ {
			if all[d] >= thr {
				truth = float64(d - 59)
				break
			}
		}
		if all[59] >= thr || math.IsInf(truth, 1) {
			continue
		}
		f := Run(Input{Levels: all[:60], Threshold: thr, Horizon: 200})
		if f.Kind != Crosses {
			continue
		}
		n++
		if truth >= f.Lo && truth <= f.Hi {
			covered++
		}
	}
	if share := float64(covered) / float64(n); n < 200 || share < 0.7 || share > 0.92 {
		t.Fatalf("the 80%% interval held the truth in %d of %d forecasts", covered, n)
	}
}

// BenchmarkRun: one series' forecast from 90 days of noisy growth (a
// report of 1,000 series runs 1,000 of these).
func BenchmarkRun(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 5))
	lv := days(r, 90, 3, func(d int) float64 { return 40 + 0.3*float64(d) })
	for b.Loop() {
		Run(Input{Levels: lv, Threshold: 80, Horizon: 365})
	}
}
