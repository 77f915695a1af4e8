package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	prompb "github.com/headroomdb/headroom/proto/prometheus"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

// A capacity report end to end: a real server, two hosts' CPU written
// over remote-write (one growing, one flat), `headroom report` over gRPC
// in each format, and /api/v1/report over HTTP.
func TestReportCommand(t *testing.T) {
	ts := startServer(t)
	start, end := writeGrowAndFlat(t, ts)

	run := func(format string) string {
		var out bytes.Buffer
		err := runReport([]string{"--server", ts.grpcAddr, "--query", "cpu", "--range", "10d", "--end", fmt.Sprint(end.Unix()),
			"--threshold", "0.8", "--format", format}, &out)
		if err != nil {
			t.Fatalf("report --format %s: %v", format, err)
		}
		return out.String()
	}
	table := run("table")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 5 || !strings.Contains(lines[3], `host="grow"`) || !strings.Contains(lines[4], "not within the horizon") {
		t.Fatalf("table:\n%s", table)
	}
	// JSON in the shapes a script expects: numbers, labels as an object,
	// RFC 3339 times, null for no crossing.
	var rep struct {
		Start     string
		Threshold float64
		Groups    []struct {
			Labels         map[string]string
			BusiestWeekday string
			Forecast       struct {
				Kind                                string
				Crossing, CrossingLow, CrossingHigh *string
				DaysUntilCrossing                   *float64
			}
			Trend  struct{ PerDay float64 }
			Points int64
		}
	}
	if err := json.Unmarshal([]byte(run("json")), &rep); err != nil || len(rep.Groups) != 2 {
		t.Fatalf("json: %v %+v", err, rep)
	}
	if _, err := time.Parse(time.RFC3339, rep.Start); err != nil || rep.Threshold != 0.8 {
		t.Errorf("json: start %q, threshold %v", rep.Start, rep.Threshold)
	}
	// 0.4 + 0.02/day with a daily peak near 0.5: the p95 reaches 0.8
	// about 10 days after the end.
	g, flat := rep.Groups[0], rep.Groups[1]
	if math.Abs(g.Trend.PerDay-0.02) > 0.002 || g.Labels["host"] != "grow" || g.Forecast.Kind != "crosses" || g.Forecast.Crossing == nil ||
		g.Forecast.CrossingLow == nil || g.Forecast.DaysUntilCrossing == nil || g.Points == 0 || g.BusiestWeekday == "" {
		t.Errorf("json group grow: %+v", g)
	}
	if c := g.Forecast.Crossing; c != nil {
		if _, err := time.Parse(time.RFC3339, *c); err != nil {
			t.Errorf("json crossing %q: %v", *c, err)
		}
	}
	if flat.Forecast.Crossing != nil || flat.Forecast.DaysUntilCrossing != nil || flat.Forecast.Kind != "not within the horizon" {
		t.Errorf("json group flat: %+v", flat)
	}
	html := run("html")
	if !strings.HasPrefix(html, "<!DOCTYPE html>") || strings.Count(html, "<svg") != 2 || strings.Contains(html, "<script") ||
		strings.Contains(html, "http://") || strings.Contains(html, "https://") || !strings.Contains(html, `class="cross"`) {
		t.Errorf("html: not one self-contained page with two charts and a crossing:\n%.600s", html)
	}
	if csv := run("csv"); !strings.HasPrefix(csv, "group,days left,crossing,80% interval,level,p95") || strings.Count(csv, "\n") != 3 {
		t.Errorf("csv:\n%s", csv)
	}

	v := url.Values{"query": {"cpu"}, "range": {"10d"}, "end": {fmt.Sprint(end.Unix())}, "threshold": {"0.8"}}
	code, body := httpGet(t, ts.httpURL+"/api/v1/report?"+v.Encode())
	if code != 200 || !strings.Contains(body, `"status":"success"`) || !strings.Contains(body, `"daysUntilCrossing":null`) || !strings.Contains(body, `"labels":{"host":"grow"}`) {
		t.Fatalf("/api/v1/report: %d %s", code, body)
	}
	code, body = httpGet(t, ts.httpURL+"/api/v1/report?query="+url.QueryEscape(`cpu{host="none"}`))
	if code != 400 || !strings.Contains(body, "no data in the range") {
		t.Errorf("empty selection: %d %s", code, body)
	}
	// The HTML page over HTTP as from the command; a percentage
	// threshold; conflicting flags refused, over HTTP and on the command
	// line.
	v.Set("format", "html")
	v.Set("threshold", "80%")
	code, body = httpGet(t, ts.httpURL+"/api/v1/report?"+v.Encode())
	if code != 200 || !strings.HasPrefix(body, "<!DOCTYPE html>") || !strings.Contains(body, "threshold 0.8") {
		t.Errorf("/api/v1/report?format=html&threshold=80%%: %d %.300s", code, body)
	}
	v.Set("start", fmt.Sprint(start.Unix()))
	if code, body = httpGet(t, ts.httpURL+"/api/v1/report?"+v.Encode()); code != 400 || !strings.Contains(body, "not both") {
		t.Errorf("start and range: %d %s", code, body)
	}
	err := runReport([]string{"--server", ts.grpcAddr, "--query", "cpu", "--range", "10d", "--start", "-3d"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--start and --range") {
		t.Errorf("--start with --range: %v", err)
	}
	err = runReport([]string{"--server", ts.grpcAddr, "--query", "cpu", "--threshold", "eighty"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "percentage") {
		t.Errorf("--threshold eighty: %v", err)
	}
}

// headroom check: refused while the directory is open, then counts and
// no damage.
func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	db, err := storage.Open(dir, storage.Options{DisableBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	app := db.Appender()
	app.Append(series.FromStrings("__name__", "up", "job", "a"), time.Now().UnixMilli(), 1)
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runCheck([]string{"--data-dir", dir}, &out); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("check of an open directory: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := runCheck([]string{"--data-dir", dir}, &out); err != nil || !strings.Contains(out.String(), "1 series") || !strings.Contains(out.String(), "no damage found") {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
}

// headroom check --tiers: a day of two series, rolled up, recomputed
// from raw and found equal; then one 5m bucket's raw samples change
// behind the downsampler's back (its marker removed), and the check
// names the bucket.
func TestCheckTiersCommand(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	clock := func() time.Time { return now }
	db, err := storage.Open(dir, storage.Options{DisableBackground: true, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	day := now.UTC().Truncate(24 * time.Hour).Add(-48 * time.Hour)
	app := db.Appender()
	for ts := day; ts.Before(day.Add(24 * time.Hour)); ts = ts.Add(time.Minute) {
		for _, h := range []string{"a", "b"} {
			if err := app.Append(series.FromStrings("__name__", "load", "host", h), ts.UnixMilli()+1, float64(ts.Minute())); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	now = now.Add(10 * time.Minute)
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runCheck([]string{"--data-dir", dir, "--tiers"}, &out); err != nil || !strings.Contains(out.String(), "2 series-days recomputed") ||
		!strings.Contains(out.String(), ", 0 differ;") {
		t.Fatalf("check --tiers: %v\n%s", err, out.String())
	}
	// A late sample, its day's marker then deleted: the tiers miss it.
	db, err = storage.Open(dir, storage.Options{DisableBackground: true, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	app = db.Appender()
	if err := app.Append(series.FromStrings("__name__", "load", "host", "b"), day.Add(3*time.Hour+30*time.Second).UnixMilli(), 1000); err != nil {
		t.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := storage.DropRollMarkers(dir); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = runCheck([]string{"--data-dir", dir, "--tiers"}, &out)
	if err == nil || !strings.Contains(out.String(), `differs: {__name__="load", host="b"} 5m0s bucket at `+day.Add(3*time.Hour).Format(time.RFC3339)+": count 5, raw samples give 6") {
		t.Fatalf("check --tiers after a change behind the downsampler: %v\n%s", err, out.String())
	}
}

// writeGrowAndFlat writes 10 days of two hosts' CPU every 5 minutes over
// remote-write: "grow" (0.4 + 0.02 a day, a daily swing of 0.1) and
// "flat" (0.3 and the swing); it returns the range.
func writeGrowAndFlat(t *testing.T, ts *testServer) (start, end time.Time) {
	t.Helper()
	end = time.Now().Truncate(time.Hour)
	start = end.Add(-10 * 24 * time.Hour)
	var batch []*prompb.TimeSeries
	flush := func() {
		if code, body := postRemoteWrite(t, ts.httpURL, "", remoteWriteBody(t, batch...)); code/100 != 2 {
			t.Fatalf("remote write: %d %s", code, body)
		}
		batch = batch[:0]
	}
	for at := start; at.Before(end); at = at.Add(5 * time.Minute) {
		d := at.Sub(start).Hours() / 24
		daily := 0.1 * math.Sin(float64(at.Hour())/24*2*math.Pi)
		batch = append(batch,
			promSeries("cpu", at.UnixMilli(), 0.4+0.02*d+daily, "host", "grow"),
			promSeries("cpu", at.UnixMilli(), 0.3+daily, "host", "flat"))
		if len(batch) >= 2000 {
			flush()
		}
	}
	flush()
	return start, end
}

// A forecast watch: the server runs the report every interval and
// /metrics says how many days each group has left, for an alert; the
// command's --forecast-only lists the groups that cross, soonest first.
func TestForecastWatch(t *testing.T) {
	ts := startServer(t, "--forecast-watch", "cpu 80% cpu", "--forecast-interval", "1s", "--forecast-range", "10d")
	writeGrowAndFlat(t, ts)
	grow := regexp.MustCompile(`headroom_forecast_days_until_threshold\{group="\{host=\\"grow\\"\}",watch="cpu"\} (\S+)`)
	flat := regexp.MustCompile(`headroom_forecast_days_until_threshold\{group="\{host=\\"flat\\"\}",watch="cpu"\} (\S+)`)
	deadline := time.Now().Add(time.Minute) // a hang guard: runs come every second
	for {
		_, body := httpGet(t, ts.httpURL+"/metrics")
		g, f := grow.FindStringSubmatch(body), flat.FindStringSubmatch(body)
		if g != nil && f != nil {
			days, err := strconv.ParseFloat(g[1], 64)
			if err != nil || days <= 0 || days > 30 || f[1] != "+Inf" {
				t.Fatalf("grow %s days, flat %s: want grow within weeks, flat +Inf", g[1], f[1])
			}
			if !strings.Contains(body, `headroom_forecast_days_until_threshold_earliest{group=`) || !strings.Contains(body, `headroom_forecast_last_run_timestamp_seconds{watch="cpu"}`) {
				t.Fatal("the interval's early end or the last run is missing")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no forecast on /metrics after a minute:\n%s\n%.500s", grepLines(body, "headroom_forecast_"), body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var out bytes.Buffer
	if err := runReport([]string{"--server", ts.grpcAddr, "--query", "cpu", "--range", "10d", "--threshold", "0.8", "--forecast-only"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `host="grow"`) || strings.Contains(out.String(), `host="flat"`) {
		t.Errorf("--forecast-only:\n%s", out.String())
	}
	if err := runReport([]string{"--server", ts.grpcAddr, "--query", "cpu", "--forecast-only"}, io.Discard); err == nil || !strings.Contains(err.Error(), "--threshold") {
		t.Errorf("--forecast-only without --threshold: %v", err)
	}
}

// --forecast-watch values: the name, threshold and query each checked,
// the error naming what is wrong.
func TestForecastWatchFlag(t *testing.T) {
	w, err := parseWatch(`cpu  80%  avg by (host) (rate(cpu_seconds_total{job="node"}[5m]))`)
	if err != nil || w.name != "cpu" || w.threshold != 0.8 || w.query != `avg by (host) (rate(cpu_seconds_total{job="node"}[5m]))` {
		t.Fatalf("%+v %v", w, err)
	}
	for _, c := range []struct{ in, want string }{
		{"cpu 0.8", "NAME THRESHOLD QUERY"},
		{"cpu-load 0.8 up", "name"},
		{"cpu lots up", "threshold"},
		{"cpu 0.8 rate(up[5m]", "parse"},
	} {
		if _, err := parseWatch(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error about %s", c.in, err, c.want)
		}
	}
}
