package main

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	prompb "github.com/headroomdb/headroom/proto/prometheus"
)

// Grafana's Prometheus data source and Prometheus's own Go client speak
// the same HTTP API: the official client (which decodes every response
// into Prometheus's types, and fails on a shape it does not expect) is
// pointed at a real server and walks what Grafana does: the health check
// (`1+1`), the metric and label browsers, a dashboard's range query, an
// instant query, the exemplar, rule and alert panels, and a bad query.
func TestPrometheusClientAgainstServer(t *testing.T) {
	ts := startServer(t)
	now := time.Now().Truncate(time.Second)
	var series []*prompb.TimeSeries
	for i := 0; i < 40; i++ {
		at := now.Add(time.Duration(i-40) * 15 * time.Second).UnixMilli()
		for _, inst := range []string{"a:9100", "b:9100"} {
			series = append(series, promSeries("node_cpu_seconds_total", at, float64(1000+i*15), "job", "node", "instance", inst, "mode", "idle"))
		}
	}
	if code, body := postRemoteWrite(t, ts.httpURL, "", remoteWriteBody(t, series...)); code/100 != 2 {
		t.Fatalf("remote write: %d %s", code, body)
	}

	c, err := promapi.NewClient(promapi.Config{Address: ts.httpURL})
	if err != nil {
		t.Fatal(err)
	}
	api := promv1.NewAPI(c)
	ctx := context.Background()
	start, end := now.Add(-10*time.Minute), now

	bi, err := api.Buildinfo(ctx)
	if err != nil || bi.Version == "" {
		t.Errorf("buildinfo: %+v %v", bi, err)
	}
	v, _, _, err := api.Query(ctx, "1+1", now)
	if s, ok := v.(*model.Scalar); err != nil || !ok || s.Value != 2 {
		t.Errorf("health check 1+1: %v %v", v, err)
	}
	names, _, _, err := api.LabelNames(ctx, nil, start, end)
	if err != nil || !slices.Equal(names, model.LabelNames{"__name__", "instance", "job", "mode"}) {
		t.Errorf("label names: %v %v", names, err)
	}
	metrics, _, _, err := api.LabelValues(ctx, "__name__", []string{`{job="node"}`}, start, end)
	if err != nil || len(metrics) != 1 || metrics[0] != "node_cpu_seconds_total" {
		t.Errorf("metric names: %v %v", metrics, err)
	}
	sets, _, _, err := api.Series(ctx, []string{`node_cpu_seconds_total{instance="a:9100"}`}, start, end)
	if err != nil || len(sets) != 1 || sets[0]["mode"] != "idle" {
		t.Errorf("series: %v %v", sets, err)
	}
	if _, err := api.Metadata(ctx, "", ""); err != nil {
		t.Errorf("metadata: %v", err)
	}

	// A dashboard panel: the per-second rate by instance.
	v, _, _, err = api.QueryRange(ctx, `sum by (instance) (rate(node_cpu_seconds_total[1m]))`, promv1.Range{Start: start, End: end, Step: 30 * time.Second})
	m, ok := v.(model.Matrix)
	if err != nil || !ok || len(m) != 2 {
		t.Fatalf("range query: %v %v", v, err)
	}
	for _, s := range m {
		if len(s.Values) < 10 {
			t.Errorf("%s: %d points", s.Metric, len(s.Values))
		}
		for _, p := range s.Values {
			// 15 per 15 s, once the window is past the first sample
			// (Prometheus extrapolates less at a series' start).
			if p.Timestamp.Time().Before(start.Add(time.Minute)) {
				continue
			}
			if math.Abs(float64(p.Value)-1) > 1e-9 {
				t.Errorf("%s: rate %v at %v, want 1", s.Metric, p.Value, p.Timestamp)
				break
			}
		}
	}
	v, _, _, err = api.Query(ctx, `node_cpu_seconds_total{instance="b:9100"}`, now)
	if vec, ok := v.(model.Vector); err != nil || !ok || len(vec) != 1 || vec[0].Value != 1000+39*15 {
		t.Errorf("instant query: %v %v", v, err)
	}
	if _, err := api.QueryExemplars(ctx, "node_cpu_seconds_total", start, end); err != nil {
		t.Errorf("exemplars: %v", err)
	}
	if _, err := api.Rules(ctx, nil); err != nil {
		t.Errorf("rules: %v", err)
	}
	if _, err := api.Alerts(ctx); err != nil {
		t.Errorf("alerts: %v", err)
	}
	tsdb, err := api.TSDB(ctx)
	if err != nil || tsdb.HeadStats.NumSeries != 2 || len(tsdb.SeriesCountByMetricName) != 1 {
		t.Errorf("tsdb: %+v %v", tsdb, err)
	}

	// Errors arrive typed, as Grafana shows them.
	_, _, _, err = api.Query(ctx, "sum(", now)
	var perr *promv1.Error
	if !errors.As(err, &perr) || perr.Type != promv1.ErrBadData {
		t.Errorf("bad query: %#v", err)
	}
	_, _, _, err = api.QueryRange(ctx, "up", promv1.Range{Start: start, End: end, Step: time.Millisecond})
	if !errors.As(err, &perr) || perr.Type != promv1.ErrBadData {
		t.Errorf("too many points: %#v", err)
	}
}
