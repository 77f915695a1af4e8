package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/headroomdb/headroom/internal/browser"
)

// screenshots is where the console tests leave their pictures (ignored
// by git: see .gitignore), for a person to look at after a run.
const screenshots = "testdata/screenshots"

// shoot saves a PNG of the page and checks it is not blank: a page that
// failed to render is one colour.
func shoot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(90))
	if err != nil {
		t.Fatal(err)
	}
	// FullScreenshot gives a JPEG at quality < 100; ask for a PNG.
	if buf, err = chromedp.Run(ctx, chromedp.CaptureScreenshot()); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	colours := map[[3]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 7 {
		for x := b.Min.X; x < b.Max.X; x += 7 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[[3]uint32{r >> 8, g >> 8, bl >> 8}] = true
		}
	}
	if len(colours) < 8 {
		t.Errorf("screenshot %s: %d colours: a blank page", name, len(colours))
	}
	if err := os.MkdirAll(screenshots, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(screenshots, name+".png"), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitFor evaluates a JavaScript condition until it holds (a hang
// guard of a minute; the page answers in milliseconds).
func waitFor(t *testing.T, ctx context.Context, what, cond string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("main").innerText`))
			t.Fatalf("%s: not after a minute (%v); the page says:\n%s", what, err, html)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// typeExpr puts text in the first query editor with the cursor at its
// end, as typing would (completion follows), and with run clicks Run.
func typeExpr(t *testing.T, ctx context.Context, text string, run bool) {
	t.Helper()
	js := `(() => {
		const a = document.querySelector("textarea.expr");
		a.focus(); a.value = ` + strconv.Quote(text) + `; a.selectionStart = a.selectionEnd = a.value.length;
		a.dispatchEvent(new Event("input"));
		if (` + strconv.FormatBool(run) + `) document.querySelector("button.run").click();
	})()`
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
		t.Fatal(err)
	}
}

// The console's query view in headless Chromium against a real server
// with data: a query draws one line per series; completion offers a
// metric written a moment before; a syntax error is shown under its
// column; the view's state is in the URL.
func TestConsoleQuery(t *testing.T) {
	ts := startServer(t)
	now := time.Now()
	body := remoteWriteBody(t,
		promSeries("console_cpu", now.Add(-10*time.Minute).UnixMilli(), 0.2, "host", "a"),
		promSeries("console_cpu", now.Add(-5*time.Minute).UnixMilli(), 0.3, "host", "a"),
		promSeries("console_cpu", now.Add(-10*time.Minute).UnixMilli(), 0.5, "host", "b"),
		promSeries("console_cpu", now.Add(-5*time.Minute).UnixMilli(), 0.6, "host", "b"),
		promSeries("console_cpu", now.Add(-5*time.Minute).UnixMilli(), 0.9, "host", "c"))
	if code, msg := postRemoteWrite(t, ts.httpURL, "", body); code/100 != 2 {
		t.Fatalf("remote write: %d %s", code, msg)
	}
	ctx := browser.New(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.httpURL+"/#/query?range=1h&q0=console_cpu")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the query's answer", `document.querySelector(".info") && document.querySelector(".info").dataset.series === "3"`)
	// Three lines: uPlot's legend has the time and a row per series.
	waitFor(t, ctx, "the graph", `document.querySelectorAll(".u-legend .u-series").length === 4 && !!document.querySelector(".uplot canvas")`)
	// An hour at the automatic step (15 s): 241 points a series.
	points, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector(".out").dataset.points + "/" + document.querySelector(".out").dataset.series`))
	if err != nil || points != "241/3" {
		t.Errorf("graph points/series %q (%v), want 241/3", points, err)
	}
	shoot(t, ctx, "query-graph")

	// Completion: a metric name from its first letters.
	typeExpr(t, ctx, "console_c", false)
	waitFor(t, ctx, "completion of console_cpu", `[...document.querySelectorAll("ul.complete li")].some(li => li.textContent === "console_cpu")`)
	shoot(t, ctx, "query-completion")
	// Label names inside the braces, then a label's values.
	for _, c := range []struct{ text, want string }{{`console_cpu{ho`, "host"}, {`console_cpu{host="`, "b"}} {
		typeExpr(t, ctx, c.text, false)
		waitFor(t, ctx, "completion of "+c.want+" after "+c.text, `[...document.querySelectorAll("ul.complete li")].some(li => li.textContent === "`+c.want+`")`)
	}

	// A syntax error, shown under its column.
	typeExpr(t, ctx, "rate(console_cpu[5m]", true)
	waitFor(t, ctx, "the syntax error", `(() => { const e = document.querySelector("pre.err"); return e && !e.hidden && e.textContent.includes("^") && e.textContent.includes("parse error"); })()`)
	shoot(t, ctx, "query-error")
	// An absolute range: from 19 minutes ago to 4 minutes ago, at the
	// automatic step for 15 minutes (15 s): 61 points.
	from, to := now.Add(-19*time.Minute).UTC().Format("2006-01-02T15:04:05"), now.Add(-4*time.Minute).UTC().Format("2006-01-02T15:04:05")
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.httpURL+"/#/query?q0=console_cpu&start="+from+"&end="+to)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the absolute range's graph", `(() => { const o = document.querySelector(".out"); return o && o.dataset.points === "61" && o.dataset.series === "3"; })()`)
	typeExpr(t, ctx, "rate(console_cpu[5m]", true)
	url, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash`))
	if err != nil || !strings.Contains(url, "q0=rate%28console_cpu") || !strings.Contains(url, "start=") {
		t.Errorf("the URL does not hold the view: %q %v", url, err)
	}
}

// With a tokens file: no token gets the sign-in form and no data, a
// write-only token is refused, a read token uses the console.
func TestConsoleAuth(t *testing.T) {
	const rtok, wtok = "read-token-0123456789", "write-token-0123456789"
	tf := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tf, []byte("read "+rtok+" grafana\nwrite "+wtok+" agent\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, "--tokens-file", tf)
	body := remoteWriteBody(t, promSeries("console_mem", time.Now().Add(-time.Minute).UnixMilli(), 1, "host", "a"))
	if code, msg := postRemoteWrite(t, ts.httpURL, wtok, body); code/100 != 2 {
		t.Fatalf("remote write: %d %s", code, msg)
	}
	ctx := browser.New(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.httpURL+"/#/query?q0=console_mem")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the sign-in form", `!!document.getElementById("login")`)
	shoot(t, ctx, "sign-in")
	signIn := func(token string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`(() => {
			document.getElementById("token").value = `+"`"+token+"`"+`;
			document.querySelector("#login button").click();
		})()`)); err != nil {
			t.Fatal(err)
		}
	}
	signIn(wtok)
	waitFor(t, ctx, "the write token refused", `document.getElementById("login-error").textContent.includes("may not read")`)
	signIn(rtok)
	waitFor(t, ctx, "the query with the read token", `document.querySelector(".info") && document.querySelector(".info").dataset.series === "1"`)
	// The session is a read token only: it cannot write.
	if code, _ := postRemoteWrite(t, ts.httpURL, "", body); code != 401 {
		t.Errorf("a write without a token: %d", code)
	}
}

// The explore, capacity and status views in headless Chromium: the
// stored metrics with their series counts and label values; the report
// as a page, its groups in order of time to exhaustion, a group's chart;
// the server's state and flags.
func TestConsoleViews(t *testing.T) {
	// A watch of a metric that does not exist fails, and says so: a
	// warning the status view lists.
	ts := startServer(t, "--forecast-watch", "ghost 1 no_such_metric")
	writeGrowAndFlat(t, ts)
	ctx := browser.New(t)
	nav := func(hash string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(ts.httpURL+"/"+hash)); err != nil {
			t.Fatal(err)
		}
	}
	nav("#/explore")
	waitFor(t, ctx, "the metric list", `[...document.querySelectorAll("table.sortable td.g")].some(td => td.textContent === "cpu")`)
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`[...document.querySelectorAll("tr.click")].find(tr => tr.firstChild.textContent === "cpu").click()`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the metric's labels", `(() => { const d = document.getElementById("metric-detail"); return d && d.textContent.includes("2 series") && d.textContent.includes("host") && d.textContent.includes("grow"); })()`)
	shoot(t, ctx, "explore")

	nav("#/capacity?query=cpu&range=14d&threshold=0.8")
	waitFor(t, ctx, "the capacity table", `document.querySelectorAll("#cap-table tbody tr").length === 2`)
	order, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#cap-table tbody tr td.g")].map(td => td.textContent)`))
	if err != nil || len(order) != 2 || !strings.Contains(order[0], "grow") || !strings.Contains(order[1], "flat") {
		t.Errorf("capacity rows %v (%v), want grow (crossing first) then flat", order, err)
	}
	waitFor(t, ctx, "the group's chart", `!!document.querySelector("#cap-chart canvas") && document.getElementById("cap-chart").textContent.includes("crosses")`)
	shoot(t, ctx, "capacity")
	// The same numbers as headroom report: grow's days left and crossing.
	var out bytes.Buffer
	if err := runReport([]string{"--server", ts.grpcAddr, "--query", "cpu", "--range", "14d", "--threshold", "0.8", "--format", "json"}, &out); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Groups []struct {
			Forecast struct {
				Crossing          *string
				DaysUntilCrossing *float64
			}
		}
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || len(rep.Groups) != 2 || rep.Groups[0].Forecast.Crossing == nil {
		t.Fatalf("headroom report: %v %s", err, out.String())
	}
	cells, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#cap-table tbody tr")[0].children].map(td => td.textContent)`))
	want := fmt.Sprintf("%.0f", *rep.Groups[0].Forecast.DaysUntilCrossing)
	if err != nil || len(cells) != 7 || cells[6] != want || cells[4] != "crosses "+(*rep.Groups[0].Forecast.Crossing)[:10] {
		t.Errorf("capacity row %q (%v), headroom report says %s days, crossing %s", cells, err, want, *rep.Groups[0].Forecast.Crossing)
	}

	nav("#/status")
	waitFor(t, ctx, "the status", `document.getElementById("main").textContent.includes("active series") && document.getElementById("main").textContent.includes("retention")`)
	waitFor(t, ctx, "the failed watch among recent errors", `!!document.getElementById("recent-errors") && document.getElementById("recent-errors").textContent.includes("forecast watch failed")`)
	shoot(t, ctx, "status")
}
