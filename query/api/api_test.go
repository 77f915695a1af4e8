package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/query/api"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

// source adapts the real engine to query.Source, as the binary does.
type source struct{ db *storage.DB }

func (s source) Querier(mint, maxt int64) (query.Querier, error) {
	return s.db.Querier(max(mint, storage.MinTime), min(maxt, storage.MaxTime))
}

func setup(t testing.TB) *httptest.Server {
	t.Helper()
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true, Retention: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	now := time.Now().UnixMilli()
	app := db.Appender()
	for _, ls := range []series.Labels{
		series.FromStrings("__name__", "up", "job", "node", "instance", "a:9100"),
		series.FromStrings("__name__", "up", "job", "node", "instance", "b:9100"),
		series.FromStrings("__name__", "up", "job", "api", "instance", "c:8080"),
		series.FromStrings("__name__", "http_requests_total", "job", "api", "code", "200"),
	} {
		if err := app.Append(ls, now, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.New(source{db}, "1.2.3", nil).Register(mux, func(_ string, h http.Handler) http.Handler { return h })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", u, ct)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// The JSON bodies are compared whole: their shape is what Prometheus
// clients (Grafana) parse.
func TestAPI(t *testing.T) {
	srv := setup(t)
	u := srv.URL
	for _, c := range []struct {
		path string
		code int
		body string
	}{
		{"/api/v1/labels", 200, `{"status":"success","data":["__name__","code","instance","job"]}`},
		{"/api/v1/labels?match[]=up{job=\"api\"}", 200, `{"status":"success","data":["__name__","instance","job"]}`},
		{"/api/v1/label/job/values", 200, `{"status":"success","data":["api","node"]}`},
		{"/api/v1/label/instance/values?match[]=up{job=\"node\"}&match[]=up{instance=~\"c.*\"}", 200, `{"status":"success","data":["a:9100","b:9100","c:8080"]}`},
		{"/api/v1/label/nope/values", 200, `{"status":"success","data":[]}`},
		{"/api/v1/series?match[]=up{job=\"node\"}&match[]=http_requests_total", 200,
			`{"status":"success","data":[{"__name__":"http_requests_total","code":"200","job":"api"},{"__name__":"up","instance":"a:9100","job":"node"},{"__name__":"up","instance":"b:9100","job":"node"}]}`},
		{"/api/v1/series?match[]=up&start=1&end=2", 200, `{"status":"success","data":[]}`},
		// limit (Grafana sends limit=40000): the first ones, with a warning.
		{"/api/v1/labels?limit=2", 200, `{"status":"success","data":["__name__","code"],"warnings":["results truncated due to limit"]}`},
		{"/api/v1/labels?limit=40000", 200, `{"status":"success","data":["__name__","code","instance","job"]}`},
		{"/api/v1/label/job/values?limit=1", 200, `{"status":"success","data":["api"],"warnings":["results truncated due to limit"]}`},
		{"/api/v1/series?match[]=up{job=\"node\"}&match[]=http_requests_total&limit=1", 200,
			`{"status":"success","data":[{"__name__":"http_requests_total","code":"200","job":"api"}],"warnings":["results truncated due to limit"]}`},
		{"/api/v1/labels?limit=-1", 400, `{"status":"error","errorType":"bad_data","error":"invalid parameter \"limit\": limit must be non-negative"}`},
		{"/api/v1/format_query?query=sum(rate(x%5B5m%5D))by(job)", 200, `{"status":"success","data":"sum by (job) (rate(x[5m]))"}`},
		{"/api/v1/format_query?query=sum(", 400, ``},
		{"/api/v1/parse_query?query=" + url.QueryEscape(`-sum by (job) (rate(up{job="a"}[5m] offset 1m))`), 200,
			`{"status":"success","data":{"expr":{"expr":{"args":[{"anchored":false,"matchers":[{"name":"job","type":"=","value":"a"},{"name":"__name__","type":"=","value":"up"}],"name":"up","offset":60000,"offsetExpr":null,"range":300000,"rangeExpr":null,"smoothed":false,"startOrEnd":null,"timestamp":null,"type":"matrixSelector"}],"func":{"argTypes":["matrix"],"name":"rate","returnType":"vector","variadic":0},"type":"call"},"grouping":["job"],"op":"sum","param":null,"type":"aggregation","without":false},"op":"-","type":"unaryExpr"}}`},
		{"/api/v1/parse_query?query=sum(", 400, ``},
		{"/api/v1/metadata", 200, `{"status":"success","data":{}}`},
		{"/api/v1/query_exemplars?query=up", 200, `{"status":"success","data":[]}`},
		{"/api/v1/rules", 200, `{"status":"success","data":{"groups":[]}}`},
		{"/api/v1/alerts", 200, `{"status":"success","data":{"alerts":[]}}`},
		// Errors: Prometheus's envelope, status codes and error types.
		{"/api/v1/series", 400, `{"status":"error","errorType":"bad_data","error":"no match[] parameter provided"}`},
		{"/api/v1/series?match[]=up{", 400, ``},
		{"/api/v1/series?match[]={job=~\".*\"}", 400, ``},
		{"/api/v1/labels?start=yesterday", 400, `{"status":"error","errorType":"bad_data","error":"invalid parameter \"start\": cannot parse \"yesterday\" to a valid timestamp"}`},
		{"/api/v1/labels?start=10&end=5", 400, `{"status":"error","errorType":"bad_data","error":"invalid parameter \"end\": end timestamp must not be before start time"}`},
		{"/api/v1/label/a%09b/values", 400, `{"status":"error","errorType":"bad_data","error":"invalid label name: \"a\\tb\""}`},
		{"/api/v1/label/service.name/values", 200, `{"status":"success","data":[]}`},
	} {
		code, body := get(t, u+c.path)
		if code != c.code {
			t.Errorf("%s: status %d, want %d (%s)", c.path, code, c.code, body)
		}
		if c.body == "" {
			var r struct{ Status, ErrorType, Error string }
			if err := json.Unmarshal([]byte(body), &r); err != nil || r.Status != "error" || r.ErrorType != "bad_data" || r.Error == "" {
				t.Errorf("%s: %s, want a bad_data error", c.path, body)
			}
			continue
		}
		if body != c.body {
			t.Errorf("%s:\n got %s\nwant %s", c.path, body, c.body)
		}
	}

	// Form POST, as Prometheus clients send long selectors.
	resp, err := http.PostForm(u+"/api/v1/series", url.Values{"match[]": {`up{job="api"}`}, "start": {"2020-01-01T00:00:00Z"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `{"status":"success","data":[{"__name__":"up","instance":"c:8080","job":"api"}]}`; strings.TrimSpace(string(b)) != want {
		t.Errorf("POST series: %s, want %s", b, want)
	}

	code, body := get(t, u+"/api/v1/status/buildinfo")
	var bi struct {
		Status string
		Data   map[string]string
	}
	if err := json.Unmarshal([]byte(body), &bi); code != 200 || err != nil || bi.Data["version"] != "1.2.3" || !strings.HasPrefix(bi.Data["goVersion"], "go") {
		t.Errorf("buildinfo: %d %s", code, body)
	}
	for _, k := range []string{"revision", "branch", "buildUser", "buildDate"} {
		if _, ok := bi.Data[k]; !ok {
			t.Errorf("buildinfo lacks %q", k)
		}
	}
	req, _ := http.NewRequest(http.MethodDelete, u+"/api/v1/labels", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("DELETE labels: %d", resp.StatusCode)
	}
}

func TestQueryEndpoints(t *testing.T) {
	srv := setup(t)
	u := srv.URL
	now := time.Now().Unix() + 1 // after the samples written at setup
	code, body := get(t, u+"/api/v1/query?query="+url.QueryEscape(`sum by (job) (up)`)+"&time="+fmt.Sprint(now))
	want := fmt.Sprintf(`{"status":"success","data":{"resultType":"vector","result":[`+
		`{"metric":{"job":"api"},"value":[%d,"1"]},{"metric":{"job":"node"},"value":[%d,"2"]}]}}`, now, now)
	if code != 200 || body != want {
		t.Errorf("instant query:\n got %d %s\nwant %s", code, body, want)
	}
	// lookback_delta per request: the samples, written at setup, are
	// older than 5 minutes at now+600 and younger than 15.
	later := fmt.Sprint(now + 600)
	if code, body := get(t, u+"/api/v1/query?query=count(up)&time="+later); code != 200 || strings.Contains(body, `"3"`) {
		t.Errorf("a query 10 minutes after the samples, default lookback: %d %s", code, body)
	}
	if code, body := get(t, u+"/api/v1/query?query=count(up)&lookback_delta=15m&time="+later); code != 200 || !strings.Contains(body, `"3"`) {
		t.Errorf("lookback_delta=15m: %d %s, want the 3 up series", code, body)
	}
	if code, body := get(t, u+"/api/v1/query?query=up&limit=1&time="+fmt.Sprint(now)); code != 200 || strings.Count(body, `"metric"`) != 1 || !strings.Contains(body, `"warnings":["results truncated due to limit"]`) {
		t.Errorf("limit=1 on 3 series: %d %s", code, body)
	}
	if code, _ := get(t, u+"/api/v1/query?query=up&limit=-2"); code != 400 {
		t.Errorf("limit=-2: %d, want 400", code)
	}
	if code, _ := get(t, u+"/api/v1/query?query=up&lookback_delta=soon"); code != 400 {
		t.Errorf("lookback_delta=soon: %d, want 400", code)
	}
	code, body = get(t, u+"/api/v1/query?query=1%2B1&time=100.5")
	if want := `{"status":"success","data":{"resultType":"scalar","result":[100.5,"2"]}}`; code != 200 || body != want {
		t.Errorf("scalar query: %d %s", code, body)
	}
	code, body = get(t, u+"/api/v1/query?query=%22hi%22&time=100")
	if want := `{"status":"success","data":{"resultType":"string","result":[100,"hi"]}}`; code != 200 || body != want {
		t.Errorf("string query: %d %s", code, body)
	}
	q := url.Values{"query": {`up{job="api"} * 2`}, "start": {fmt.Sprint(now - 60)}, "end": {fmt.Sprint(now)}, "step": {"30s"}}
	code, body = get(t, u+"/api/v1/query_range?"+q.Encode())
	want = fmt.Sprintf(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"instance":"c:8080","job":"api"},"values":[[%d,"2"]]}]}}`, now)
	if code != 200 || body != want {
		t.Errorf("range query:\n got %d %s\nwant %s", code, body, want)
	}
	for _, c := range []struct {
		path, typ string
		code      int
		msg       string
	}{
		{"/api/v1/query?query=" + url.QueryEscape("sum(up"), "bad_data", 400, `invalid parameter "query": 1:7: parse error: unclosed left parenthesis`},
		{"/api/v1/query?query=" + url.QueryEscape("nope(up)"), "bad_data", 400, `unknown function with name`},
		{"/api/v1/query?query=up&time=noon", "bad_data", 400, `invalid parameter "time"`},
		{"/api/v1/query", "bad_data", 400, "empty query"},
		{"/api/v1/query_range?query=up&start=0&end=100000&step=1", "bad_data", 400, "11,000 points"},
		{"/api/v1/query_range?query=up&start=0&end=10&step=0", "bad_data", 400, "step"},
		{"/api/v1/query_range?query=up&start=0&end=10", "bad_data", 400, `"step": missing`},
		{"/api/v1/query_range?query=up&start=0&end=10&step=soon", "bad_data", 400, `"step"`},
		{"/api/v1/query_range?query=" + url.QueryEscape("up[5m]") + "&start=0&end=10&step=1", "bad_data", 400, "range vector"},
	} {
		code, body := get(t, u+c.path)
		var r struct{ Status, ErrorType, Error string }
		json.Unmarshal([]byte(body), &r)
		if code != c.code || r.Status != "error" || r.ErrorType != c.typ || !strings.Contains(r.Error, c.msg) {
			t.Errorf("%s: %d %s, want %d %s with %q", c.path, code, body, c.code, c.typ, c.msg)
		}
	}
}

func TestQueryTooLarge(t *testing.T) {
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	app := db.Appender()
	now := time.Now().UnixMilli()
	for i := 0; i < 5; i++ {
		app.Append(series.FromStrings("__name__", "x", "i", fmt.Sprint(i)), now, 1)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.New(source{db}, "", &query.Engine{MaxSamples: 3}).Register(mux, func(_ string, h http.Handler) http.Handler { return h })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	code, body := get(t, srv.URL+"/api/v1/query?query=x")
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, `"errorType":"execution"`) || !strings.Contains(body, "too many samples") {
		t.Errorf("over the sample limit: %d %s, want 422 execution", code, body)
	}
}

// blockingSource holds the first Querier call until released, so that a
// test can disconnect the client while the query runs.
type blockingSource struct {
	query.Source
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockingSource) Querier(mint, maxt int64) (query.Querier, error) {
	b.once.Do(func() { close(b.started) })
	<-b.release
	return b.Source.Querier(mint, maxt)
}

// A query stops when its client disconnects: the handler ends with
// Prometheus's "canceled" (499) instead of running to the end.
func TestQueryCancelledWithClient(t *testing.T) {
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	app := db.Appender()
	app.Append(series.FromStrings("__name__", "x"), time.Now().UnixMilli(), 1)
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	src := &blockingSource{Source: source{db}, started: make(chan struct{}), release: make(chan struct{})}
	codes := make(chan int, 1)
	reqCtx := make(chan context.Context, 1)
	mux := http.NewServeMux()
	api.New(src, "", nil).Register(mux, func(_ string, h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reqCtx <- r.Context()
			rec := &statusRecorder{ResponseWriter: w}
			h.ServeHTTP(rec, r)
			codes <- rec.code
		})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/v1/query?query=x", nil)
	go http.DefaultClient.Do(req)
	<-src.started
	cancel()
	select { // the server sees the disconnect
	case <-(<-reqCtx).Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not notice the client leaving")
	}
	close(src.release)
	select {
	case code := <-codes:
		if code != 499 {
			t.Errorf("status %d after the client left, want 499 (canceled)", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the query did not end after its client left")
	}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// trimmedSource keeps no raw samples before an hour ago.
type trimmedSource struct{ source }

func (trimmedSource) RawOldest() int64 { return time.Now().Add(-time.Hour).UnixMilli() }

// An answer that read raw samples the source no longer keeps carries a
// warning in Prometheus's envelope.
func TestWarnings(t *testing.T) {
	db, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mux := http.NewServeMux()
	api.New(trimmedSource{source{db}}, "1.2.3", nil).Register(mux, func(_ string, h http.Handler) http.Handler { return h })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	v := url.Values{"query": {"up"}, "start": {fmt.Sprint(time.Now().Add(-3 * time.Hour).Unix())}, "end": {fmt.Sprint(time.Now().Unix())}, "step": {"60"}}
	code, body := get(t, srv.URL+"/api/v1/query_range?"+v.Encode())
	var out struct {
		Status   string
		Warnings []string
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || code != 200 || out.Status != "success" || len(out.Warnings) != 1 || !strings.Contains(out.Warnings[0], "are no longer kept") {
		t.Fatalf("%d %s", code, body)
	}
	v.Set("start", fmt.Sprint(time.Now().Add(-30*time.Minute).Unix()))
	if code, body := get(t, srv.URL+"/api/v1/query_range?"+v.Encode()); code != 200 || strings.Contains(body, "warnings") {
		t.Fatalf("within what is kept: %d %s", code, body)
	}
}

// TestQueryStats: stats (any value) adds Prometheus's timings and sample
// counts to a query's answer; without it there are none.
func TestQueryStats(t *testing.T) {
	srv := setup(t)
	for _, path := range []string{"/api/v1/query?query=up&stats=all", "/api/v1/query_range?query=up&start=0&end=60&step=15&stats=1"} {
		code, body := get(t, srv.URL+path)
		var got struct {
			Data struct {
				Stats *struct {
					Timings map[string]float64
					Samples map[string]int
				}
			}
		}
		if err := json.Unmarshal([]byte(body), &got); code != 200 || err != nil || got.Data.Stats == nil {
			t.Fatalf("%s: %d %v %s", path, code, err, body)
		}
		st := got.Data.Stats
		for _, k := range []string{"evalTotalTime", "resultSortTime", "queryPreparationTime", "innerEvalTime", "execQueueTime", "execTotalTime"} {
			if v, ok := st.Timings[k]; !ok || v < 0 {
				t.Errorf("%s: timing %s = %v, %v", path, k, v, ok)
			}
		}
		if st.Timings["execTotalTime"] < st.Timings["evalTotalTime"] {
			t.Errorf("%s: total %v below eval %v", path, st.Timings["execTotalTime"], st.Timings["evalTotalTime"])
		}
		if _, ok := st.Samples["totalQueryableSamples"]; !ok {
			t.Errorf("%s: no totalQueryableSamples: %s", path, body)
		}
	}
	_, body := get(t, srv.URL+"/api/v1/query?query=up")
	if strings.Contains(body, `"stats"`) {
		t.Errorf("stats without the parameter: %s", body)
	}
	_, body = get(t, srv.URL+"/api/v1/query?query=up&stats=all")
	if !strings.Contains(body, `"totalQueryableSamples":3`) {
		t.Errorf("three series of one sample: %s", body)
	}
}

// TestFormatWithFeatures: format_query and parse_query parse as the
// engine does: without promql-unquoted-utf8-names a dotted name must be
// quoted, with it (the default) it is printed unquoted.
func TestFormatWithFeatures(t *testing.T) {
	for _, c := range []struct {
		features []string
		code     int
		want     string
	}{
		{nil, 200, `"data":"{__name__=\"http.requests\",service.name=\"a\"}"`},
		{[]string{}, 200, `"data":"{\"service.name\"=\"a\",__name__=\"http.requests\"}"`},
	} {
		mux := http.NewServeMux()
		api.New(source{}, "v", &query.Engine{Features: c.features}).Register(mux, func(_ string, h http.Handler) http.Handler { return h })
		srv := httptest.NewServer(mux)
		code, body := get(t, srv.URL+"/api/v1/format_query?query="+url.QueryEscape(`{"http.requests", "service.name"="a"}`))
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("features %v: %d %s, want %d with %s", c.features, code, body, c.code, c.want)
		}
		code, body = get(t, srv.URL+"/api/v1/format_query?query="+url.QueryEscape(`http.requests`))
		if (c.features == nil) != (code == 200) {
			t.Errorf("features %v, unquoted: %d %s", c.features, code, body)
		}
		srv.Close()
	}
}
