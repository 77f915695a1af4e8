package report_test

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/query/report"
)

// The page a planner reads: the summary table first, its rows in the
// order of time to exhaustion; one time axis for every chart; round
// ticks with the unit; a labelled threshold on each chart; the
// crossing's interval shaded.
func TestReportHTML(t *testing.T) {
	s, start, end := setup(t)
	rep, err := report.Run(context.Background(), &query.Engine{}, s, report.Options{
		Query: "cpu", Start: start, End: end, Threshold: threshold, HasThreshold: true, Unit: "%",
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := report.WriteHTML(&buf, report.ToProto(rep)); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	table := strings.Index(page, "<table>")
	if table < 0 || table > strings.Index(page, "<svg") {
		t.Fatal("no summary table before the charts")
	}
	var order []string
	for _, m := range regexp.MustCompile(`<td class="g">\{host=&#34;(\w+)&#34;\}</td>`).FindAllStringSubmatch(page, -1) {
		order = append(order, m[1])
	}
	if strings.Join(order, ",") != "hot,grow,flat" {
		t.Errorf("summary rows %v, want hot, grow, flat (time to exhaustion)", order)
	}
	charts := strings.Split(page, "<svg")[1:]
	if len(charts) != 3 {
		t.Fatalf("%d charts", len(charts))
	}
	dates := regexp.MustCompile(`class="axis" x="[\d.]+" y="[\d.]+" text-anchor="(?:start|middle|end)">(\d{4}-\d\d-\d\d)<`)
	var axis string
	ticks := regexp.MustCompile(`text-anchor="end">(-?[\d.]+)%<`)
	for i, c := range charts {
		var ds []string
		for _, m := range dates.FindAllStringSubmatch(c, -1) {
			ds = append(ds, m[1])
		}
		if i == 0 {
			axis = strings.Join(ds, " ")
		} else if strings.Join(ds, " ") != axis {
			t.Errorf("chart %d's time axis %v, the first's %s: not shared", i, ds, axis)
		}
		ts := ticks.FindAllStringSubmatch(c, -1)
		if len(ts) < 3 {
			t.Errorf("chart %d: ticks %v", i, ts)
		}
		for _, m := range ts {
			// Round: at most one significant decimal of a percentage.
			if strings.Contains(m[1], ".") && len(strings.SplitN(m[1], ".", 2)[1]) > 1 {
				t.Errorf("chart %d: tick %s%% is not round", i, m[1])
			}
		}
		if !strings.Contains(c, `class="thrlabel"`) || !strings.Contains(c, "threshold 80%") {
			t.Errorf("chart %d: no labelled threshold", i)
		}
	}
	if !strings.Contains(charts[1], `class="band"`) {
		t.Error("grow's chart: no interval")
	}
}
