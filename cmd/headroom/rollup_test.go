package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	prompb "github.com/headroomdb/headroom/proto/prometheus"
	"github.com/headroomdb/headroom/storage"
)

// A server downsamples in the background: once a day is over and quiet,
// a dashboard query over its hours is answered from the tiers (and says
// so in a header) with the raw answer's values; before that, from the
// tiers too, its day computed from raw samples (the header says raw as
// well); /metrics shows the downsampler's backlog; tier=raw forces raw
// samples and an unknown tier is bad data.
func TestServeRollups(t *testing.T) {
	ts := startServer(t, "--rollup-interval", "50ms", "--rollup-delay", "1m", "--rollup-quiet", "1s", "--checkpoint-interval", "200ms")
	// Six hours of a day that is over.
	end := time.Now().UTC().Truncate(24 * time.Hour).Add(-2 * time.Hour)
	var batch []*prompb.TimeSeries
	for at := end.Add(-6 * time.Hour); at.Before(end); at = at.Add(15 * time.Second) {
		for _, host := range []string{"a", "b"} {
			batch = append(batch, promSeries("cpu_seconds_total", at.UnixMilli(), float64(at.Unix()%100000), "host", host))
		}
		if len(batch) >= 2000 {
			if code, body := postRemoteWrite(t, ts.httpURL, "", remoteWriteBody(t, batch...)); code/100 != 2 {
				t.Fatalf("remote write: %d %s", code, body)
			}
			batch = batch[:0]
		}
	}
	if code, body := postRemoteWrite(t, ts.httpURL, "", remoteWriteBody(t, batch...)); code/100 != 2 {
		t.Fatalf("remote write: %d %s", code, body)
	}
	// Wait for the downsampler to roll the day up.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, body := httpGet(t, ts.httpURL+"/metrics")
		due, ok1 := metricValue(body, `headroom_rollup_pending{state="due"}`)
		waiting, ok2 := metricValue(body, `headroom_rollup_pending{state="waiting"}`)
		buckets, ok3 := metricValue(body, `headroom_rollup_buckets_total{tier="5m"}`)
		if ok1 && ok2 && ok3 && due+waiting == 0 && buckets > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the downsampler did not catch up:\n%s", grepLines(body, "headroom_rollup"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	get := func(tier string) (http.Header, []float64) {
		v := url.Values{"query": {`sum(increase(cpu_seconds_total[1h]))`}, "start": {fmt.Sprint(end.Add(-5 * time.Hour).Unix())},
			"end": {fmt.Sprint(end.Unix())}, "step": {"3600"}, "tier": {tier}}
		resp, err := http.Get(ts.httpURL + "/api/v1/query_range?" + v.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("tier %q: %d %s", tier, resp.StatusCode, b)
		}
		var out struct {
			Data struct {
				Result []struct{ Values [][2]any }
			}
		}
		if err := json.Unmarshal(b, &out); err != nil || len(out.Data.Result) != 1 {
			t.Fatalf("tier %q: %v %s", tier, err, b)
		}
		var vs []float64
		for _, p := range out.Data.Result[0].Values {
			var f float64
			fmt.Sscan(p[1].(string), &f)
			vs = append(vs, f)
		}
		return resp.Header, vs
	}
	h, fromTier := get("")
	if got := h.Get("X-Headroom-Tier"); got != "1h" {
		t.Errorf("X-Headroom-Tier %q, want 1h (the coarsest tier dividing 1h)", got)
	}
	h, fromRaw := get("raw")
	if got := h.Get("X-Headroom-Tier"); got != "raw" {
		t.Errorf("tier=raw: X-Headroom-Tier %q", got)
	}
	if len(fromTier) != 6 || fmt.Sprint(fromTier) != fmt.Sprint(fromRaw) {
		t.Errorf("from the tier %v, from raw %v", fromTier, fromRaw)
	}
	if code, body := httpGet(t, ts.httpURL+"/api/v1/query?query=up&tier=7m"); code != 400 || !strings.Contains(body, `unknown tier \"7m\"`) {
		t.Errorf("unknown tier: %d %s", code, body)
	}
	// The same over gRPC: the first message names the tiers.
	stream, err := headroomv1.NewQueryClient(ts.dial(t)).RangeQuery(context.Background(), &headroomv1.RangeQueryRequest{
		Query: `sum(increase(cpu_seconds_total[1h]))`, StartMs: end.Add(-5 * time.Hour).UnixMilli(), EndMs: end.UnixMilli(), StepMs: 3600_000, Tier: "5m"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || fmt.Sprint(first.GetTiers()) != "[5m]" {
		t.Errorf("gRPC tier=5m: tiers %v, %v", first.GetTiers(), err)
	}
}

func metricValue(body, name string) (float64, bool) {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f, true
			}
		}
	}
	return 0, false
}

func grepLines(body, s string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// --retention-rule: repeatable, from the command line or a YAML list
// (selectors with commas stay whole), resolved against the tiers; bad
// tiers, selectors and durations are refused with the rule named.
func TestRetentionRuleFlags(t *testing.T) {
	dir := t.TempDir()
	cfgPath := dir + "/headroom.yaml"
	if err := os.WriteFile(cfgPath, []byte("retention-rule:\n  - 'raw {env=\"dev\",team=\"a\"} 3d'\n  - '1h {__name__=~\"node_.*\"} 5y'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg := serveFlags(fs)
	if err := fs.Parse([]string{"--config", cfgPath}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, cfgPath); err != nil {
		t.Fatal(err)
	}
	rules, err := resolveRules(cfg.rules, cfg.tiers)
	if err != nil || len(rules) != 2 || rules[0].Tier != -1 || len(rules[0].Matchers) != 2 || rules[1].Tier != 1 || rules[1].Retention != 5*365*24*time.Hour {
		t.Fatalf("rules %+v, %v", rules, err)
	}
	for spec, want := range map[string]string{
		`7m {env="dev"} 3d`:  `unknown tier "7m"`,
		`raw {env="dev" 3d`:  `retention rule`,
		`raw {env="dev"} 3x`: `retention rule`,
		`raw`:                `want TIER SELECTOR RETENTION`,
	} {
		_, err := resolveRules([]string{spec}, storage.DefaultTiers)
		if err == nil {
			err = rulesFlag{new([]string)}.Set(spec)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", spec, err, want)
		}
	}
	startServer(t, "--retention-rule", `raw {env="dev"} 3d`) // a server starts with one
}

// Samples three years old (older than raw retention, inside the 1d
// tier's ten years) are answered as soon as they are acknowledged, by
// queries on the tier and by the series API.
func TestServeHistoricalSamples(t *testing.T) {
	ts := startServer(t)
	day := time.Now().UTC().AddDate(-3, 0, 0).Truncate(24 * time.Hour)
	var batch []*prompb.TimeSeries
	for _, host := range []string{"a", "b", "c"} {
		for i := 0; i < 60; i++ {
			batch = append(batch, promSeries("old_load", day.Add(time.Duration(i)*time.Minute+time.Second).UnixMilli(), float64(i), "host", host))
		}
	}
	if code, body := postRemoteWrite(t, ts.httpURL, "", remoteWriteBody(t, batch...)); code != 204 {
		t.Fatalf("remote write: %d %s", code, body)
	}
	for _, tier := range []string{"", "1d"} {
		v := url.Values{"query": {`count_over_time(old_load[1d])`}, "time": {fmt.Sprint(day.Add(24 * time.Hour).Unix())}, "tier": {tier}}
		resp, err := http.Get(ts.httpURL + "/api/v1/query?" + v.Encode())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Count(string(b), `"60"]`) != 3 || resp.Header.Get("X-Headroom-Tier") == "" {
			t.Fatalf("tier %q: %d %s (X-Headroom-Tier %q)", tier, resp.StatusCode, b, resp.Header.Get("X-Headroom-Tier"))
		}
	}
	v := url.Values{"match[]": {"old_load"}, "start": {fmt.Sprint(day.Add(-time.Hour).Unix())}, "end": {fmt.Sprint(day.Add(2 * time.Hour).Unix())}}
	if code, body := httpGet(t, ts.httpURL+"/api/v1/series?"+v.Encode()); code != 200 || strings.Count(body, `"host"`) != 3 {
		t.Fatalf("series: %d %s", code, body)
	}
}
