package report

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
)

// WriteHTML writes a report as one self-contained HTML page (inline CSS
// and SVG, no scripts or fonts to fetch): a summary table and a chart per
// group of its daily p95, the trend line carried into the forecast, the
// threshold and the crossing.
func WriteHTML(w io.Writer, r *headroomv1.ReportResponse) error {
	data := struct {
		Title, Subtitle string
		Charts          []chart
	}{
		Title: "Capacity report: " + r.Query,
		Subtitle: fmt.Sprintf("%s to %s, step %v, percentiles of %s, from %s", time.UnixMilli(r.StartMs).UTC().Format("2006-01-02 15:04"),
			time.UnixMilli(r.EndMs).UTC().Format("2006-01-02 15:04"), time.Duration(r.StepMs)*time.Millisecond, r.PercentileOf, strings.Join(r.Tiers, ", ")),
	}
	if r.HasThreshold {
		data.Subtitle += fmt.Sprintf("; threshold %v", r.Threshold)
	}
	for _, g := range r.Groups {
		data.Charts = append(data.Charts, buildChart(r, g))
	}
	return page.Execute(w, data)
}

// chart is one group's figure: SVG path data and labels.
type chart struct {
	Title, Summary            string
	History, Trend, Threshold template.HTML
	Crossing                  template.HTML
	XLabels, YLabels          []label
}

type label struct {
	X, Y float64
	Text string
}

// Chart geometry, in SVG user units.
const (
	chartW, chartH         = 720.0, 220.0
	padL, padR, padT, padB = 56.0, 16.0, 12.0, 28.0
)

func buildChart(r *headroomv1.ReportResponse, g *headroomv1.ReportGroup) (c chart) {
	c.Title = groupName(g)
	c.Summary = summary(r, g)
	firstDay := float64(g.FirstDayMs) / 86400_000
	x0 := firstDay
	x1 := firstDay + float64(len(g.DailyP95))
	if g.CrossingInHorizon && !g.AlreadyAboveThreshold {
		x1 = math.Max(x1, float64(g.CrossingMs)/86400_000+1)
	} else {
		x1 += math.Max(7, 0.25*float64(len(g.DailyP95)))
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range g.DailyP95 {
		if !math.IsNaN(v) {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	trendAt := func(x float64) float64 { return g.TrendIntercept + g.TrendPerDay*x }
	for _, v := range []float64{trendAt(x0), trendAt(x1)} {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if r.HasThreshold {
		lo, hi = math.Min(lo, r.Threshold), math.Max(hi, r.Threshold)
	}
	if lo == hi || math.IsInf(lo, 0) {
		lo, hi = lo-1, hi+1
	}
	pad := (hi - lo) * 0.08
	lo, hi = lo-pad, hi+pad
	X := func(x float64) float64 { return padL + (x-x0)/(x1-x0)*(chartW-padL-padR) }
	Y := func(y float64) float64 { return chartH - padB - (y-lo)/(hi-lo)*(chartH-padT-padB) }
	var b strings.Builder
	pen := "M"
	for i, v := range g.DailyP95 {
		if math.IsNaN(v) {
			pen = "M"
			continue
		}
		fmt.Fprintf(&b, "%s%.1f %.1f ", pen, X(firstDay+float64(i)+0.5), Y(v))
		pen = "L"
	}
	c.History = template.HTML(b.String())
	c.Trend = template.HTML(fmt.Sprintf("M%.1f %.1f L%.1f %.1f", X(x0), Y(trendAt(x0)), X(x1), Y(trendAt(x1))))
	if r.HasThreshold {
		c.Threshold = template.HTML(fmt.Sprintf("M%.1f %.1f L%.1f %.1f", X(x0), Y(r.Threshold), X(x1), Y(r.Threshold)))
		if g.CrossingInHorizon {
			cx := X(float64(g.CrossingMs) / 86400_000)
			c.Crossing = template.HTML(fmt.Sprintf(`<circle cx="%.1f" cy="%.1f" r="4" class="cross"/><text x="%.1f" y="%.1f" class="note">%s</text>`,
				cx, Y(r.Threshold), math.Min(cx+6, chartW-150), Y(r.Threshold)-6, template.HTMLEscapeString(crossingText(g))))
		}
	}
	for i := 0; i <= 4; i++ {
		x := x0 + (x1-x0)*float64(i)/4
		c.XLabels = append(c.XLabels, label{X(x), chartH - 8, time.UnixMilli(int64(x * 86400_000)).UTC().Format("2006-01-02")})
		y := lo + (hi-lo)*float64(i)/4
		c.YLabels = append(c.YLabels, label{padL - 6, Y(y) + 4, fmt.Sprintf("%.3g", y)})
	}
	return c
}

func groupName(g *headroomv1.ReportGroup) string {
	var parts []string
	for _, l := range g.Labels {
		parts = append(parts, fmt.Sprintf("%s=%q", l.Name, l.Value))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func crossingText(g *headroomv1.ReportGroup) string {
	if g.AlreadyAboveThreshold {
		return "above the threshold now"
	}
	return fmt.Sprintf("crosses %s (%.0f days; %s, 80%%)", time.UnixMilli(g.CrossingMs).UTC().Format("2006-01-02"), g.DaysUntilCrossing, IntervalText(g))
}

// IntervalText says the crossing's 80% interval: "between A and B", or
// "from A, possibly after the horizon".
func IntervalText(g *headroomv1.ReportGroup) string {
	day := func(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01-02") }
	if g.CrossingHiMs == 0 {
		return "from " + day(g.CrossingLoMs) + ", possibly after the horizon"
	}
	return "between " + day(g.CrossingLoMs) + " and " + day(g.CrossingHiMs)
}

// ForecastText says a group's forecast in a few words, with why when it
// gives no date.
func ForecastText(g *headroomv1.ReportGroup) string {
	switch {
	case g.AlreadyAboveThreshold:
		return "above the threshold now"
	case g.CrossingInHorizon:
		return crossingText(g)
	case g.ForecastWhy != "":
		return g.Forecast + " (" + g.ForecastWhy + ")"
	case g.Forecast != "":
		return g.Forecast
	}
	return "not within the horizon"
}

func summary(r *headroomv1.ReportResponse, g *headroomv1.ReportGroup) string {
	s := fmt.Sprintf("mean %.4g, p50 %.4g, p95 %.4g, p99 %.4g, max %.4g, peak/avg %.2f; busiest %02d:00 UTC and %s; trend %+.4g per day (R² %.2f)",
		g.Mean, g.P50, g.P95, g.P99, g.Max, g.PeakToAverage, g.BusiestHour, time.Weekday(g.BusiestWeekday), g.TrendPerDay, g.TrendR2)
	if r.HasThreshold {
		s += fmt.Sprintf("; headroom %.4g (%.1f%%)", g.Headroom, g.HeadroomPct)
		s += "; " + ForecastText(g)
	}
	return s
}

var page = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#222;max-width:800px}
h1{font-size:1.3em} h2{font-size:1em;margin:1.6em 0 .2em;font-family:monospace}
p.sum{font-size:.85em;color:#444;margin:.2em 0 .6em}
svg{background:#fafafa;border:1px solid #ddd}
.hist{fill:none;stroke:#1f6feb;stroke-width:1.5} .trend{fill:none;stroke:#8250df;stroke-width:1.2;stroke-dasharray:5 4}
.thr{fill:none;stroke:#cf222e;stroke-width:1} .cross{fill:#cf222e} .note{font-size:11px;fill:#cf222e}
.axis{font-size:10px;fill:#666} .legend{font-size:.8em;color:#555}
</style></head><body>
<h1>{{.Title}}</h1>
<p>{{.Subtitle}}</p>
<p class="legend">Blue: daily p95. Purple, dashed: its least-squares trend, carried forward. Red: the threshold.</p>
{{range .Charts}}
<h2>{{.Title}}</h2>
<p class="sum">{{.Summary}}</p>
<svg viewBox="0 0 720 220" width="720" height="220" role="img" aria-label="{{.Title}}">
<path class="thr" d="{{.Threshold}}"/><path class="hist" d="{{.History}}"/><path class="trend" d="{{.Trend}}"/>{{.Crossing}}
{{range .XLabels}}<text class="axis" x="{{.X}}" y="{{.Y}}" text-anchor="middle">{{.Text}}</text>{{end}}
{{range .YLabels}}<text class="axis" x="{{.X}}" y="{{.Y}}" text-anchor="end">{{.Text}}</text>{{end}}
</svg>
{{end}}
</body></html>
`))
