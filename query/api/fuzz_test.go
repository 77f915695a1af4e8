package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzAPIParams sends the query API's endpoints arbitrary form bodies
// (the parameters Grafana and other clients send). Every answer must be
// Prometheus's JSON envelope: success with 200, or an error with its
// type and a 4xx or 503 status; never a panic, a 500 or another shape.
func FuzzAPIParams(f *testing.F) {
	srv := setup(f)
	for _, seed := range []struct {
		ep   uint8
		form string
	}{
		{0, "query=up&time=1700000000"},
		{0, "query=up&time=NaN"},
		{0, "query=sum(rate(up[5m]))&timeout=1s&tier=raw"},
		{0, "query=up&tier=7m"},
		{1, "query=rate(up[5m])&start=1700000000&end=1700003600&step=15"},
		{1, "query=up&start=-9223372036854775808&end=9223372036854775807&step=1"},
		{1, "query=up&start=2023-11-14T22:13:20Z&end=2023-11-14T23:13:20.5Z&step=1m"},
		{2, "match[]=up&match[]={job=\"api\"}&start=0"},
		{3, "match[]=up&limit=1"},
		{4, "start=1&end=0"},
		{5, "query=up&range=1d&threshold=0.5&percentile_of=5m-avg"},
		{5, "query=up&start=0&end=1&step=0s&horizon=-1d"},
	} {
		f.Add(seed.ep, seed.form)
	}
	endpoints := []string{"/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/labels", "/api/v1/label/job/values", "/api/v1/report"}
	f.Fuzz(func(t *testing.T, ep uint8, form string) {
		path := endpoints[int(ep)%len(endpoints)]
		start := time.Now()
		resp, err := http.Post(srv.URL+path, "application/x-www-form-urlencoded", strings.NewReader(form))
		// Four series of one sample: a minute is work out of proportion
		// to the request even on a loaded machine (a hang guard).
		if took := time.Since(start); took > time.Minute {
			t.Fatalf("%s %q: took %v", path, form, took)
		}
		if err != nil {
			t.Fatalf("%s %q: %v", path, form, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var env struct {
			Status    string          `json:"status"`
			ErrorType string          `json:"errorType"`
			Error     string          `json:"error"`
			Data      json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatalf("%s %q: %d, not JSON: %v: %.200q", path, form, resp.StatusCode, err, body)
		}
		switch {
		case resp.StatusCode == 200 && env.Status == "success":
		case env.Status == "error" && env.ErrorType != "" && env.Error != "" && env.ErrorType != "internal" &&
			(resp.StatusCode >= 400 && resp.StatusCode < 500 || resp.StatusCode == 503):
		default:
			t.Fatalf("%s %q: %d %.300s", path, form, resp.StatusCode, body)
		}
	})
}
