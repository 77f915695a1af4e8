package api_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/convertnhcb"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/query/api"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

// The floors are how many of the runnable evals of Prometheus's own PromQL
// test scripts must pass: by their results, and also by their annotations
// and error texts (strict). They only go up: raise them when a change
// passes more.
const (
	promqlSuiteFloor       = 2394
	promqlSuiteStrictFloor = 2385
)

// TestPrometheusSuite plays Prometheus's PromQL test scripts (the
// promql/promqltest/testdata of the Prometheus module in go.mod, read from
// the module cache) through the HTTP API over a real storage: each
// script's loads go into a fresh data directory, whose clock is pinned
// past the scripts' times (they start at 1970), and every eval is a
// request to /api/v1/query or /api/v1/query_range compared as promqltest
// compares (label sets exactly, values within 1e-6, order only where the
// script asks; native histograms by count, sum and every bucket, as the
// API shows them). Native histograms are loaded as float histograms, as
// promqltest loads them, and load_with_nhcb's custom-bucket histograms
// are made by Prometheus's converter (util/convertnhcb). Evals that need
// start timestamps, which the storage does not keep, are skipped and
// counted.
//
// HEADROOM_PROMQLTEST_FAILURES=1 lists every failure (strict).
func TestPrometheusSuite(t *testing.T) {
	dir := suiteDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.test"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test scripts in %s: %v", dir, err)
	}
	var total suiteStats
	var failures []string
	for _, f := range files {
		st, fails := runScript(t, f)
		t.Logf("%-24s run %4d passed %4d strict %4d skipped %4d", filepath.Base(f), st.run, st.passed, st.strict, st.skipped)
		total.run += st.run
		total.passed += st.passed
		total.strict += st.strict
		total.skipped += st.skipped
		failures = append(failures, fails...)
	}
	pct := func(n int) float64 { return 100 * float64(n) / float64(max(total.run, 1)) }
	t.Logf("TOTAL run %d passed %d (%.1f%%) strict %d (%.1f%%) skipped %d", total.run, total.passed, pct(total.passed), total.strict, pct(total.strict), total.skipped)
	if os.Getenv("HEADROOM_PROMQLTEST_FAILURES") != "" {
		for _, f := range failures {
			t.Log(f)
		}
	}
	if total.passed < promqlSuiteFloor {
		t.Errorf("%d evals passed, fewer than the floor of %d (HEADROOM_PROMQLTEST_FAILURES=1 lists the failures)", total.passed, promqlSuiteFloor)
	}
	if total.strict < promqlSuiteStrictFloor {
		t.Errorf("%d evals passed with their annotations and error texts, fewer than the floor of %d (HEADROOM_PROMQLTEST_FAILURES=1 lists the failures)", total.strict, promqlSuiteStrictFloor)
	}
}

// suiteDir finds the scripts in the module cache, where the build of
// this package put the Prometheus module.
func suiteDir(t *testing.T) string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/prometheus/prometheus").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/prometheus/prometheus: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "promql", "promqltest", "testdata")
}

type suiteStats struct{ run, passed, strict, skipped int }

var (
	patLoad    = regexp.MustCompile(`^load(?:_(with_nhcb))?\s+(.+?)$`)
	patInstant = regexp.MustCompile(`^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$`)
	patRange   = regexp.MustCompile(`^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$`)
	patExpect  = regexp.MustCompile(`^expect\s+(ordered|fail|warn|no_warn|info|no_info)(?:\s+(regex|msg):(.+))?$`)
	patRangeV  = regexp.MustCompile(`^expect range vector\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+)$`)
)

// suiteEval is one eval command.
type suiteEval struct {
	line             int
	expr             string
	isRange          bool
	start, end, step int64 // ms
	rangeVector      bool  // an instant query expected to give these points
	ordered, fail    bool
	expects          map[string][]expectLine
	scalar           *float64
	str              *string
	expected         map[string]expectedSeries
	histogram        bool
}

type expectLine struct{ kind, text string }

type expectedSeries struct {
	labels labels.Labels
	vals   []parser.SequenceValue
	pos    int
}

// suiteServer is one data directory and the API over it.
type suiteServer struct {
	db  *storage.DB
	srv *httptest.Server
	// series the storage cannot hold (native histograms, start
	// timestamps): evals that select them are skipped.
	unloadable []labels.Labels
	loadErr    error
}

func newSuiteServer(t *testing.T) *suiteServer {
	// The scripts' samples are from 1970: a clock a century on and a
	// longer retention keep them all.
	now := time.Unix(0, 0).Add(100 * 365 * 24 * time.Hour)
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true, Retention: 200 * 365 * 24 * time.Hour,
		Tiers: []storage.Tier{}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.New(source{db}, "test", nil).Register(mux, func(_ string, h http.Handler) http.Handler { return h })
	return &suiteServer{db: db, srv: httptest.NewServer(mux)}
}

func (s *suiteServer) close() {
	s.srv.Close()
	s.db.Close()
}

func runScript(t *testing.T, path string) (st suiteStats, fails []string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(path)
	lines := strings.Split(string(raw), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
		if strings.HasPrefix(lines[i], "#") {
			lines[i] = ""
		}
	}
	var srv *suiteServer
	defer func() {
		if srv != nil {
			srv.close()
		}
	}()
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if l == "" {
			continue
		}
		cmd := strings.ToLower(strings.Fields(l)[0])
		switch {
		case cmd == "clear":
			if srv != nil {
				srv.close()
				srv = nil
			}
		case strings.HasPrefix(cmd, "load"):
			if srv == nil {
				srv = newSuiteServer(t)
			}
			var err error
			if i, err = srv.load(lines, i); err != nil {
				// The evals over this data then fail with it.
				srv.loadErr = fmt.Errorf("%s:%d: load: %v", name, i+1, err)
				for i+1 < len(lines) && lines[i+1] != "" {
					i++
				}
			}
		case strings.HasPrefix(cmd, "eval"):
			var ev *suiteEval
			var err error
			if i, ev, err = parseEval(lines, i); err != nil {
				t.Fatalf("%s:%d: %v", name, i+1, err)
			}
			if srv == nil {
				srv = newSuiteServer(t)
			}
			if reason := srv.skip(ev); reason != "" {
				st.skipped++
				continue
			}
			st.run++
			plain, strict := "", ""
			if srv.loadErr != nil {
				plain, strict = srv.loadErr.Error(), srv.loadErr.Error()
			} else {
				plain, strict = srv.eval(ev)
			}
			if plain == "" {
				st.passed++
			}
			if strict == "" {
				st.strict++
			} else {
				fails = append(fails, fmt.Sprintf("%s:%d %s\n\t%s", name, ev.line, ev.expr, strict))
			}
		default:
			t.Fatalf("%s:%d: unknown command %q", name, i+1, l)
		}
	}
	return st, fails
}

func parseDuration(s string) (int64, error) {
	s = strings.TrimSpace(s)
	neg := strings.HasPrefix(s, "-")
	if d, err := model.ParseDuration(strings.TrimPrefix(s, "-")); err == nil {
		ms := time.Duration(d).Milliseconds()
		if neg {
			ms = -ms
		}
		return ms, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return int64(math.Round(f * 1000)), nil
}

// load adds a load block's series; it returns the block's last line.
func (s *suiteServer) load(lines []string, i int) (int, error) {
	m := patLoad.FindStringSubmatch(lines[i])
	if m == nil {
		return i, fmt.Errorf("invalid load command")
	}
	step, err := parseDuration(m[2])
	if err != nil {
		return i, err
	}
	app := s.db.Appender()
	nhcb := nhcbSeries{}
	for i+1 < len(lines) && lines[i+1] != "" {
		i++
		d := lines[i]
		if f := strings.Fields(d); len(f) > 0 && strings.HasSuffix(f[0], "@st") {
			ls, err := descParser.ParseMetric(strings.TrimSuffix(f[0], "@st"))
			if err == nil {
				s.unloadable = append(s.unloadable, ls)
			}
			continue
		}
		ls, vals, err := descParser.ParseSeriesDesc(d)
		if err != nil {
			app.Rollback()
			return i, err
		}
		if m[1] == "with_nhcb" {
			// Its classic buckets are loaded, and the native histograms
			// with custom buckets made of them (the name without _bucket),
			// as promqltest makes them.
			nhcb.add(ls, vals, step)
		}
		sl := toSeries(ls)
		for k, v := range vals {
			if v.Omitted {
				continue
			}
			if v.Histogram != nil {
				if err := app.AppendHistogram(sl, int64(k)*step, query.SeriesHistogram(v.Histogram)); err != nil {
					app.Rollback()
					return i, err
				}
				continue
			}
			if err := app.Append(sl, int64(k)*step, v.Value); err != nil {
				app.Rollback()
				return i, err
			}
		}
	}
	if err := nhcb.append(app); err != nil {
		app.Rollback()
		return i, err
	}
	return i, app.Commit()
}

// nhcbSeries collects a load_with_nhcb block's classic histograms, by
// their base series and time, with Prometheus's converter.
type nhcbSeries map[string]*nhcbOne

type nhcbOne struct {
	labels labels.Labels
	byTime map[int64]*convertnhcb.TempHistogram
}

func (n nhcbSeries) add(ls labels.Labels, vals []parser.SequenceValue, step int64) {
	suffix, name := convertnhcb.GetHistogramMetricBaseName(ls.Get("__name__"))
	var set func(h *convertnhcb.TempHistogram, f float64)
	switch suffix {
	case convertnhcb.SuffixBucket:
		le, err := strconv.ParseFloat(ls.Get("le"), 64)
		if err != nil || math.IsNaN(le) {
			return
		}
		set = func(h *convertnhcb.TempHistogram, f float64) { _ = h.SetBucketCount(le, f) }
	case convertnhcb.SuffixCount:
		set = func(h *convertnhcb.TempHistogram, f float64) { _ = h.SetCount(f) }
	case convertnhcb.SuffixSum:
		set = func(h *convertnhcb.TempHistogram, f float64) { _ = h.SetSum(f) }
	default:
		return
	}
	base := convertnhcb.GetHistogramMetricBase(ls, name)
	one := n[base.String()]
	if one == nil {
		one = &nhcbOne{labels: base, byTime: map[int64]*convertnhcb.TempHistogram{}}
		n[base.String()] = one
	}
	for k, v := range vals {
		if v.Omitted || v.Histogram != nil {
			continue
		}
		t := int64(k) * step
		h := one.byTime[t]
		if h == nil {
			th := convertnhcb.NewTempHistogram()
			h = &th
			one.byTime[t] = h
		}
		set(h, v.Value)
	}
}

func (n nhcbSeries) append(app *storage.Appender) error {
	for _, one := range n {
		ts := make([]int64, 0, len(one.byTime))
		for t := range one.byTime {
			ts = append(ts, t)
		}
		slices.Sort(ts)
		for _, t := range ts {
			h, fh, err := one.byTime[t].Convert()
			if err != nil {
				return err
			}
			if fh == nil {
				fh = h.ToFloat(nil)
			}
			if err := app.AppendHistogram(toSeries(one.labels), t, query.SeriesHistogram(fh)); err != nil {
				return err
			}
		}
	}
	return nil
}

func toSeries(ls labels.Labels) series.Labels {
	var out series.Labels
	ls.Range(func(l labels.Label) { out = append(out, series.Label{Name: l.Name, Value: l.Value}) })
	out.Sort()
	return out
}

func parseEval(lines []string, i int) (int, *suiteEval, error) {
	ev := &suiteEval{line: i + 1, expects: map[string][]expectLine{}, expected: map[string]expectedSeries{}}
	var mod string
	if m := patInstant.FindStringSubmatch(lines[i]); m != nil {
		t, err := parseDuration(m[2])
		if err != nil {
			return i, nil, err
		}
		mod, ev.expr, ev.start, ev.end = m[1], m[3], t, t
	} else if m := patRange.FindStringSubmatch(lines[i]); m != nil {
		var err error
		if ev.start, err = parseDuration(m[2]); err != nil {
			return i, nil, err
		}
		if ev.end, err = parseDuration(m[3]); err != nil {
			return i, nil, err
		}
		if ev.step, err = parseDuration(m[4]); err != nil {
			return i, nil, err
		}
		mod, ev.expr, ev.isRange = m[1], m[5], true
	} else {
		return i, nil, fmt.Errorf("invalid eval command %q", lines[i])
	}
	switch mod {
	case "fail":
		ev.fail = true
	case "ordered":
		ev.ordered = true
	case "warn", "info":
		ev.expects[mod] = append(ev.expects[mod], expectLine{})
	}
	pos := 1
	for i+1 < len(lines) && lines[i+1] != "" {
		i++
		d := lines[i]
		switch {
		case ev.fail && (strings.HasPrefix(d, "expected_fail_message") || strings.HasPrefix(d, "expected_fail_regexp")):
			kind, text, _ := strings.Cut(d, " ")
			k := "msg"
			if kind == "expected_fail_regexp" {
				k = "regex"
			}
			ev.expects["fail"] = append(ev.expects["fail"], expectLine{k, strings.TrimSpace(text)})
			continue
		case strings.HasPrefix(d, "expect range vector"):
			m := patRangeV.FindStringSubmatch(d)
			if m == nil {
				return i, nil, fmt.Errorf("invalid range vector expectation %q", d)
			}
			var err error
			if ev.start, err = parseDuration(m[1]); err != nil {
				return i, nil, err
			}
			if ev.end, err = parseDuration(m[2]); err != nil {
				return i, nil, err
			}
			if ev.step, err = parseDuration(m[3]); err != nil {
				return i, nil, err
			}
			ev.rangeVector = true
			continue
		case strings.HasPrefix(d, "expect string"):
			s, err := strconv.Unquote(strings.TrimSpace(strings.TrimPrefix(d, "expect string")))
			if err != nil {
				return i, nil, err
			}
			ev.str = &s
			continue
		case strings.HasPrefix(d, "expect "):
			m := patExpect.FindStringSubmatch(d)
			if m == nil {
				return i, nil, fmt.Errorf("invalid expectation %q", d)
			}
			switch m[1] {
			case "fail":
				ev.fail = true
			case "ordered":
				ev.ordered = true
			}
			ev.expects[m[1]] = append(ev.expects[m[1]], expectLine{m[2], strings.TrimSpace(m[3])})
			continue
		}
		if f, err := parseNumber(d); err == nil {
			ev.scalar = &f
			continue
		}
		ls, vals, err := descParser.ParseSeriesDesc(d)
		if err != nil {
			return i, nil, fmt.Errorf("%q: %v", d, err)
		}
		for _, v := range vals {
			if v.Histogram != nil {
				ev.histogram = true
			}
		}
		ev.expected[ls.String()] = expectedSeries{labels: ls, vals: vals, pos: pos}
		pos++
	}
	return i, ev, nil
}

// parseNumber reads a scalar expectation as promqltest does.
func parseNumber(s string) (float64, error) {
	if n, err := strconv.ParseInt(s, 0, 64); err == nil {
		return float64(n), nil
	}
	return strconv.ParseFloat(s, 64)
}

// skip says why an eval cannot run here ("" if it can).
func (s *suiteServer) skip(ev *suiteEval) string {
	e, err := parser.NewParser(parser.Options{EnableExperimentalFunctions: true, EnableBinopFillModifiers: true}).ParseExpr(ev.expr)
	if err != nil {
		return ""
	}
	reason := ""
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok || reason != "" {
			return nil
		}
		for _, ls := range s.unloadable {
			all := true
			for _, m := range vs.LabelMatchers {
				if !m.Matches(ls.Get(m.Name)) {
					all = false
					break
				}
			}
			if all {
				reason = "selects a native histogram or start-timestamp series"
			}
		}
		return nil
	})
	return reason
}

type apiAnswer struct {
	Status    string   `json:"status"`
	Error     string   `json:"error"`
	Warnings  []string `json:"warnings"`
	Infos     []string `json:"infos"`
	ErrorType string   `json:"errorType"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

type apiSeries struct {
	Metric     map[string]string   `json:"metric"`
	Value      []any               `json:"value"`
	Values     [][]any             `json:"values"`
	Histogram  []json.RawMessage   `json:"histogram"`
	Histograms [][]json.RawMessage `json:"histograms"`
}

// apiHist is a native histogram as the API encodes it.
type apiHist struct {
	Count   string  `json:"count"`
	Sum     string  `json:"sum"`
	Buckets [][]any `json:"buckets"`
}

// histPoint decodes [t, histogram].
func histPoint(raw []json.RawMessage) (int64, apiHist, error) {
	var h apiHist
	if len(raw) != 2 {
		return 0, h, fmt.Errorf("histogram point of %d elements", len(raw))
	}
	var t float64
	if err := json.Unmarshal(raw[0], &t); err != nil {
		return 0, h, err
	}
	err := json.Unmarshal(raw[1], &h)
	return int64(math.Round(t * 1000)), h, err
}

// sameHist compares an expected histogram with the API's: count, sum,
// and every bucket that holds something (bounds, rule and count).
func sameHist(want *histogram.FloatHistogram, got apiHist) string {
	if !almostEqual(want.Count, pointValue(got.Count)) || !almostEqual(want.Sum, pointValue(got.Sum)) {
		return fmt.Sprintf("count %s sum %s, want %v and %v", got.Count, got.Sum, want.Count, want.Sum)
	}
	k := 0
	it := want.AllBucketIterator()
	for it.Next() {
		b := it.At()
		if b.Count == 0 {
			continue
		}
		if k >= len(got.Buckets) || len(got.Buckets[k]) != 4 {
			return fmt.Sprintf("bucket %d missing (want %v)", k, b)
		}
		g := got.Buckets[k]
		rule := 2
		switch {
		case b.LowerInclusive && b.UpperInclusive:
			rule = 3
		case b.LowerInclusive:
			rule = 1
		case b.UpperInclusive:
			rule = 0
		}
		if r, _ := g[0].(float64); int(r) != rule || !almostEqual(b.Lower, pointValue(g[1])) || !almostEqual(b.Upper, pointValue(g[2])) || !almostEqual(b.Count, pointValue(g[3])) {
			return fmt.Sprintf("bucket %d is %v, want %v", k, g, b)
		}
		k++
	}
	if k != len(got.Buckets) {
		return fmt.Sprintf("%d buckets, want %d", len(got.Buckets), k)
	}
	return ""
}

func secs(ms int64) string { return strconv.FormatFloat(float64(ms)/1000, 'f', 3, 64) }

// eval runs one eval and returns what went wrong ("" if nothing), with
// the result alone and also with its annotations and error text.
func (s *suiteServer) eval(ev *suiteEval) (plain, strict string) {
	q := url.Values{"query": {ev.expr}}
	path := "/api/v1/query"
	if ev.isRange {
		path = "/api/v1/query_range"
		q.Set("start", secs(ev.start))
		q.Set("end", secs(ev.end))
		q.Set("step", secs(ev.step))
	} else {
		at := ev.start
		if ev.rangeVector {
			at = ev.end
		}
		q.Set("time", secs(at))
	}
	resp, err := http.Get(s.srv.URL + path + "?" + q.Encode())
	if err != nil {
		return err.Error(), err.Error()
	}
	defer resp.Body.Close()
	var ans apiAnswer
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		msg := fmt.Sprintf("HTTP %d, undecodable answer: %v", resp.StatusCode, err)
		return msg, msg
	}
	failed := ans.Status != "success" || resp.StatusCode/100 != 2
	if ev.fail {
		if !failed {
			return "expected the query to fail, it succeeded", "expected the query to fail, it succeeded"
		}
		for _, x := range ev.expects["fail"] {
			if x.kind == "msg" && !strings.Contains(ans.Error, strings.Trim(x.text, `"`)) {
				return "", fmt.Sprintf("expected error %q, got %q", x.text, ans.Error)
			}
			if x.kind == "regex" {
				if re, err := regexp.Compile(strings.Trim(x.text, `"`)); err == nil && !re.MatchString(ans.Error) {
					return "", fmt.Sprintf("expected error matching %q, got %q", x.text, ans.Error)
				}
			}
		}
		return "", ""
	}
	if failed {
		msg := fmt.Sprintf("query failed: HTTP %d %s: %s", resp.StatusCode, ans.ErrorType, ans.Error)
		return msg, msg
	}
	plain = compareResult(ev, ans)
	if plain != "" {
		return plain, plain
	}
	return "", checkAnnotations(ev, ans)
}

func checkAnnotations(ev *suiteEval, ans apiAnswer) string {
	match := func(x expectLine, a string) bool {
		switch x.kind {
		case "msg":
			return a == x.text
		case "regex":
			re, err := regexp.Compile(x.text)
			return err == nil && re.MatchString(a)
		}
		return true
	}
	for _, k := range []struct {
		typ string
		got []string
	}{{"warn", ans.Warnings}, {"info", ans.Infos}} {
		exps := ev.expects[k.typ]
		if len(exps) == 0 {
			continue
		}
		if len(k.got) == 0 {
			return fmt.Sprintf("expected %s annotations, got none", k.typ)
		}
		for _, x := range exps {
			if !slices.ContainsFunc(k.got, func(a string) bool { return match(x, a) }) {
				return fmt.Sprintf("expected a %s annotation matching %q, got %q", k.typ, x.text, k.got)
			}
		}
		for _, a := range k.got {
			if !slices.ContainsFunc(exps, func(x expectLine) bool { return match(x, a) }) {
				return fmt.Sprintf("unexpected %s annotation %q", k.typ, a)
			}
		}
	}
	if _, ok := ev.expects["no_warn"]; ok && len(ans.Warnings) > 0 {
		return fmt.Sprintf("unexpected warnings %q", ans.Warnings)
	}
	if _, ok := ev.expects["no_info"]; ok && len(ans.Infos) > 0 {
		return fmt.Sprintf("unexpected infos %q", ans.Infos)
	}
	return ""
}

func pointValue(v any) float64 {
	s, _ := v.(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

func pointTime(v any) int64 {
	f, _ := v.(float64)
	return int64(math.Round(f * 1000))
}

// almostEqual is promqltest's comparison: NaNs equal, else within 1e-6
// relative.
func almostEqual(a, b float64) bool {
	if math.IsNaN(a) && math.IsNaN(b) {
		return true
	}
	if a == b {
		return true
	}
	if math.IsNaN(a) || math.IsNaN(b) || math.IsInf(a, 0) || math.IsInf(b, 0) {
		return false
	}
	diff := math.Abs(a - b)
	if a == 0 || b == 0 || diff < math.SmallestNonzeroFloat64 {
		return diff < 1e-6*math.SmallestNonzeroFloat64
	}
	return diff/(math.Abs(a)+math.Abs(b)) < 1e-6
}

func compareResult(ev *suiteEval, ans apiAnswer) string {
	switch ans.Data.ResultType {
	case "string":
		var r []any
		_ = json.Unmarshal(ans.Data.Result, &r)
		if ev.str == nil || len(r) != 2 || r[1] != *ev.str {
			return fmt.Sprintf("unexpected string result %v", r)
		}
		return ""
	case "scalar":
		var r []any
		_ = json.Unmarshal(ans.Data.Result, &r)
		if ev.scalar == nil || len(r) != 2 {
			return fmt.Sprintf("unexpected scalar result %v", r)
		}
		if got := pointValue(r[1]); !almostEqual(*ev.scalar, got) {
			return fmt.Sprintf("expected scalar %v, got %v", *ev.scalar, got)
		}
		return ""
	}
	if ev.scalar != nil || ev.str != nil {
		return fmt.Sprintf("expected a scalar or string, got %s", ans.Data.ResultType)
	}
	var res []apiSeries
	if err := json.Unmarshal(ans.Data.Result, &res); err != nil {
		return err.Error()
	}
	seen := map[string]bool{}
	for pos, r := range res {
		key := labels.FromMap(r.Metric).String()
		exp, ok := ev.expected[key]
		if !ok {
			return fmt.Sprintf("unexpected series %s in the result", key)
		}
		if seen[key] {
			return fmt.Sprintf("series %s twice in the result", key)
		}
		seen[key] = true
		if ans.Data.ResultType == "vector" {
			if ev.ordered && exp.pos != pos+1 {
				return fmt.Sprintf("expected %s at position %d, it was at %d", key, exp.pos, pos+1)
			}
			if len(exp.vals) == 0 || exp.vals[0].Omitted {
				return fmt.Sprintf("expected no value for %s", key)
			}
			if wh := exp.vals[0].Histogram; wh != nil || r.Histogram != nil {
				if wh == nil || r.Histogram == nil {
					return fmt.Sprintf("expected %v for %s, got %s", exp.vals, key, r.Histogram)
				}
				_, gh, err := histPoint(r.Histogram)
				if err != nil {
					return err.Error()
				}
				if d := sameHist(wh, gh); d != "" {
					return fmt.Sprintf("%s: %s", key, d)
				}
				continue
			}
			got := pointValue(r.Value[1])
			if !almostEqual(exp.vals[0].Value, got) {
				return fmt.Sprintf("expected %v for %s, got %v", exp.vals, key, got)
			}
			continue
		}
		if ev.ordered {
			return "expected an ordered result, got a matrix"
		}
		if !ev.isRange && !ev.rangeVector && len(exp.vals) > 0 {
			return fmt.Sprintf("expected %d points for %s from an instant query", len(exp.vals), key)
		}
		var want [][2]float64
		type wantHist struct {
			t int64
			h *histogram.FloatHistogram
		}
		var wantH []wantHist
		for k, v := range exp.vals {
			t := ev.start + int64(k)*ev.step
			if t > ev.end {
				return fmt.Sprintf("expected %d points for %s, more than the range has", len(exp.vals), key)
			}
			switch {
			case v.Omitted:
			case v.Histogram != nil:
				wantH = append(wantH, wantHist{t, v.Histogram})
			default:
				want = append(want, [2]float64{float64(t), v.Value})
			}
		}
		if len(wantH) != len(r.Histograms) {
			return fmt.Sprintf("expected %d histograms for %s, got %d", len(wantH), key, len(r.Histograms))
		}
		for k, raw := range r.Histograms {
			t, gh, err := histPoint(raw)
			if err != nil {
				return err.Error()
			}
			if t != wantH[k].t {
				return fmt.Sprintf("expected a histogram at %dms for %s, got one at %dms", wantH[k].t, key, t)
			}
			if d := sameHist(wantH[k].h, gh); d != "" {
				return fmt.Sprintf("%s at %dms: %s", key, t, d)
			}
		}
		if len(want) != len(r.Values) {
			return fmt.Sprintf("expected %d points for %s, got %d: %v", len(want), key, len(r.Values), r.Values)
		}
		for k, p := range r.Values {
			t, v := pointTime(p[0]), pointValue(p[1])
			if float64(t) != want[k][0] || value.IsStaleNaN(want[k][1]) || !almostEqual(want[k][1], v) {
				return fmt.Sprintf("expected %v at %dms for %s, got %v at %dms", want[k][1], int64(want[k][0]), key, v, t)
			}
		}
	}
	for key := range ev.expected {
		if !seen[key] {
			return fmt.Sprintf("expected series %s not in the result", key)
		}
	}
	return ""
}

// descParser reads the scripts' series: some have names with dots.
var descParser = parser.NewParser(parser.Options{EnableUnquotedUTF8Names: true})

// suiteExprs are the expressions of the scripts' evals.
func suiteExprs(t testing.TB) []string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/prometheus/prometheus").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/prometheus/prometheus: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "promql", "promqltest", "testdata", "*.test"))
	var exprs []string
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(raw), "\n") {
			l = strings.TrimSpace(l)
			if m := patInstant.FindStringSubmatch(l); m != nil {
				exprs = append(exprs, m[3])
			} else if m := patRange.FindStringSubmatch(l); m != nil {
				exprs = append(exprs, m[5])
			}
		}
	}
	return exprs
}

var fullParser = parser.NewParser(parser.Options{EnableExperimentalFunctions: true, EnableBinopFillModifiers: true, EnableUnquotedUTF8Names: true})

// roundTrip checks that what parses prints as something that parses to
// the same expression, plainly and laid out by format_query.
func roundTrip(t *testing.T, q string) {
	e, err := fullParser.ParseExpr(q)
	if err != nil {
		return
	}
	s1 := e.String()
	e2, err := fullParser.ParseExpr(s1)
	if err != nil {
		t.Fatalf("%q prints as %q, which does not parse: %v", q, s1, err)
	}
	if s2 := e2.String(); s2 != s1 {
		t.Fatalf("%q prints as %q, which prints as %q", q, s1, s2)
	}
	pretty, err := query.Format(q)
	if err != nil {
		return // refused by the engine's own bounds (length, depth)
	}
	e3, err := fullParser.ParseExpr(pretty)
	if err != nil {
		t.Fatalf("%q is formatted as %q, which does not parse: %v", q, pretty, err)
	}
	if s3 := e3.String(); s3 != s1 {
		t.Fatalf("%q is formatted as %q, which prints as %q, not %q", q, pretty, s3, s1)
	}
}

// TestParseRoundTripSuite: every expression of Prometheus's scripts
// survives printing and format_query.
func TestParseRoundTripSuite(t *testing.T) {
	exprs := suiteExprs(t)
	if len(exprs) < 2000 {
		t.Fatalf("only %d expressions in the scripts", len(exprs))
	}
	for _, q := range exprs {
		roundTrip(t, q)
	}
	t.Logf("%d expressions round-trip", len(exprs))
}

// FuzzParseRoundTrip: any text that parses round-trips (seeded with the
// scripts' expressions and testdata/fuzz/FuzzParseRoundTrip).
func FuzzParseRoundTrip(f *testing.F) {
	for _, q := range suiteExprs(f) {
		f.Add(q)
	}
	f.Fuzz(roundTrip)
}
