package main

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang/snappy"
	"google.golang.org/protobuf/proto"

	"github.com/headroomdb/headroom/internal/browser"
	prompb "github.com/headroomdb/headroom/proto/prometheus"
)

// The web console's pages with 10,000 series stored (issue 18): the
// time from navigating to a page to its answer shown, in headless
// Chromium against a `headroom serve` process. Target: under a second.
func benchConsole(bin string) {
	p, err := startServerProc(buildServer(bin))
	if err != nil {
		fatal(err)
	}
	defer p.stop()
	// 100 metrics of 100 series, a sample a minute for two hours.
	now := time.Now().Truncate(time.Minute)
	for m := 0; m < 100; m++ {
		req := &prompb.WriteRequest{}
		for s := 0; s < 100; s++ {
			ts := &prompb.TimeSeries{Labels: []*prompb.Label{{Name: "__name__", Value: "console_metric_" + strconv.Itoa(m)}, {Name: "instance", Value: "host-" + strconv.Itoa(s)}, {Name: "job", Value: "bench"}}}
			for k := 120; k > 0; k-- {
				ts.Samples = append(ts.Samples, &prompb.Sample{Timestamp: now.Add(-time.Duration(k) * time.Minute).UnixMilli(), Value: float64(s + k%7)})
			}
			req.Timeseries = append(req.Timeseries, ts)
		}
		b, err := proto.Marshal(req)
		if err != nil {
			fatal(err)
		}
		resp, err := http.Post(p.httpURL+"/api/v1/write", "application/x-protobuf", bytes.NewReader(snappy.Encode(nil, b)))
		if err != nil {
			fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			fatal(fmt.Errorf("remote write: %s", resp.Status))
		}
	}
	ctx, stop, err := browser.Start()
	if err != nil {
		fmt.Printf("  console: skipped: %v (make tools installs chromium)\n", err)
		return
	}
	defer stop()
	// Warm the browser up (its first page pays for starting it).
	if err := chromedp.Do(ctx, chromedp.Navigate(p.httpURL+"/#/status")); err != nil {
		fatal(err)
	}
	pages := []struct{ name, hash, ready string }{
		{"query: 100 series over 1h", "#/query?range=1h&q0=console_metric_7", `document.querySelector(".info") && document.querySelector(".info").dataset.series === "100" && !!document.querySelector(".uplot canvas")`},
		{"explore: 100 metrics, 10,000 series", "#/explore", `document.querySelectorAll("table.sortable tbody tr").length >= 100`},
		{"capacity: 100 groups over 7d", "#/capacity?query=console_metric_3&range=7d&threshold=200", `document.querySelectorAll("#cap-table tbody tr").length === 100`},
		{"status", "#/status", `document.getElementById("main").textContent.includes("active series")`},
	}
	for _, pg := range pages {
		var times []float64
		for range 3 {
			if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
				fatal(err)
			}
			start := time.Now()
			if err := chromedp.Do(ctx, chromedp.Navigate(p.httpURL+"/"+pg.hash)); err != nil {
				fatal(err)
			}
			for {
				ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](pg.ready))
				if err == nil && ok {
					break
				}
				if time.Since(start) > time.Minute {
					fatal(fmt.Errorf("console page %s: not ready after a minute", pg.name))
				}
				time.Sleep(5 * time.Millisecond)
			}
			times = append(times, time.Since(start).Seconds()*1000)
		}
		med := median(times)
		record("console", "page load to answer shown, "+pg.name, med, "ms", "< 1 s", boolp(med < 1000))
	}
}
