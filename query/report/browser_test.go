package report_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/headroomdb/headroom/internal/browser"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/query/report"
)

// The HTML report rendered in headless Chromium: every text box (axis
// labels, the threshold's, the crossing's note) lies inside its chart,
// including a crossing at the right end of the shared time axis, where
// the note used to run out ("crosses 2026-12-07 (4 days").
func TestReportHTMLInBrowser(t *testing.T) {
	ctx := browser.New(t)
	s, start, end := setup(t)
	var pages [][]byte
	for _, unit := range []string{"", "%", "requests per second"} {
		rep, err := report.Run(context.Background(), &query.Engine{}, s, report.Options{
			Query: "cpu", Start: start, End: end, Threshold: threshold, HasThreshold: true, Unit: unit,
		})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := report.WriteHTML(&buf, report.ToProto(rep)); err != nil {
			t.Fatal(err)
		}
		pages = append(pages, buf.Bytes())
	}
	dir := t.TempDir()
	for i, page := range pages {
		file := filepath.Join(dir, "report.html")
		if err := os.WriteFile(file, page, 0o644); err != nil {
			t.Fatal(err)
		}
		type measured struct {
			Texts   int
			Outside []string
		}
		if err := chromedp.Do(ctx, chromedp.Navigate("file://"+file)); err != nil {
			t.Fatal(err)
		}
		out, err := chromedp.Run(ctx, chromedp.Evaluate[measured](`(() => {
			const out = {Texts: 0, Outside: []};
			for (const svg of document.querySelectorAll("svg")) {
				const box = svg.getBoundingClientRect();
				for (const t of svg.querySelectorAll("text")) {
					out.Texts++;
					const r = t.getBoundingClientRect();
					if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5) {
						out.Outside.push(t.textContent + " [" + Math.round(r.left - box.left) + ".." + Math.round(r.right - box.left) + " of " + Math.round(box.width) + "]");
					}
				}
			}
			return out;
		})()`))
		if err != nil {
			t.Fatal(err)
		}
		if out.Texts < 3*9 { // five dates, four ticks or more, the threshold's label, per chart
			t.Fatalf("page %d: %d text boxes measured, want the three charts' labels", i, out.Texts)
		}
		for _, o := range out.Outside {
			t.Errorf("page %d: text outside its chart: %s", i, o)
		}
	}
}
