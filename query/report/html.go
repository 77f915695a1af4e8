package report

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
)

// WriteHTML writes a report as one self-contained HTML page (inline CSS
// and SVG, no scripts or fonts to fetch): a summary table ranked by time
// to exhaustion, then a chart per group of its daily p95, the trend of
// its current regime carried into the forecast, the labelled threshold
// and the crossing with its 80% interval, every chart on one time axis.
// The report's unit, when known, follows every level ("%" for a ratio
// shown as a percentage).
func WriteHTML(w io.Writer, r *headroomv1.ReportResponse) error {
	data := struct {
		Title, Subtitle string
		Threshold       bool
		Rows            []row
		Charts          []chart
	}{
		Title: "Capacity report: " + r.Query,
		Subtitle: fmt.Sprintf("%s to %s, step %v, percentiles of %s, from %s", time.UnixMilli(r.StartMs).UTC().Format("2006-01-02 15:04"),
			time.UnixMilli(r.EndMs).UTC().Format("2006-01-02 15:04"), time.Duration(r.StepMs)*time.Millisecond, r.PercentileOf, strings.Join(r.Tiers, ", ")),
		Threshold: r.HasThreshold,
	}
	f := levelFormat(r.Unit)
	if r.HasThreshold {
		data.Subtitle += "; threshold " + f(r.Threshold)
	}
	ax := sharedAxis(r)
	for _, g := range r.Groups {
		data.Rows = append(data.Rows, summaryRow(r, g, f))
		data.Charts = append(data.Charts, buildChart(r, g, ax, r.Unit))
	}
	return page.Execute(w, data)
}

// row is a group's line in the summary table.
type row struct {
	Group, Level, P95, Headroom, Forecast, Interval, Days string
}

func summaryRow(r *headroomv1.ReportResponse, g *headroomv1.ReportGroup, f func(float64) string) row {
	x := row{Group: groupName(g), Level: f(g.CurrentLevel), P95: f(g.P95), Headroom: "-", Forecast: "-", Interval: "-", Days: "-"}
	if !r.HasThreshold {
		return x
	}
	x.Headroom = fmt.Sprintf("%s (%.1f%%)", f(g.Headroom), g.HeadroomPct)
	switch {
	case g.AlreadyAboveThreshold:
		x.Forecast, x.Days = "above the threshold now", "0"
	case g.CrossingInHorizon:
		x.Forecast = "crosses " + time.UnixMilli(g.CrossingMs).UTC().Format("2006-01-02")
		x.Interval = IntervalText(g)
		x.Days = fmt.Sprintf("%.0f", g.DaysUntilCrossing)
	default:
		x.Forecast = ForecastText(g)
	}
	return x
}

// axis is the time axis every chart shares: days since the epoch.
type axis struct{ x0, x1 float64 }

// sharedAxis spans every group's days and forecast: the first day of
// any group to the latest crossing interval (or a quarter of the range
// past the end, at least a week), so that the charts compare at a
// glance.
func sharedAxis(r *headroomv1.ReportResponse) axis {
	ax := axis{math.Inf(1), math.Inf(-1)}
	end := float64(r.EndMs) / 86400_000
	for _, g := range r.Groups {
		first := float64(g.FirstDayMs) / 86400_000
		if len(g.DailyP95) == 0 {
			first = float64(r.StartMs) / 86400_000
		}
		ax.x0 = math.Min(ax.x0, first)
		ax.x1 = math.Max(ax.x1, first+float64(len(g.DailyP95)))
		if g.CrossingInHorizon && !g.AlreadyAboveThreshold {
			hi := g.CrossingHiMs
			if hi == 0 {
				hi = g.CrossingMs
			}
			ax.x1 = math.Max(ax.x1, float64(max(hi, g.CrossingMs))/86400_000+1)
		}
	}
	if math.IsInf(ax.x0, 1) {
		ax = axis{float64(r.StartMs) / 86400_000, end}
	}
	ax.x1 = math.Max(ax.x1, end+math.Max(7, 0.25*(end-ax.x0)))
	// Not past the horizon.
	if r.HorizonMs > 0 {
		ax.x1 = math.Min(ax.x1, end+float64(r.HorizonMs)/86400_000)
	}
	return ax
}

// chart is one group's figure: SVG path data and labels.
type chart struct {
	Title                     string
	History, Trend, Threshold template.HTML
	Interval, Crossing        template.HTML
	ThresholdLabel, Unit      label
	XLabels, YLabels          []label
}

type label struct {
	X, Y   float64
	Text   string
	Anchor string
}

// Chart geometry, in SVG user units.
const (
	chartW, chartH         = 760.0, 230.0
	padL, padR, padT, padB = 64.0, 16.0, 14.0, 28.0
	charW                  = 6.2 // the width of a character at 11px, about: labels are placed not to run out
)

func buildChart(r *headroomv1.ReportResponse, g *headroomv1.ReportGroup, ax axis, unit string) (c chart) {
	f := levelFormat(unit)
	c.Title = groupName(g)
	firstDay := float64(g.FirstDayMs) / 86400_000
	x0, x1 := ax.x0, ax.x1
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range g.DailyP95 {
		if !math.IsNaN(v) {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	trendAt := func(x float64) float64 { return g.TrendIntercept + g.TrendPerDay*x }
	regime := math.Max(float64(g.RegimeStartMs)/86400_000, x0)
	hasTrend := g.Forecast != "" && g.RegimeStartMs > 0 && len(g.DailyP95) > 0
	if hasTrend {
		for _, v := range []float64{trendAt(regime + 0.5), trendAt(x1)} {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if r.HasThreshold {
		lo, hi = math.Min(lo, r.Threshold), math.Max(hi, r.Threshold)
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0, 1
	}
	ticks := niceTicks(lo, hi, 4)
	lo, hi = ticks[0], ticks[len(ticks)-1]
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
	if hasTrend {
		// The trend from the start of its regime, carried forward; clipped
		// to the plot.
		xa, xb := regime+0.5, x1
		ya, yb := trendAt(xa), trendAt(xb)
		if g.TrendPerDay > 0 && yb > hi {
			xb = (hi - g.TrendIntercept) / g.TrendPerDay
			yb = hi
		} else if g.TrendPerDay < 0 && yb < lo {
			xb = (lo - g.TrendIntercept) / g.TrendPerDay
			yb = lo
		}
		c.Trend = template.HTML(fmt.Sprintf("M%.1f %.1f L%.1f %.1f", X(xa), Y(ya), X(xb), Y(yb)))
	}
	place := func(x, y float64, text string) label {
		// Right of x, or left of it when the text would run past the edge.
		w := charW * float64(len([]rune(text)))
		if x+6+w <= chartW-2 {
			return label{math.Max(x+6, 2), y, text, "start"}
		}
		return label{math.Max(x-6, w+2), y, text, "end"}
	}
	if r.HasThreshold {
		ty := Y(r.Threshold)
		c.Threshold = template.HTML(fmt.Sprintf("M%.1f %.1f L%.1f %.1f", X(x0), ty, X(x1), ty))
		// Labelled above the line at the left (below when at the top).
		ly := ty - 4
		if ly < padT+10 {
			ly = ty + 12
		}
		c.ThresholdLabel = label{padL + 4, ly, "threshold " + f(r.Threshold), "start"}
		if g.CrossingInHorizon && !g.AlreadyAboveThreshold {
			xa := X(float64(g.CrossingLoMs) / 86400_000)
			xb := X(x1)
			if g.CrossingHiMs != 0 {
				xb = math.Min(xb, X(float64(g.CrossingHiMs)/86400_000))
			}
			c.Interval = template.HTML(fmt.Sprintf(`<rect class="band" x="%.1f" y="%.1f" width="%.1f" height="8"/>`, xa, ty-4, math.Max(xb-xa, 1)))
			cx := X(float64(g.CrossingMs) / 86400_000)
			t := place(cx, ty+16, crossingText(g))
			if ty+16 > chartH-padB-2 {
				t.Y = ty - 8
			}
			c.Crossing = template.HTML(fmt.Sprintf(`<circle cx="%.1f" cy="%.1f" r="4" class="cross"/><text x="%.1f" y="%.1f" class="note" text-anchor="%s">%s</text>`,
				cx, ty, t.X, t.Y, t.Anchor, template.HTMLEscapeString(t.Text)))
		}
	}
	// Dates: the first and last of the axis and three between, rounded
	// to days.
	for i := 0; i <= 4; i++ {
		x := math.Round(x0 + (x1-x0)*float64(i)/4)
		anchor := "middle"
		switch i {
		case 0:
			anchor = "start"
		case 4:
			anchor = "end"
		}
		c.XLabels = append(c.XLabels, label{X(x), chartH - 8, time.UnixMilli(int64(x * 86400_000)).UTC().Format("2006-01-02"), anchor})
	}
	// Ticks as numbers ("%" aside, which is short): a unit on every
	// tick ran out of the chart's left edge; it is said once, above.
	tick := levelFormat("")
	if unit == "%" {
		tick = f
	}
	for _, y := range ticks {
		c.YLabels = append(c.YLabels, label{padL - 6, Y(y) + 4, tick(y), "end"})
	}
	if unit != "" && unit != "%" {
		c.Unit = label{4, 11, unit, "start"}
	}
	return c
}

// niceTicks returns about n+1 round values (1, 2 or 5 times a power of
// ten apart) covering [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		d := math.Max(math.Abs(lo)*0.1, 1)
		lo, hi = lo-d, hi+d
	}
	raw := (hi - lo) / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	step := p
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= raw {
			step = m * p
			break
		}
	}
	first := math.Floor(lo/step) * step
	var out []float64
	for v := first; v < hi+step*0.999; v += step {
		// Multiples of step, not sums that drift (0.30000000000000004).
		out = append(out, math.Round(v/step)*step)
	}
	return out
}

// levelFormat formats a level with its unit: four significant digits at
// most, "%" for a ratio shown as a percentage.
func levelFormat(unit string) func(float64) string {
	return func(v float64) string {
		if unit == "%" {
			return strconv.FormatFloat(v*100, 'g', 4, 64) + "%"
		}
		s := strconv.FormatFloat(v, 'g', 4, 64)
		if unit != "" {
			s += " " + unit
		}
		return s
	}
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

var page = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#222;max-width:800px}
h1{font-size:1.3em} h2{font-size:1em;margin:1.6em 0 .4em;font-family:monospace;overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:.85em;margin:1em 0} th,td{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
td.num{text-align:right;white-space:nowrap} td.g{font-family:monospace;overflow-wrap:anywhere}
svg{background:#fafafa;border:1px solid #ddd;max-width:100%;height:auto}
.hist{fill:none;stroke:#1f6feb;stroke-width:1.5} .trend{fill:none;stroke:#8250df;stroke-width:1.2;stroke-dasharray:5 4}
.thr{fill:none;stroke:#cf222e;stroke-width:1} .cross{fill:#cf222e} .note,.thrlabel{font-size:11px;fill:#cf222e}
.band{fill:#cf222e;fill-opacity:.18} .axis{font-size:10px;fill:#666} .legend{font-size:.8em;color:#555}
</style></head><body>
<h1>{{.Title}}</h1>
<p>{{.Subtitle}}</p>
<table><thead><tr><th>group</th><th>level</th><th>p95</th>{{if .Threshold}}<th>headroom</th><th>forecast</th><th>80% interval</th><th>days left</th>{{end}}</tr></thead><tbody>
{{range .Rows}}<tr><td class="g">{{.Group}}</td><td class="num">{{.Level}}</td><td class="num">{{.P95}}</td>{{if $.Threshold}}<td class="num">{{.Headroom}}</td><td>{{.Forecast}}</td><td>{{.Interval}}</td><td class="num">{{.Days}}</td>{{end}}</tr>
{{end}}</tbody></table>
<p class="legend">Level: the last day's p95 as the forecast fits it. Charts, on one time axis: blue, the daily p95; purple, dashed, the trend since its last change, carried forward; red, the threshold, the crossing and its 80% interval (shaded).</p>
{{range .Charts}}
<h2>{{.Title}}</h2>
<svg viewBox="0 0 760 230" width="760" height="230" role="img" aria-label="{{.Title}}">
<path class="thr" d="{{.Threshold}}"/>{{.Interval}}<path class="hist" d="{{.History}}"/><path class="trend" d="{{.Trend}}"/>{{.Crossing}}
{{if $.Threshold}}<text class="thrlabel" x="{{.ThresholdLabel.X}}" y="{{.ThresholdLabel.Y}}">{{.ThresholdLabel.Text}}</text>{{end}}{{if .Unit.Text}}<text class="axis" x="{{.Unit.X}}" y="{{.Unit.Y}}">{{.Unit.Text}}</text>{{end}}
{{range .XLabels}}<text class="axis" x="{{.X}}" y="{{.Y}}" text-anchor="{{.Anchor}}">{{.Text}}</text>{{end}}
{{range .YLabels}}<text class="axis" x="{{.X}}" y="{{.Y}}" text-anchor="end">{{.Text}}</text>{{end}}
</svg>
{{end}}
</body></html>
`))
