package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
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

func setup(t *testing.T) *httptest.Server {
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
	api.New(source{db}, "1.2.3").Register(mux, func(_ string, h http.Handler) http.Handler { return h })
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
		{"/api/v1/metadata", 200, `{"status":"success","data":{}}`},
		// Errors: Prometheus's envelope, status codes and error types.
		{"/api/v1/series", 400, `{"status":"error","errorType":"bad_data","error":"no match[] parameter provided"}`},
		{"/api/v1/series?match[]=up{", 400, ``},
		{"/api/v1/series?match[]={job=~\".*\"}", 400, ``},
		{"/api/v1/labels?start=yesterday", 400, `{"status":"error","errorType":"bad_data","error":"invalid parameter \"start\": cannot parse \"yesterday\" to a valid timestamp"}`},
		{"/api/v1/labels?start=10&end=5", 400, `{"status":"error","errorType":"bad_data","error":"invalid parameter \"end\": end timestamp must not be before start time"}`},
		{"/api/v1/label/a-b/values", 400, `{"status":"error","errorType":"bad_data","error":"invalid label name: \"a-b\""}`},
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
