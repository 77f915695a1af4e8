package report

import (
	"math"
	"time"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
)

// JSON is a report in the shape a script expects (the HTTP API's data
// and `headroom report --format json`): numbers as numbers, labels as an
// object, times as RFC 3339, durations in seconds, weekdays by name, and
// null where there is no value (no crossing, a day without data).
type JSON struct {
	Query        string      `json:"query"`
	Start        string      `json:"start"`
	End          string      `json:"end"`
	StepSeconds  float64     `json:"stepSeconds"`
	Threshold    *float64    `json:"threshold"`
	HorizonDays  float64     `json:"horizonDays"`
	Tiers        []string    `json:"tiers"`
	PercentileOf string      `json:"percentileOf"`
	Unit         string      `json:"unit"`
	Groups       []GroupJSON `json:"groups"`
}

// GroupJSON is one group of JSON.
type GroupJSON struct {
	Labels         map[string]string `json:"labels"`
	Points         int64             `json:"points"`
	Mean           float64           `json:"mean"`
	P50            float64           `json:"p50"`
	P95            float64           `json:"p95"`
	P99            float64           `json:"p99"`
	Max            float64           `json:"max"`
	PeakToAverage  float64           `json:"peakToAverage"`
	BusiestHourUTC int32             `json:"busiestHourUTC"`
	BusiestWeekday string            `json:"busiestWeekday"`
	Headroom       *float64          `json:"headroom"`
	HeadroomPct    *float64          `json:"headroomPercent"`
	CurrentLevel   float64           `json:"currentLevel"`
	Forecast       ForecastJSON      `json:"forecast"`
	Trend          TrendJSON         `json:"trend"`
	// The daily p95 the forecast is of, a value a day from firstDay (a
	// date; null: no data that day).
	FirstDay string     `json:"firstDay"`
	DailyP95 []*float64 `json:"dailyP95"`
}

// ForecastJSON is a group's forecast.
type ForecastJSON struct {
	// "crosses", "not within the horizon", "no reliable trend",
	// "already above" (or "" without a threshold).
	Kind string `json:"kind"`
	Why  string `json:"why,omitempty"`
	// The most likely crossing and its 80% interval (crossingHigh null:
	// after the horizon), null when there is none.
	Crossing          *string  `json:"crossing"`
	CrossingLow       *string  `json:"crossingLow"`
	CrossingHigh      *string  `json:"crossingHigh"`
	DaysUntilCrossing *float64 `json:"daysUntilCrossing"`
}

// TrendJSON is the growth the forecast is fitted on, from regimeStart
// (a date).
type TrendJSON struct {
	PerDay      float64 `json:"perDay"`
	R2          float64 `json:"r2"`
	RegimeStart string  `json:"regimeStart"`
	Weekly      bool    `json:"weekly"`
}

// ToJSON converts a report's wire form to JSON.
func ToJSON(r *headroomv1.ReportResponse) JSON {
	ts := func(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339) }
	opt := func(ms int64) *string {
		if ms == 0 {
			return nil
		}
		s := ts(ms)
		return &s
	}
	// A day (RFC 3339's full-date), "" for none.
	day := func(ms int64) string {
		if ms <= 0 {
			return ""
		}
		return time.UnixMilli(ms).UTC().Format(time.DateOnly)
	}
	num := func(v float64) *float64 {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		return &v
	}
	out := JSON{Query: r.Query, Start: ts(r.StartMs), End: ts(r.EndMs), StepSeconds: float64(r.StepMs) / 1000,
		HorizonDays: float64(r.HorizonMs) / 86400_000, Tiers: r.Tiers, PercentileOf: r.PercentileOf, Unit: r.Unit, Groups: []GroupJSON{}}
	if r.HasThreshold {
		out.Threshold = num(r.Threshold)
	}
	for _, g := range r.Groups {
		j := GroupJSON{Labels: map[string]string{}, Points: g.Points, Mean: g.Mean, P50: g.P50, P95: g.P95, P99: g.P99, Max: g.Max,
			PeakToAverage: g.PeakToAverage, BusiestHourUTC: g.BusiestHour, BusiestWeekday: time.Weekday(g.BusiestWeekday).String(),
			CurrentLevel: g.CurrentLevel, FirstDay: day(g.FirstDayMs),
			Trend:    TrendJSON{PerDay: g.TrendPerDay, R2: g.TrendR2, RegimeStart: day(g.RegimeStartMs), Weekly: g.Seasonal},
			Forecast: ForecastJSON{Kind: g.Forecast, Why: g.ForecastWhy}}
		for _, l := range g.Labels {
			j.Labels[l.Name] = l.Value
		}
		if r.HasThreshold {
			j.Headroom, j.HeadroomPct = num(g.Headroom), num(g.HeadroomPct)
			if g.CrossingInHorizon {
				j.Forecast.Crossing = opt(g.CrossingMs)
				j.Forecast.CrossingLow = opt(g.CrossingLoMs)
				j.Forecast.CrossingHigh = opt(g.CrossingHiMs)
				j.Forecast.DaysUntilCrossing = num(g.DaysUntilCrossing)
			}
		}
		for _, v := range g.DailyP95 {
			j.DailyP95 = append(j.DailyP95, num(v))
		}
		out.Groups = append(out.Groups, j)
	}
	return out
}
