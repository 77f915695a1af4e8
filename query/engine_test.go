package query_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// src adapts the real engine to query.Source, as the binary does.
type src struct{ db *storage.DB }

func (s src) Querier(mint, maxt int64) (query.Querier, error) {
	return s.db.Querier(max(mint, storage.MinTime), min(maxt, storage.MaxTime))
}

func (s src) Tiers() []query.Tier {
	var out []query.Tier
	for _, t := range s.db.Tiers() {
		out = append(out, query.Tier{Resolution: t.Resolution, Watermark: t.Watermark, Oldest: t.Oldest, Sketches: t.Sketches})
	}
	return out
}

func (s src) EachRollup(tier int, mint, maxt int64, cols uint, shard, shards int, ms []*series.Matcher, f func(series.Labels, *rollup.Columns) error) (query.TierRead, error) {
	rr, err := s.db.EachRollup(tier, mint, maxt, cols, shard, shards, ms, f)
	return query.TierRead{RawDays: rr.RawDays}, err
}

func (s src) EachHistRollup(tier int, mint, maxt int64, shard, shards int, ms []*series.Matcher, f func(series.Labels, []rollup.HistBucket) error) (query.TierRead, error) {
	rr, err := s.db.EachHistRollup(tier, mint, maxt, shard, shards, ms, f)
	return query.TierRead{RawDays: rr.RawDays}, err
}

// t0 is the test data's origin; samples are at t0 + seconds.
var t0 = time.Now().Add(-2 * time.Hour).Truncate(time.Hour).UnixMilli()

func sec(s int) int64 { return t0 + int64(s)*1000 }

// load writes series given as "labels: v@s v@s ..." lines.
func load(t testing.TB, data map[string][]float64, every int) query.Source {
	t.Helper()
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	app := db.Appender()
	for spec, vals := range data {
		kv := strings.Split(spec, ",")
		ls := series.FromStrings(kv...)
		for i, v := range vals {
			if math.IsInf(v, -1) { // a gap
				continue
			}
			if err := app.Append(ls, sec(i*every), v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	return src{db}
}

var gap = math.Inf(-1)

// render prints a result one series a line: labels then values.
func render(r *query.Result) string {
	switch r.Type {
	case "scalar":
		return fmt.Sprintf("scalar %s", fmtF(r.Scalar.V))
	case "string":
		return "string " + r.String
	}
	var lines []string
	for _, s := range r.Series {
		var vs []string
		for _, p := range s.Points {
			if r.Type == "matrix" {
				vs = append(vs, fmt.Sprintf("%s@%d", fmtF(p.V), (p.T-t0)/1000))
			} else {
				vs = append(vs, fmtF(p.V))
			}
		}
		lines = append(lines, s.Labels.String()+" "+strings.Join(vs, " "))
	}
	if r.Type == "vector" {
		sort.Strings(lines)
	}
	return r.Type + "\n" + strings.Join(lines, "\n")
}

func fmtF(f float64) string {
	if series.IsStaleNaN(f) {
		return "stale"
	}
	return fmt.Sprintf("%.4g", f)
}

var eng = &query.Engine{}

func instant(t *testing.T, s query.Source, q string, at int) string {
	t.Helper()
	r, err := eng.Instant(context.Background(), s, q, sec(at))
	if err != nil {
		return "error: " + err.Error()
	}
	return render(r)
}

func check(t *testing.T, s query.Source, q string, at int, want string) {
	t.Helper()
	if got := instant(t, s, q, at); got != want {
		t.Errorf("%s @%d:\n got %s\nwant %s", q, at, got, want)
	}
}

func TestSelectors(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,g,job,a": {1, 2, 3, 4, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap, gap},
		"__name__,g,job,b": {10, 20, series.StaleNaN, 40},
	}, 60)
	// At 90 s: the newest sample of each series at or before 90 s.
	check(t, s, "g", 90, "vector\n{__name__=\"g\", job=\"a\"} 2\n{__name__=\"g\", job=\"b\"} 20")
	// At 120 s, b's newest sample is a stale marker: b has ended.
	check(t, s, "g", 120, "vector\n{__name__=\"g\", job=\"a\"} 3")
	// Lookback: the last samples are at 180 s; 5 minutes later they are
	// gone (the window is left-open).
	check(t, s, "g", 479, "vector\n{__name__=\"g\", job=\"a\"} 4\n{__name__=\"g\", job=\"b\"} 40")
	check(t, s, "g", 480, "vector\n")
	check(t, s, "g offset 1m", 90, "vector\n{__name__=\"g\", job=\"a\"} 1\n{__name__=\"g\", job=\"b\"} 10")
	check(t, s, `g{job="b"} @ `+fmt.Sprint((sec(60))/1000), 400, "vector\n{__name__=\"g\", job=\"b\"} 20")
	check(t, s, `g{job="a"}[2m]`, 180, "matrix\n{__name__=\"g\", job=\"a\"} 3@120 4@180")
	check(t, s, `timestamp(g)`, 100, "vector\n{job=\"a\"} "+fmtF(float64(sec(60))/1000)+"\n{job=\"b\"} "+fmtF(float64(sec(60))/1000))
	check(t, s, `{job=~".*"}`, 100, "error: bad query: 1:1: parse error: vector selector must contain at least one non-empty matcher")
}

func TestRateFamily(t *testing.T) {
	// A counter growing by 1 every 15 s, reset at 150 s.
	var c []float64
	for i := 0; i < 40; i++ {
		v := float64(100 + i)
		if i >= 10 {
			v = float64(i - 10)
		}
		c = append(c, v)
	}
	s := load(t, map[string][]float64{"__name__,c,job,x": c}, 15)
	// (60 s window, 4 samples 15 s apart, perfectly regular): 1/15 per s.
	check(t, s, "rate(c[1m])", 90, "vector\n{job=\"x\"} 0.06667")
	check(t, s, "increase(c[1m])", 90, "vector\n{job=\"x\"} 4")
	check(t, s, "irate(c[1m])", 90, "vector\n{job=\"x\"} 0.06667")
	check(t, s, "idelta(c[1m])", 90, "vector\n{job=\"x\"} 1")
	// Across the reset at 150 s (109 -> 0): the raw change is -106 over
	// samples 105..150 (values 107,108,109,0); with the reset counted it
	// is 3 - ... : increase = (0 + 109) - 107 = 2 over 45 s, extrapolated
	// to 60 s: 2 * 60/45.
	check(t, s, "increase(c[1m])", 150, "vector\n{job=\"x\"} 2.667")
	check(t, s, "resets(c[5m])", 300, "vector\n{job=\"x\"} 1")
	check(t, s, "changes(c[1m])", 90, "vector\n{job=\"x\"} 3")
	check(t, s, "delta(c[1m])", 90, "vector\n{job=\"x\"} 4")
	check(t, s, "deriv(c[1m])", 90, "vector\n{job=\"x\"} 0.06667")
	// predict_linear 60 s ahead from 90 s: value at 90 s is 106, +4.
	check(t, s, "predict_linear(c[1m], 60)", 90, "vector\n{job=\"x\"} 110")
	check(t, s, "rate(c)", 90, "error: bad query: 1:6: parse error: expected type range vector in call to function \"rate\", got instant vector")
}

func TestOverTime(t *testing.T) {
	s := load(t, map[string][]float64{"__name__,m,job,x": {3, 1, 4, 1, 5, 9, 2, 6}}, 10)
	for q, want := range map[string]string{
		"avg_over_time(m[1m])":           "3.667",   // 1,4,1,5,9,2 (10..60)
		"sum_over_time(m[1m])":           "22",      //
		"min_over_time(m[1m])":           "1",       //
		"max_over_time(m[1m])":           "9",       //
		"count_over_time(m[1m])":         "6",       //
		"last_over_time(m[1m])":          "2",       //
		"present_over_time(m[1m])":       "1",       //
		"quantile_over_time(0.5, m[1m])": "3",       // sorted 1,1,2,4,5,9: between 2 and 4
		"stdvar_over_time(m[1m])":        "7.889",   // squared deviations from 3.667 sum to 47.33
		"stddev_over_time(m[1m])":        "2.809",   //
		"m[1m:20s]":                      "matrix1", // subquery at 20,40,60
	} {
		got := instant(t, s, q, 60)
		name := `{job="x"}`
		if q == "last_over_time(m[1m])" {
			name = `{__name__="m", job="x"}`
		}
		if want == "matrix1" {
			want = "matrix\n{__name__=\"m\", job=\"x\"} 4@20 5@40 2@60"
			if got != want {
				t.Errorf("%s: got %s want %s", q, got, want)
			}
			continue
		}
		if got != "vector\n"+name+" "+want {
			t.Errorf("%s: got %s, want %s", q, got, want)
		}
	}
	check(t, s, "max_over_time(m[1m:20s])", 60, "vector\n{job=\"x\"} 5")
	check(t, s, "absent_over_time(m[1m])", 60, "vector\n")
	check(t, s, `absent_over_time(nope{job="y"}[1m])`, 60, "vector\n{job=\"y\"} 1")
}

func TestAggregations(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,cpu,host,a,dc,eu": {1},
		"__name__,cpu,host,b,dc,eu": {3},
		"__name__,cpu,host,c,dc,us": {5},
		"__name__,cpu,host,d,dc,us": {5},
		"__name__,mem,host,a,dc,eu": {100},
	}, 10)
	for q, want := range map[string]string{
		"sum(cpu)":                        "{} 14",
		"sum by (dc) (cpu)":               "{dc=\"eu\"} 4\n{dc=\"us\"} 10",
		"avg without (host) (cpu)":        "{dc=\"eu\"} 2\n{dc=\"us\"} 5",
		"max by (dc) (cpu)":               "{dc=\"eu\"} 3\n{dc=\"us\"} 5",
		"min(cpu)":                        "{} 1",
		"count by (dc) (cpu)":             "{dc=\"eu\"} 2\n{dc=\"us\"} 2",
		"group by (dc) (cpu)":             "{dc=\"eu\"} 1\n{dc=\"us\"} 1",
		"stddev(cpu)":                     "{} 1.658",
		"stdvar(cpu)":                     "{} 2.75",
		"quantile(0.5, cpu)":              "{} 4",
		"topk(1, cpu)":                    "{__name__=\"cpu\", dc=\"us\", host=\"c\"} 5",
		"bottomk by (dc) (1, cpu)":        "{__name__=\"cpu\", dc=\"eu\", host=\"a\"} 1\n{__name__=\"cpu\", dc=\"us\", host=\"c\"} 5",
		"count_values(\"v\", cpu)":        "{v=\"1\"} 1\n{v=\"3\"} 1\n{v=\"5\"} 2",
		"sum by (__name__) ({dc=\"eu\"})": "{__name__=\"cpu\"} 4\n{__name__=\"mem\"} 100",
	} {
		if got := instant(t, s, q, 0); got != "vector\n"+want {
			t.Errorf("%s:\n got %s\nwant vector\n%s", q, got, want)
		}
	}
	// A k that does not fit in an int64 once converted to
	// math.MinInt64 and panicked; NaN is refused even with no input.
	check(t, s, "topk(+Inf, cpu)", 0, "error: execution error: Scalar value +Inf overflows int64")
	check(t, s, "topk(9.3e18, cpu)", 0, "error: execution error: Scalar value 9.3e+18 overflows int64")
	check(t, s, "bottomk(-Inf, cpu)", 0, "error: execution error: Scalar value -Inf overflows int64")
	check(t, s, "topk(NaN, nope)", 0, "error: execution error: Parameter value is NaN")
	// The largest k that fits, and a negative one: all, and none.
	check(t, s, "count(topk(9.2e18, cpu))", 0, "vector\n{} 4")
	check(t, s, "bottomk(-9.2e18, cpu)", 0, "vector\n")
}

func TestBinaryOperators(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,used,host,a,dev,sda":  {30},
		"__name__,used,host,a,dev,sdb":  {50},
		"__name__,used,host,b,dev,sda":  {10},
		"__name__,size,host,a,dev,sda":  {100},
		"__name__,size,host,a,dev,sdb":  {200},
		"__name__,size,host,b,dev,sda":  {40},
		"__name__,info,host,a,os,linux": {1},
		"__name__,info,host,b,os,bsd":   {1},
	}, 10)
	for q, want := range map[string]string{
		"used / size":    "{dev=\"sda\", host=\"a\"} 0.3\n{dev=\"sda\", host=\"b\"} 0.25\n{dev=\"sdb\", host=\"a\"} 0.25",
		"used * 2":       "{dev=\"sda\", host=\"a\"} 60\n{dev=\"sda\", host=\"b\"} 20\n{dev=\"sdb\", host=\"a\"} 100",
		"100 - used":     "{dev=\"sda\", host=\"a\"} 70\n{dev=\"sda\", host=\"b\"} 90\n{dev=\"sdb\", host=\"a\"} 50",
		"used > 20":      "{__name__=\"used\", dev=\"sda\", host=\"a\"} 30\n{__name__=\"used\", dev=\"sdb\", host=\"a\"} 50",
		"20 < used":      "{__name__=\"used\", dev=\"sda\", host=\"a\"} 30\n{__name__=\"used\", dev=\"sdb\", host=\"a\"} 50",
		"used > bool 20": "{dev=\"sda\", host=\"a\"} 1\n{dev=\"sda\", host=\"b\"} 0\n{dev=\"sdb\", host=\"a\"} 1",
		// One-to-one matching with on() keeps only the on() labels.
		"used > on(host, dev) size / 4":                        "{dev=\"sda\", host=\"a\"} 30",
		"sum by (host) (used) / on(host) sum by (host) (size)": "{host=\"a\"} 0.2667\n{host=\"b\"} 0.25",
		"used * on(host) group_left(os) info":                  "{dev=\"sda\", host=\"a\", os=\"linux\"} 30\n{dev=\"sda\", host=\"b\", os=\"bsd\"} 10\n{dev=\"sdb\", host=\"a\", os=\"linux\"} 50",
		"info * on(host) group_right(os) used":                 "{dev=\"sda\", host=\"a\", os=\"linux\"} 30\n{dev=\"sda\", host=\"b\", os=\"bsd\"} 10\n{dev=\"sdb\", host=\"a\", os=\"linux\"} 50",
		"used and on(host) info{os=\"linux\"}":                 "{__name__=\"used\", dev=\"sda\", host=\"a\"} 30\n{__name__=\"used\", dev=\"sdb\", host=\"a\"} 50",
		"used unless on(host) info{os=\"linux\"}":              "{__name__=\"used\", dev=\"sda\", host=\"b\"} 10",
		"used{host=\"b\"} or size{host=\"b\"}":                 "{__name__=\"used\", dev=\"sda\", host=\"b\"} 10",
		"used{host=\"b\"} or ignoring(dev) size{dev=\"sdb\"}":  "{__name__=\"size\", dev=\"sdb\", host=\"a\"} 200\n{__name__=\"used\", dev=\"sda\", host=\"b\"} 10",
	} {
		if got := instant(t, s, q, 0); got != "vector\n"+want {
			t.Errorf("%s:\n got %s\nwant vector\n%s", q, got, want)
		}
	}
	check(t, s, "used * on(host) info", 0, "error: execution error: multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")
	check(t, s, "info * on(host) used", 0, "error: execution error: found duplicate series for the match group {host=\"a\"} on the right hand-side of the operation: [{__name__=\"used\", dev=\"sda\", host=\"a\"}, {__name__=\"used\", dev=\"sdb\", host=\"a\"}];many-to-many matching not allowed: matching labels must be unique on one side")
	check(t, s, "1 < bool 2", 0, "scalar 1")
	check(t, s, "2 ^ 10 % 7", 0, "scalar 2") // (2^10) % 7 = 1024 % 7 = 2
}

func TestFunctions(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,x,i,1":            {-2.5},
		"__name__,x,i,2":            {4},
		"__name__,h_bucket,le,0.1":  {1},
		"__name__,h_bucket,le,1":    {3},
		"__name__,h_bucket,le,+Inf": {4},
	}, 10)
	for q, want := range map[string]string{
		"abs(x)":               "{i=\"1\"} 2.5\n{i=\"2\"} 4",
		"ceil(x)":              "{i=\"1\"} -2\n{i=\"2\"} 4",
		"floor(x)":             "{i=\"1\"} -3\n{i=\"2\"} 4",
		"round(x)":             "{i=\"1\"} -2\n{i=\"2\"} 4",
		"round(x, 2)":          "{i=\"1\"} -2\n{i=\"2\"} 4",
		"sgn(x)":               "{i=\"1\"} -1\n{i=\"2\"} 1",
		"sqrt(x{i=\"2\"})":     "{i=\"2\"} 2",
		"exp(x{i=\"2\"}) > 54": "{i=\"2\"} 54.6",
		"ln(x{i=\"2\"})":       "{i=\"2\"} 1.386",
		"log2(x{i=\"2\"})":     "{i=\"2\"} 2",
		"log10(x{i=\"2\"})":    "{i=\"2\"} 0.6021",
		"clamp(x, -1, 1)":      "{i=\"1\"} -1\n{i=\"2\"} 1",
		"clamp_min(x, 0)":      "{i=\"1\"} 0\n{i=\"2\"} 4",
		"clamp_max(x, 0)":      "{i=\"1\"} -2.5\n{i=\"2\"} 0",
		"vector(7)":            "{} 7",
		"label_replace(x, \"j\", \"n$1\", \"i\", \"(.*)\")": "{__name__=\"x\", i=\"1\", j=\"n1\"} -2.5\n{__name__=\"x\", i=\"2\", j=\"n2\"} 4",
		"label_join(x, \"k\", \"-\", \"__name__\", \"i\")":  "{__name__=\"x\", i=\"1\", k=\"x-1\"} -2.5\n{__name__=\"x\", i=\"2\", k=\"x-2\"} 4",
		"absent(nope{job=\"a\"})":                           "{job=\"a\"} 1",
		"absent(x)":                                         "",
		"histogram_quantile(0.5, h_bucket)":                 "{} 0.55",
		"histogram_quantile(0.99, h_bucket)":                "{} 1",
		"hour(vector(3600 * 5 + 60))":                       "{} 5",
		"day_of_week(vector(0))":                            "{} 4",
		"days_in_month(vector(86400 * 40))":                 "{} 28",
	} {
		want := "vector\n" + want
		if got := instant(t, s, q, 0); got != want {
			t.Errorf("%s:\n got %s\nwant %s", q, got, want)
		}
	}
	check(t, s, "scalar(x{i=\"2\"})", 0, "scalar 4")
	check(t, s, "scalar(x)", 0, "scalar NaN")
	check(t, s, "time()", 5, "scalar "+fmtF(float64(sec(5))/1000))
	r, _ := eng.Instant(context.Background(), s, "sort_desc(x)", sec(0))
	if len(r.Series) != 2 || r.Series[0].Points[0].V != 4 {
		t.Errorf("sort_desc: %s", render(r))
	}
	check(t, s, "nope_fn(x)", 0, "error: bad query: 1:1: parse error: unknown function with name \"nope_fn\"")
}

func TestRangeQuery(t *testing.T) {
	s := load(t, map[string][]float64{"__name__,g,job,a": {1, 2, 3, 4, 5, 6}}, 30)
	r, err := eng.Range(context.Background(), s, "g * 2", sec(0), sec(150), 60_000)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := render(r), "matrix\n{job=\"a\"} 2@0 6@60 10@120"; got != want {
		t.Errorf("g * 2 range:\n got %s\nwant %s", got, want)
	}
	r, err = eng.Range(context.Background(), s, "time()", sec(0), sec(60), 30_000)
	if err != nil || len(r.Series) != 1 || len(r.Series[0].Points) != 3 {
		t.Errorf("time() range: %v %v", r, err)
	}
	for q, want := range map[string]string{
		"g[1m]": "range vector",
		"g{":    "bad query",
	} {
		if _, err := eng.Range(context.Background(), s, q, sec(0), sec(60), 1000); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", q, err, want)
		}
	}
	if _, err := eng.Range(context.Background(), s, "g", sec(0), sec(0)+11001*1000, 1000); !errors.Is(err, query.ErrBadQuery) || !strings.Contains(err.Error(), "11,000") {
		t.Errorf("too many points: %v", err)
	}
	few := &query.Engine{MaxSeries: 1}
	if _, err := few.Instant(context.Background(), s, "g", sec(150)); err != nil {
		t.Errorf("one series under MaxSeries 1: %v", err)
	}
	if _, err := few.Instant(context.Background(), s, "g + g", sec(150)); !errors.Is(err, query.ErrTooLarge) || !strings.Contains(err.Error(), "more than 1 series") {
		t.Errorf("two selections over MaxSeries 1: %v", err)
	}
	small := &query.Engine{MaxSamples: 3}
	if _, err := small.Instant(context.Background(), s, "g[10m]", sec(150)); !errors.Is(err, query.ErrTooLarge) {
		t.Errorf("over MaxSamples: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := eng.Instant(ctx, s, "g", sec(0)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled query: %v", err)
	}
}

func TestDuplicateLabelSets(t *testing.T) {
	s := load(t, map[string][]float64{"__name__,a,job,x": {1, 2}, "__name__,b,job,x": {3, 4}}, 10)
	check(t, s, `rate({job="x"}[1m])`, 10, "error: execution error: vector cannot contain metrics with the same labelset")
	check(t, s, `last_over_time({job="x"}[1m])`, 10, "vector\n{__name__=\"a\", job=\"x\"} 2\n{__name__=\"b\", job=\"x\"} 4")
	check(t, s, `max_over_time(label_replace({job="x"}, "m", "$1", "__name__", "(.+)")[1m:10s])`, 10, "vector\n{job=\"x\", m=\"a\"} 2\n{job=\"x\", m=\"b\"} 4")
}

// Range functions read a selection in parallel shards: the answer must be
// the one a single goroutine gives.
func TestParallelEqualsSequential(t *testing.T) {
	data := map[string][]float64{}
	for i := 0; i < 37; i++ {
		var vs []float64
		for j := 0; j < 50; j++ {
			vs = append(vs, float64((i*j)%13))
		}
		data[fmt.Sprintf("__name__,c,i,%d", i)] = vs
	}
	s := load(t, data, 15)
	for _, q := range []string{"sum(rate(c[2m]))", "max_over_time(c[1m])", "count_over_time(c[5m])", "c", "max_over_time(c[1m:15s])", "timestamp(c)"} {
		var got [2]string
		for k, par := range []int{1, 4} {
			e := &query.Engine{Parallelism: par}
			r, err := e.Range(context.Background(), s, q, sec(60), sec(700), 30_000)
			if err != nil {
				t.Fatal(err)
			}
			got[k] = render(r)
			if r.Samples == 0 {
				t.Fatalf("%s: no samples counted", q)
			}
		}
		if got[0] != got[1] {
			t.Errorf("%s: parallel answer differs:\n%s\nvs\n%s", q, got[1], got[0])
		}
	}
}

// A range function over a subquery of a relabelled selector takes a
// shortcut (subquery points straight from the samples): its answers must
// be those of the general path, which `* 1` inside the subquery forces,
// on series with gaps longer than the lookback, stale markers and
// irregular times.
func TestSubquerySelectorShortcut(t *testing.T) {
	data := map[string][]float64{}
	for i := 0; i < 9; i++ {
		var vs []float64
		for j := 0; j < 120; j++ {
			switch {
			case (i+j)%17 == 0:
				vs = append(vs, series.StaleNaN)
			case j > 40 && j < 40+i*3: // gaps from none to 48 s x 7 = 5.6 min
				vs = append(vs, gap)
			default:
				vs = append(vs, float64((i*j*7)%23)+float64(j))
			}
		}
		data[fmt.Sprintf("__name__,c,i,%d", i)] = vs
	}
	s := load(t, data, 7)
	eng := &query.Engine{}
	for _, f := range []string{"avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time", "stddev_over_time",
		"rate", "increase", "delta", "irate", "deriv", "changes", "resets", "present_over_time", "quantile_over_time"} {
		for _, sq := range []string{"[1m:10s]", "[3m:7s]", "[2m:1m]", "[5m:13s] offset 1m"} {
			arg := func(inner string) string {
				e := fmt.Sprintf(`%s(label_replace(%s, "m", "m$1", "i", "(.*)")%s)`, f, inner, sq)
				if f == "quantile_over_time" {
					e = fmt.Sprintf(`%s(0.3, label_replace(%s, "m", "m$1", "i", "(.*)")%s)`, f, inner, sq)
				}
				return e
			}
			fast, slow := arg("c"), arg("c * 1")
			rf, err := eng.Range(context.Background(), s, fast, sec(0), sec(900), 20_000)
			if err != nil {
				t.Fatalf("%s: %v", fast, err)
			}
			rs, err := eng.Range(context.Background(), s, slow, sec(0), sec(900), 20_000)
			if err != nil {
				t.Fatalf("%s: %v", slow, err)
			}
			if got, want := render(rf), render(rs); got != want {
				t.Errorf("%s differs from the general path:\n%s\nwant\n%s", fast, got, want)
			}
			if len(rf.Series) == 0 {
				t.Errorf("%s: empty answer", fast)
			}
		}
	}
	// Relabelling that makes two series one falls back to the general
	// path, which refuses it.
	check(t, s, `max_over_time(label_replace(c, "i", "same", "i", ".*")[1m:10s])`, 100, "error: execution error: vector cannot contain metrics with the same labelset")
}

// Sums over time are compensated (Neumaier), and a mean whose sum
// overflows goes on incrementally, as in Prometheus.
func TestCompensatedSums(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,k":   {1e16, 1, -1e16},
		"__name__,big": {1e308, 1e308, 1e308},
		"__name__,hot": {math.Inf(1), 1, 2},
	}, 10)
	check(t, s, "sum_over_time(k[1m])", 20, "vector\n{} 1") // naively 0
	check(t, s, "avg_over_time(k[1m])", 20, "vector\n{} 0.3333")
	check(t, s, "avg_over_time(big[1m])", 20, "vector\n{} 1e+308") // the sum is +Inf
	check(t, s, "avg_over_time(hot[1m])", 20, "vector\n{} +Inf")
}

// avg is Prometheus 3's: a compensated sum divided at the end, and an
// incremental mean for a step whose sum would overflow; the same whether
// the series are folded as they are read (by shards, merged) or
// aggregated whole.
func TestAvgCompensatedAndOverflow(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,big,i,1":   {1e308},
		"__name__,big,i,2":   {1e308},
		"__name__,big,i,3":   {-1e308},
		"__name__,small,i,1": {1},
		"__name__,small,i,2": {1e100},
		"__name__,small,i,3": {1},
		"__name__,small,i,4": {-1e100},
	}, 60)
	for _, par := range []int{1, 3} {
		e := &query.Engine{Parallelism: par}
		for _, c := range []struct{ q, want string }{
			// 2e308 overflows: the mean of the first two, then of all three.
			{"avg(big)", "vector\n{} 3.333e+307"},
			{"avg(last_over_time(big[1m]))", "vector\n{} 3.333e+307"},
			{`avg(last_over_time({__name__=~"big"}[1m]))`, "vector\n{} 3.333e+307"},
			// Kahan: the 1s survive 1e100 and its negation.
			{"avg(small)", "vector\n{} 0.5"},
			{"avg(last_over_time(small[1m]))", "vector\n{} 0.5"},
		} {
			r, err := e.Instant(context.Background(), s, c.q, sec(30))
			if err != nil {
				t.Fatal(err)
			}
			if got := render(r); got != c.want {
				t.Errorf("%s (parallelism %d):\n got %s\nwant %s", c.q, par, got, c.want)
			}
		}
	}
}

// TestLabelBytesBounded: label_replace nested to double a label value
// 22 times once took the query slot and 8 GiB past the client and the
// timeout; the value a query makes is bounded, in the plain and in the
// subquery path, and counts against the query's sample budget.
func TestLabelBytesBounded(t *testing.T) {
	s := load(t, map[string][]float64{"__name__,x,v," + strings.Repeat("a", 1024): {1}}, 10)
	double := "x"
	for i := 0; i < 22; i++ {
		double = fmt.Sprintf(`label_replace(%s, "v", "$1$1", "v", "(.*)")`, double)
	}
	check(t, s, double, 0, "error: query too large: label_replace(): the new value of label \"v\" could be 1048580 bytes; the limit is 1048576")
	check(t, s, "max_over_time("+double+"[1m:10s])", 10, "error: query too large: label_replace(): the new value of label \"v\" could be 1048580 bytes; the limit is 1048576")
	join := `label_join(x, "w", ",", "v", "v", "v")`
	if got := instant(t, s, "count("+join+")", 0); got != "vector\n{} 1" {
		t.Errorf("a label_join within bounds: %s", got)
	}
	// 3 KiB of new labels is 48 samples: a budget of 40 refuses it.
	eng := &query.Engine{LookbackDelta: 5 * time.Minute, MaxSamples: 40}
	if _, err := eng.Instant(context.Background(), s, join, sec(0)); !errors.Is(err, query.ErrTooLarge) || !strings.Contains(err.Error(), "label_join() makes") {
		t.Errorf("label bytes over the sample budget: %v", err)
	}
}

// TestIncreaseExtrapolation: Prometheus 3 caps the extrapolation at half a
// sample interval, then at the counter's zero point (functions.test:135;
// the other order gave 110 for dings).
func TestIncreaseExtrapolation(t *testing.T) {
	ramp := func(start float64) []float64 {
		var v []float64
		for i := 0; i <= 10; i++ {
			v = append(v, start+10*float64(i))
		}
		return v
	}
	s := load(t, map[string][]float64{
		"__name__,http_requests_total,path,/foo":   ramp(0),
		"__name__,http_requests_total,path,/dings": ramp(10),
		"__name__,http_requests_total,path,/bumms": ramp(1),
	}, 300)
	check(t, s, "increase(http_requests_total[100m])", 3000, "vector\n{path=\"/bumms\"} 101\n{path=\"/dings\"} 105\n{path=\"/foo\"} 100")
	check(t, s, "increase(http_requests_total[50m])", 3000, "vector\n{path=\"/bumms\"} 100\n{path=\"/dings\"} 100\n{path=\"/foo\"} 100")
}

// TestSumAvgPrometheus3: sum is compensated (aggregators.test:687) and an
// infinite mean is kept by later values (aggregators.test:630).
func TestSumAvgPrometheus3(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,x,i,a": {2}, "__name__,x,i,b": {8}, "__name__,x,i,c": {1e100}, "__name__,x,i,d": {-1e100},
		"__name__,y,i,a": {0}, "__name__,y,i,b": {math.Inf(1)}, "__name__,y,i,c": {math.Inf(1)}, "__name__,y,i,d": {0},
	}, 10)
	check(t, s, "sum(x)", 0, "vector\n{} 10")
	check(t, s, "sum(sum_over_time(x[1m]))", 0, "vector\n{} 10") // the folded path
	check(t, s, "avg(y)", 0, "vector\n{} +Inf")
	check(t, s, "avg(last_over_time(y[1m]))", 0, "vector\n{} +Inf")
}

// TestTopkOrder: an instant topk or bottomk answers each group's series by
// value, as Prometheus does, not by labels (aggregators.test:287).
func TestTopkOrder(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,x,i,a,g,1": {1}, "__name__,x,i,b,g,1": {3}, "__name__,x,i,c,g,1": {2},
		"__name__,x,i,d,g,2": {9}, "__name__,x,i,e,g,2": {7},
	}, 10)
	order := func(q string) string {
		r, err := eng.Instant(context.Background(), s, q, sec(0))
		if err != nil {
			return err.Error()
		}
		var out []string
		for _, x := range r.Series {
			out = append(out, x.Labels.Get("i"))
		}
		return strings.Join(out, " ")
	}
	for q, want := range map[string]string{
		"topk(3, x)":            "d e b",
		"bottomk by (g) (2, x)": "a c e d",
		"topk by (g) (1, x)":    "b d",
		// Anything around it orders by labels again.
		"topk(3, x) * 1": "b d e",
	} {
		if got := order(q); got != want {
			t.Errorf("%s: %s, want %s", q, got, want)
		}
	}
}

// TestHistogramQuantileSameBound: le="0.2", "2e-1" and "2.0e-1" are one
// bucket (histograms.test:1044).
func TestHistogramQuantileSameBound(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,m_bucket,le,0.1": {1}, "__name__,m_bucket,le,0.2": {1}, "__name__,m_bucket,le,2e-1": {1},
		"__name__,m_bucket,le,2.0e-1": {1}, "__name__,m_bucket,le,+Inf": {4},
	}, 10)
	check(t, s, "histogram_quantile(0.5, m_bucket)", 0, "vector\n{} 0.15")
}

// TestManyToOneFilteredAway: one-to-one matching refuses two left series
// of one match group even when a comparison would filter them away
// (operators.test:329, :333).
func TestManyToOneFilteredAway(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,many_side,label,foo,job,test": {0}, "__name__,many_side,label,bar,job,test": {1},
		"__name__,one_side,job,test": {1},
	}, 10)
	const want = "error: execution error: multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
	for _, q := range []string{"many_side > on(job) one_side", "many_side >= on(job) one_side", "many_side <= on(job) one_side"} {
		check(t, s, q, 0, want)
	}
	check(t, s, "many_side > on(job) group_left one_side", 0, "vector\n")
}

// TestPredictLinearAt: predict_linear predicts from the evaluation time,
// whatever @ chose the window (functions.test:435, :440).
func TestPredictLinearAt(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,c_total": {0, 10, 20, 30, 40, 0, 10, 20, 30, 40, 50},
	}, 300)
	q := fmt.Sprintf("predict_linear(c_total[55m] @ %d, 3600)", sec(3000)/1000)
	check(t, s, q, 3000, "vector\n{} 76.82")
	check(t, s, q, 600, "vector\n{} 51.36")
	check(t, s, q, 4200, "vector\n{} 89.55")
}

// TestAbsentLabels: a label with more than one matcher is left out of
// absent's answer, a regexp too (functions.test:1736).
func TestAbsentLabels(t *testing.T) {
	s := load(t, map[string][]float64{"__name__,present": {1}}, 10)
	for q, want := range map[string]string{
		`absent(nonexistent{job="testjob", instance="testinstance", method=~".x"})`: `{instance="testinstance", job="testjob"} 1`,
		`absent(nonexistent{job="testjob",job="testjob2",foo="bar"})`:               `{foo="bar"} 1`,
		`absent(nonexistent{job="testjob",job=~"testjob2",foo="bar"})`:              `{foo="bar"} 1`,
		`absent(nonexistent{job="testjob",job="testjob2",job="three",foo="bar"})`:   `{foo="bar"} 1`,
	} {
		check(t, s, q, 0, "vector\n"+want)
	}
}

// TestSameLabelsAfterNameDropped: series that dropping __name__ makes
// one label set are one series when they never share a step, and an
// error when they do (operators.test:997, :1006, :1016).
func TestSameLabelsAfterNameDropped(t *testing.T) {
	rng := func(s query.Source, q string, end, step int) string {
		r, err := eng.Range(context.Background(), s, q, sec(0), sec(end), int64(step)*1000)
		if err != nil {
			return "error: " + err.Error()
		}
		return render(r)
	}
	s := load(t, map[string][]float64{
		"__name__,http_requests,job,api": {2, gap}, "__name__,http_errors,job,api": {gap, 4},
	}, 1200)
	if got, want := rng(s, `-{job="api"}`, 1200, 1200), "matrix\n{job=\"api\"} -2@0 -4@1200"; got != want {
		t.Errorf("-{job=\"api\"}: %s, want %s", got, want)
	}
	check(t, s, `-{job="api"}`, 1200, "vector\n{job=\"api\"} -4")
	both := load(t, map[string][]float64{"__name__,http_requests,job,api": {1}, "__name__,http_errors,job,api": {2}}, 60)
	check(t, both, `-{job="api"}`, 0, "error: execution error: vector cannot contain metrics with the same labelset")
	or := load(t, map[string][]float64{"__name__,metric_a": {1, gap}, "__name__,metric_b": {3, 4}}, 600)
	if got, want := rng(or, "-metric_a or -metric_b", 1200, 600), "matrix\n{} -1@0 -4@600"; got != want {
		t.Errorf("-metric_a or -metric_b: %s, want %s", got, want)
	}
}

// TestHistogramFraction: histogram_fraction over classic buckets, as
// Prometheus 3 (histograms.test:115-150): the values at 50m of 0+Nx10.
func TestHistogramFraction(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,h2_bucket,le,0": {0}, "__name__,h2_bucket,le,2": {10}, "__name__,h2_bucket,le,4": {20},
		"__name__,h2_bucket,le,6": {30}, "__name__,h2_bucket,le,+Inf": {30},
		"__name__,h3_bucket,le,0,start,positive": {0}, "__name__,h3_bucket,le,0.1,start,positive": {50},
		"__name__,h3_bucket,le,.2,start,positive": {70}, "__name__,h3_bucket,le,1e0,start,positive": {110},
		"__name__,h3_bucket,le,+Inf,start,positive": {110},
	}, 10)
	for q, want := range map[string]string{
		"histogram_fraction(0, 4, h2_bucket)":       "{} 0.6667",
		"histogram_fraction(0, 6, h2_bucket)":       "{} 1",
		"histogram_fraction(0, 3.5, h2_bucket)":     "{} 0.5833",
		"histogram_fraction(0, 0.2, h3_bucket)":     "{start=\"positive\"} 0.6364",
		"histogram_fraction(-Inf, +Inf, h2_bucket)": "{} 1",
		"histogram_fraction(5, 1, h2_bucket)":       "{} 0",
	} {
		check(t, s, q, 0, "vector\n"+want)
	}
}

// TestFirstAndMadOverTime: first_over_time (keeps the name, as
// last_over_time) and mad_over_time (functions.test:1276).
func TestFirstAndMadOverTime(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,metric":     {4, 6, 2, 1, 999, 1, 2},
		"__name__,metric_nan": {1, 2, math.NaN(), 4},
		"__name__,metric_odd": {1, 2, 3, 4, 5},
	}, 10)
	check(t, s, "mad_over_time(metric[70s])", 70, "vector\n{} 1")
	check(t, s, "mad_over_time(metric_odd[50s])", 40, "vector\n{} 1")
	check(t, s, "mad_over_time(metric_nan[40s])", 30, "vector\n{} NaN")
	check(t, s, "first_over_time(metric[30s])", 60, "vector\n{__name__=\"metric\"} 999") // (30s, 60s]: 999 1 2
}

// TestSubqueryWithoutStep: [5m:] steps at 1m, Prometheus's default
// evaluation interval.
func TestSubqueryWithoutStep(t *testing.T) {
	s := load(t, map[string][]float64{"__name__,m": {1, 5, 2, 8, 3, 4, 9, 0}}, 30)
	for _, at := range []int{120, 210} {
		want := instant(t, s, "count_over_time(m[3m:1m])", at)
		if !strings.Contains(want, "} 3") {
			t.Fatalf("count_over_time(m[3m:1m]) @%d: %s, want 3 steps", at, want)
		}
		check(t, s, "count_over_time(m[3m:])", at, want)
	}
}

// TestTrigFunctions: trig_functions.test, values computed by Go's math.
func TestTrigFunctions(t *testing.T) {
	s := load(t, map[string][]float64{"__name__,trig,l,x": {10}, "__name__,trig,l,y": {20}}, 10)
	check(t, s, "sin(trig)", 0, "vector\n{l=\"x\"} -0.544\n{l=\"y\"} 0.9129")
	check(t, s, "atanh(trig / 100)", 0, "vector\n{l=\"x\"} 0.1003\n{l=\"y\"} 0.2027")
	check(t, s, "deg(trig)", 0, "vector\n{l=\"x\"} 573\n{l=\"y\"} 1146")
	check(t, s, "rad(trig)", 0, "vector\n{l=\"x\"} 0.1745\n{l=\"y\"} 0.3491")
	check(t, s, "pi()", 0, "scalar 3.142")
}

// TestSortByLabel: natural order of the labels' values, then the label
// set (functions.test:727).
func TestSortByLabel(t *testing.T) {
	data := map[string][]float64{}
	for _, c := range []string{"0", "1", "2", "3", "10", "11", "12", "20", "21", "100"} {
		data["__name__,cpu_time_total,cpu,"+c] = []float64{1}
	}
	for _, r := range [][2]string{{"4m600", "1.2.3"}, {"4m5", "1.11.3"}, {"4m1000", "1.111.3"}} {
		data["__name__,node_uname_info,instance,"+r[0]+",release,"+r[1]] = []float64{1}
	}
	s := load(t, data, 10)
	order := func(q, label string) string {
		r, err := eng.Instant(context.Background(), s, q, sec(0))
		if err != nil {
			return err.Error()
		}
		var out []string
		for _, x := range r.Series {
			out = append(out, x.Labels.Get(label))
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct{ q, label, want string }{
		{`sort_by_label(cpu_time_total, "cpu")`, "cpu", "0 1 2 3 10 11 12 20 21 100"},
		{`sort_by_label_desc(cpu_time_total, "cpu")`, "cpu", "100 21 20 12 11 10 3 2 1 0"},
		{`sort_by_label(node_uname_info, "instance")`, "instance", "4m5 4m600 4m1000"},
		{`sort_by_label(node_uname_info, "release")`, "release", "1.2.3 1.11.3 1.111.3"},
		{`sort_by_label_desc(node_uname_info)`, "instance", "4m600 4m5 4m1000"}, // by the label set
	} {
		if got := order(c.q, c.label); got != c.want {
			t.Errorf("%s: %s, want %s", c.q, got, c.want)
		}
	}
}

// TestLookbackDeltaPerQuery: the API's lookback_delta reaches the engine
// through the context.
func TestLookbackDeltaPerQuery(t *testing.T) {
	s := load(t, map[string][]float64{"__name__,g": {7}}, 10)
	check(t, s, "g", 120, "vector\n{__name__=\"g\"} 7")
	r, err := eng.Instant(query.WithLookbackDelta(context.Background(), time.Minute), s, "g", sec(120))
	if err != nil || len(r.Series) != 0 {
		t.Errorf("a sample 2m old with a lookback of 1m: %v %v", r, err)
	}
}

// TestQueryTimeFunctions: step(), start() and end(), and a
// duration where a number is expected (functions.test:2078 on).
func TestQueryTimeFunctions(t *testing.T) {
	s := load(t, map[string][]float64{"__name__,metric_for_at": {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}, 1)
	rng := func(q string, from, to, step int) string {
		r, err := eng.Range(context.Background(), s, q, sec(from), sec(to), int64(step)*1000)
		if err != nil {
			return "error: " + err.Error()
		}
		var vs []string
		for _, x := range r.Series {
			for _, p := range x.Points {
				vs = append(vs, fmtF(p.V))
			}
		}
		return strings.Join(vs, " ")
	}
	for _, c := range []struct {
		q              string
		from, to, step int
		want           string
	}{
		{"vector(step())", 0, 10, 5, "5 5 5"},
		{"vector(end() - start())", 10, 20, 5, "10 10 10"},
		{"metric_for_at @ start()", 0, 9, 3, "1 1 1 1"},
		{"metric_for_at @ end()", 1, 9, 2, "10 10 10 10 10"},
	} {
		if got := rng(c.q, c.from, c.to, c.step); got != c.want {
			t.Errorf("%s from %d to %d step %d: %s, want %s", c.q, c.from, c.to, c.step, got, c.want)
		}
	}
	check(t, s, "step()", 0, "scalar 0")
	check(t, s, "vector(1h)", 0, "vector\n{} 3600")
}

// TestTypeAndUnitLabels: Prometheus 3's __type__ and __unit__ go with the
// metric name, and are not matched on (type_and_unit.test).
func TestTypeAndUnitLabels(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,req_total,__type__,counter,__unit__,request,group,canary":     {300},
		"__name__,req_total,__type__,counter,__unit__,request,group,production": {100},
		"__name__,req_total,__type__,gauge,__unit__,other,group,test":           {50},
	}, 10)
	check(t, s, `-req_total{group="production"}`, 0, "vector\n{group=\"production\"} -100")
	check(t, s, `req_total{group="canary"} / ignoring(group) req_total{group="production"}`, 0, "vector\n{} 3")
	check(t, s, `req_total{group="canary"} / ignoring(group) req_total{group="test"}`, 0, "vector\n{} 6")
	check(t, s, `sum without (group) (req_total{group!="test"})`, 0, "vector\n{} 400")
}

// TestHistogramQuantiles: one answer per quantile, told apart by a label
// written as OpenMetrics writes floats (histograms.test:614), and an error
// when that label makes two answers one (the group has it already).
func TestHistogramQuantiles(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,h_bucket,le,0,start,positive": {0}, "__name__,h_bucket,le,0.1,start,positive": {50},
		"__name__,h_bucket,le,.2,start,positive": {70}, "__name__,h_bucket,le,1e0,start,positive": {110},
		"__name__,h_bucket,le,+Inf,start,positive": {110},
	}, 10)
	check(t, s, `histogram_quantiles(h_bucket, "q", 0, 0.25, 1)`, 0,
		"vector\n{q=\"0.0\", start=\"positive\"} 0\n{q=\"0.25\", start=\"positive\"} 0.055\n{q=\"1.0\", start=\"positive\"} 1")
	two := load(t, map[string][]float64{
		"__name__,h_bucket,le,1,start,positive": {1}, "__name__,h_bucket,le,+Inf,start,positive": {2},
		"__name__,h_bucket,le,1,start,negative": {1}, "__name__,h_bucket,le,+Inf,start,negative": {2},
	}, 10)
	check(t, two, `histogram_quantiles(h_bucket, "start", 0, 1)`, 0, "error: execution error: vector cannot contain metrics with the same labelset")
}

// TestHistogramQuantileTwoNames: buckets of two histograms whose labels
// are the same but for the name are not one histogram.
func TestHistogramQuantileTwoNames(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,a_bucket,le,1": {1}, "__name__,a_bucket,le,+Inf": {2},
		"__name__,b_bucket,le,1": {1}, "__name__,b_bucket,le,+Inf": {2},
	}, 10)
	check(t, s, `histogram_quantile(0.5, {__name__=~"[ab]_bucket"})`, 0, "error: execution error: vector cannot contain metrics with the same labelset")
	check(t, s, `histogram_quantile(0.5, a_bucket)`, 0, "vector\n{} 1")
}

// TestQuantileWarnings: a quantile outside [0, 1], or NaN, answers with
// Prometheus's warning, once (histograms.test:652 and the like).
func TestQuantileWarnings(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,m": {1, 2, 3}, "__name__,h_bucket,le,1": {1}, "__name__,h_bucket,le,+Inf": {2},
	}, 10)
	for q, want := range map[string]string{
		"quantile_over_time(1.5, m[1m])":             "got 1.5",
		"quantile(-0.1, m)":                          "got -0.1",
		"histogram_quantile(NaN, h_bucket)":          "got NaN",
		`histogram_quantiles(h_bucket, "q", 0.5, 2)`: "got 2",
	} {
		r, err := eng.Instant(context.Background(), s, q, sec(20))
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "PromQL warning: quantile value should be between 0 and 1, "+want) {
			t.Errorf("%s: warnings %q", q, r.Warnings)
		}
	}
	if r, err := eng.Instant(context.Background(), s, "quantile(0.5, m)", sec(20)); err != nil || len(r.Warnings) != 0 {
		t.Errorf("a valid quantile: %v %v", r.Warnings, err)
	}
}

// TestPrometheus3Features covers what Prometheus 3 keeps behind its
// feature flags, each against a value worked out by hand.
func TestPrometheus3Features(t *testing.T) {
	s := load(t, map[string][]float64{
		"__name__,cpu_user,host,a":                         {1, 2, 3, 4, 5, 6, 7},
		"__name__,cpu_system,host,a":                       {10, 20, 30, 40, 50, 60, 70},
		"__name__,c,job,j":                                 {0, 10, 20, 5, 15, 25, 35},
		"__name__,left,k,x":                                {1, 1, 1, 1, 1, 1, 1},
		"__name__,left,k,y":                                {2, 2, 2, 2, 2, 2, 2},
		"__name__,right,k,x":                               {10, 10, 10, 10, 10, 10, 10},
		"__name__,right,k,z":                               {30, 30, 30, 30, 30, 30, 30},
		"__name__,up,instance,i,job,j":                     {1, 1, 1, 1, 1, 1, 1},
		"__name__,target_info,instance,i,job,j,version,v2": {1, 1, 1, 1, 1, 1, 1},
	}, 60)
	// Delayed name removal: the name survives the function until the end
	// of the evaluation, so label_replace can keep it and a dashboard
	// can group by it. Without label_replace the name still goes at the
	// end, and the two series are one label set: Prometheus's engine
	// (promqltest, delayed removal on) fails the same way.
	check(t, s, `max by (__name__) (label_replace(max_over_time({__name__=~"cpu_.*", host="a"}[5m]), "__name__", "$1", "__name__", "(.+)"))`, 360,
		"vector\n{__name__=\"cpu_system\"} 70\n{__name__=\"cpu_user\"} 7")
	check(t, s, `max by (__name__) (max_over_time({__name__=~"cpu_.*", host="a"}[5m]))`, 360,
		"error: execution error: vector cannot contain metrics with the same labelset")
	check(t, s, `sum by (__name__) (rate(cpu_user[5m]))`, 360, "vector\n{} 0.01667")
	check(t, s, `label_replace(rate({__name__=~"cpu_.*"}[5m]), "__name__", "rate_$1", "__name__", "(.+)")`, 360,
		"vector\n{__name__=\"rate_cpu_system\", host=\"a\"} 0.1667\n{__name__=\"rate_cpu_user\", host=\"a\"} 0.01667")
	immediate := &query.Engine{Features: []string{query.FeatureExperimentalFunctions, query.FeatureFillModifiers}}
	if _, err := immediate.Instant(context.Background(), s, `label_replace(max_over_time({__name__=~"cpu_.*", host="a"}[5m]), "__name__", "$1", "__name__", "(.+)")`, sec(360)); err == nil || !strings.Contains(err.Error(), "same labelset") {
		t.Errorf("without delayed name removal: %v, want the same-labelset error (the name is gone before label_replace)", err)
	}
	if _, err := (&query.Engine{Features: []string{"bogus"}}).Instant(context.Background(), s, "1", sec(0)); err == nil || !strings.Contains(err.Error(), `unknown PromQL feature "bogus"`) {
		t.Errorf("an unknown feature: %v", err)
	}
	if _, err := (&query.Engine{Features: []string{}}).Instant(context.Background(), s, "left + fill(0) right", sec(0)); err == nil || !strings.Contains(err.Error(), "fill") {
		t.Errorf("fill with the feature off: %v, want a parse error", err)
	}
	// fill: the side without a match counts as the fill value.
	check(t, s, `left + fill(0) right`, 60, "vector\n{k=\"x\"} 11\n{k=\"y\"} 2\n{k=\"z\"} 30")
	check(t, s, `left + fill_right(100) right`, 60, "vector\n{k=\"x\"} 11\n{k=\"y\"} 102")
	// Anchored: from the last sample at or before the window's start (20
	// at 120 s) to its end (15 at 240 s), plus the 20 lost at the reset
	// at 180 s: 15 - 20 + 20.
	check(t, s, `increase(c[2m] anchored)`, 240, "vector\n{job=\"j\"} 15")
	// Smoothed: the edges interpolated (at 90 s: 15; at 210 s: 10).
	check(t, s, `increase(c[2m] smoothed)`, 210, "vector\n{job=\"j\"} 15")
	check(t, s, `c smoothed`, 90, "vector\n{__name__=\"c\", job=\"j\"} 15")
	if got := instant(t, s, `max_over_time(c[2m] anchored)`, 240); !strings.Contains(got, "anchored modifier can only be used with") {
		t.Errorf("max_over_time anchored: %s", got)
	}
	// info: the target's info labels join on instance and job.
	check(t, s, `info(up)`, 60, "vector\n{__name__=\"up\", instance=\"i\", job=\"j\", version=\"v2\"} 1")
	check(t, s, `info(up, {version=~"v1"})`, 60, "vector\n")
	// Query-context functions and scalar helpers.
	check(t, s, `min_of(3, 5) + max_of(3, 5) + range()`, 60, "scalar 8")
	check(t, s, `ts_of_max_over_time(c[5m])`, 360, "vector\n{job=\"j\"} "+fmtF(float64(sec(360))/1000))
}

// TestLimitAggregations: limitk keeps the first k series of each group
// in label order, limit_ratio a share of them by label hash (a ratio and
// its negative complement split them), the same series at every step.
func TestLimitAggregations(t *testing.T) {
	data := map[string][]float64{}
	for i := 0; i < 20; i++ {
		data[fmt.Sprintf("__name__,m,g,%d,i,%02d", i%2, i)] = []float64{float64(i), float64(i)}
	}
	s := load(t, data, 60)
	check(t, s, `limitk(2, m)`, 60, "vector\n{__name__=\"m\", g=\"0\", i=\"00\"} 0\n{__name__=\"m\", g=\"0\", i=\"02\"} 2")
	check(t, s, `limitk by (g) (1, m)`, 60, "vector\n{__name__=\"m\", g=\"0\", i=\"00\"} 0\n{__name__=\"m\", g=\"1\", i=\"01\"} 1")
	check(t, s, `count(limit_ratio(0.5, m)) + count(limit_ratio(-0.5, m))`, 60, "vector\n{} 20")
	check(t, s, `count(limit_ratio(0.5, m) and limit_ratio(-0.5, m)) or vector(0)`, 60, "vector\n{} 0")
	check(t, s, `count(limit_ratio(1, m))`, 60, "vector\n{} 20")
	check(t, s, `limitk(NaN, m)`, 60, "error: execution error: Parameter value is NaN")
	check(t, s, `limit_ratio(NaN, m)`, 60, "error: execution error: Ratio value is NaN")
	r, err := eng.Instant(context.Background(), s, `count(limit_ratio(1.5, m))`, sec(60))
	if err != nil || len(r.Warnings) != 1 || r.Warnings[0] != "PromQL warning: ratio value should be between -1 and 1, got 1.5, capping to 1 (1:19)" {
		t.Errorf("limit_ratio(1.5): %v %q", err, r.Warnings)
	}
}

// TestIntegral: the area under the samples, by trapezoids unless told
// otherwise; a strategy outside 0..2 warns and uses trapezoids.
func TestIntegral(t *testing.T) {
	s := load(t, map[string][]float64{"__name__,g": {0, 10, 20, gap, 20}}, 60)
	// Window (0, 240]: samples at 60, 120 and 240 s.
	check(t, s, `integral(g[4m])`, 240, "vector\n{} 3300")    // (10+20)/2*60 + (20+20)/2*120
	check(t, s, `integral(g[4m], 0)`, 240, "vector\n{} 3000") // 10*60 + 20*120
	check(t, s, `integral(g[4m], 1)`, 240, "vector\n{} 3600") // 20*60 + 20*120
	r, err := eng.Instant(context.Background(), s, `integral(g[4m], 7)`, sec(240))
	if err != nil || render(r) != "vector\n{} 3300" || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "got 7 (1:17)") {
		t.Errorf("integral strategy 7: %v %s %q", err, render(r), r.Warnings)
	}
}
