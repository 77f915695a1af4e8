package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/status"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/query/report"
)

func runReport(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	var c clientFlags
	c.register(fs)
	q := fs.String("query", "", "PromQL expression; each result series is a group (for example 'avg by (host) (rate(cpu_seconds_total[5m]))')")
	rng := fs.String("range", "30d", "how far back from --end (units s m h d w y)")
	start := fs.String("start", "", "start instead of --range: now, -90d, RFC 3339 or Unix seconds")
	end := fs.String("end", "now", "end: now, -1d, RFC 3339 or Unix seconds")
	step := fs.String("step", "", "evaluation step; default 1m up to 2 days, 5m up to 30 days, 1h up to 458 days (11,000 points), 1d beyond")
	threshold := fs.String("threshold", "", "capacity limit: the headroom to it and the forecast of when the daily p95 reaches it; a number (0.8, 1e9) or a percentage of a ratio metric (80% is 0.8)")
	horizon := fs.String("horizon", "365d", "how far ahead a crossing is forecast")
	percentileOf := fs.String("percentile-of", "", "what mean, percentiles and max are of: samples (raw samples, from rollup sketches within 1%; default for a series selector), points (the query's value at each step; default otherwise), 5m-avg (5-minute averages, as billing and right-sizing tools use; an expression's values every 5 minutes)")
	unit := fs.String("unit", "", "the levels' unit, shown with them in html and json (% shows a ratio as a percentage); default: the metric's unit from its metadata")
	forecastOnly := fs.Bool("forecast-only", false, "only the groups whose daily p95 reaches --threshold within --horizon (or is above it), soonest first: a planner's to-do list")
	format := fs.String("format", "table", "table, csv, json, or html (one self-contained page with a chart per group)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: headroom report --query 'PROMQL' [--range 90d] [--threshold 0.8] [flags]

Asks a server (over gRPC) for a capacity report: for each series of the
query's result, mean, p50, p95, p99, max, peak to average, the busiest
hour (UTC) and weekday, the headroom left to --threshold, and the
forecast of its daily p95: the date it reaches the threshold with an
80%% interval, "not within the horizon", or "no reliable trend" and why
(docs/forecast.md). Sorted by days until the threshold.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *q == "" && fs.NArg() == 1 {
		*q = fs.Arg(0)
	}
	if strings.TrimSpace(*q) == "" {
		fs.Usage()
		return errors.New("no --query given")
	}
	switch *format {
	case "table", "csv", "json", "html":
	default:
		return fmt.Errorf("--format %q: want table, csv, json or html", *format)
	}
	now := time.Now()
	e, err := parseCLITime(*end, now)
	if err != nil {
		return fmt.Errorf("--end: %w", err)
	}
	req := &headroomv1.ReportRequest{Query: *q, EndMs: e.UnixMilli(), PercentileOf: *percentileOf, Unit: *unit}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["start"] && set["range"] {
		return errors.New("--start and --range both given: give one (--range counts back from --end)")
	}
	if *start != "" {
		s, err := parseCLITime(*start, now)
		if err != nil {
			return fmt.Errorf("--start: %w", err)
		}
		req.StartMs = s.UnixMilli()
	} else {
		d, err := parseDuration(*rng)
		if err != nil {
			return fmt.Errorf("--range: %w", err)
		}
		req.StartMs = e.Add(-d).UnixMilli()
	}
	if *step != "" {
		d, err := parseDuration(*step)
		if err != nil {
			return fmt.Errorf("--step: %w", err)
		}
		req.StepMs = d.Milliseconds()
	}
	if *threshold != "" {
		if req.Threshold, err = report.ParseThreshold(*threshold); err != nil {
			return fmt.Errorf("--threshold: %w", err)
		}
		req.HasThreshold = true
	}
	if *forecastOnly && !req.HasThreshold {
		return errors.New("--forecast-only needs --threshold: the level whose crossing is forecast")
	}
	d, err := parseDuration(*horizon)
	if err != nil {
		return fmt.Errorf("--horizon: %w", err)
	}
	req.HorizonMs = d.Milliseconds()

	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	rep, err := headroomv1.NewReportsClient(conn).Report(ctx, req)
	if err != nil {
		st := status.Convert(err)
		return fmt.Errorf("%s: %s", st.Code(), st.Message())
	}
	if *forecastOnly {
		// The groups are sorted by days until the threshold already.
		var due []*headroomv1.ReportGroup
		for _, g := range rep.Groups {
			if g.CrossingInHorizon || g.AlreadyAboveThreshold {
				due = append(due, g)
			}
		}
		if len(due) == 0 && *format == "table" {
			_, err := fmt.Fprintf(out, "no group of %s reaches %v within %s\n", *q, *threshold, *horizon)
			return err
		}
		rep.Groups = due
	}
	return printReport(out, *format, rep)
}

func printReport(out io.Writer, format string, r *headroomv1.ReportResponse) error {
	if format == "html" {
		return report.WriteHTML(out, r)
	}
	if format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(report.ToJSON(r))
	}
	header := []string{"group", "days left", "crossing", "80% interval", "level", "p95", "headroom", "headroom %", "trend/day", "R²", "mean", "p50", "p99", "max", "peak/avg", "busiest hour", "busiest day", "points"}
	var rows [][]string
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }
	for _, g := range r.Groups {
		days, crossing, interval := "-", "-", "-"
		switch {
		case g.AlreadyAboveThreshold:
			days, crossing = "0", "now"
		case g.CrossingInHorizon:
			days, crossing = strconv.FormatFloat(g.DaysUntilCrossing, 'f', 1, 64), time.UnixMilli(g.CrossingMs).UTC().Format("2006-01-02")
			interval = report.IntervalText(g)
		case r.HasThreshold:
			crossing = report.ForecastText(g)
		}
		headroom, pct := "-", "-"
		if r.HasThreshold {
			headroom, pct = f(g.Headroom), strconv.FormatFloat(g.HeadroomPct, 'f', 1, 64)
		}
		rows = append(rows, []string{labelString(g.Labels), days, crossing, interval, f(g.CurrentLevel), f(g.P95), headroom, pct, f(g.TrendPerDay), strconv.FormatFloat(g.TrendR2, 'f', 2, 64),
			f(g.Mean), f(g.P50), f(g.P99), f(g.Max), strconv.FormatFloat(g.PeakToAverage, 'f', 2, 64),
			fmt.Sprintf("%02d:00", g.BusiestHour), time.Weekday(g.BusiestWeekday).String()[:3], strconv.FormatInt(g.Points, 10)})
	}
	if format == "csv" {
		w := csv.NewWriter(out)
		w.Write(header)
		w.WriteAll(rows)
		return w.Error()
	}
	fmt.Fprintf(out, "%s\n%s to %s, step %v, percentiles of %s, from %s", r.Query, time.UnixMilli(r.StartMs).UTC().Format(time.RFC3339),
		time.UnixMilli(r.EndMs).UTC().Format(time.RFC3339), time.Duration(r.StepMs)*time.Millisecond, r.PercentileOf, strings.Join(r.Tiers, ", "))
	if r.HasThreshold {
		fmt.Fprintf(out, ", threshold %v, horizon %v", r.Threshold, formatDuration(time.Duration(r.HorizonMs)*time.Millisecond))
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, row := range rows {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}
