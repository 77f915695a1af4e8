package api

import (
	"bytes"
	"net/http"
	"strings"
	"time"

	"github.com/headroomdb/headroom/query/report"
)

// report is /api/v1/report: query (PromQL), end (default now), start or
// range (default 30d before end), step (default by range), threshold,
// horizon (default 365d), percentile_of (samples, points, 5m-avg),
// unit (of the levels; default the metric's from its metadata), format
// (json, or html: the page `headroom report --format html`
// writes). The JSON answer is report.JSON (numbers as numbers, labels as
// an object, times as RFC 3339, null for no crossing) inside
// Prometheus's envelope.
func (a *API) report(r *http.Request) (any, error) {
	q := r.Form.Get("query")
	if strings.TrimSpace(q) == "" {
		return nil, badData("invalid parameter \"query\": empty query")
	}
	end, err := parseTime(r, "end", time.Now().UnixMilli())
	if err != nil {
		return nil, err
	}
	start := end - 30*86400_000
	switch {
	case r.Form.Get("start") != "" && r.Form.Get("range") != "":
		return nil, badData("invalid parameters: give \"start\" or \"range\", not both")
	case r.Form.Get("start") != "":
		if start, err = parseTime(r, "start", 0); err != nil {
			return nil, err
		}
	case r.Form.Get("range") != "":
		d, err := parseDuration(r, "range")
		if err != nil {
			return nil, err
		}
		start = end - d.Milliseconds()
	}
	o := report.Options{Query: q, Start: time.UnixMilli(start).UTC(), End: time.UnixMilli(end).UTC(), PercentileOf: r.Form.Get("percentile_of"), Unit: r.Form.Get("unit")}
	if a.Metadata != nil {
		o.MetricUnit = func(m string) string { return a.Metadata(m, 1)[m].Unit }
	}
	if r.Form.Get("step") != "" {
		if o.Step, err = parseDuration(r, "step"); err != nil {
			return nil, err
		}
	}
	if r.Form.Get("horizon") != "" {
		if o.Horizon, err = parseDuration(r, "horizon"); err != nil {
			return nil, err
		}
	}
	if s := r.Form.Get("threshold"); s != "" {
		if o.Threshold, err = report.ParseThreshold(s); err != nil {
			return nil, badData("invalid parameter \"threshold\": %v", err)
		}
		o.HasThreshold = true
	}
	format := r.Form.Get("format")
	switch format {
	case "", "json", "html":
	default:
		return nil, badData("invalid parameter \"format\": %q: want json or html", format)
	}
	ctx, cancel, err := evalContext(r)
	if err != nil {
		return nil, err
	}
	defer cancel()
	rep, err := report.Run(ctx, a.engine, a.src, o)
	if err != nil {
		return nil, evalError(report.BadRequest(err))
	}
	if format == "html" {
		var buf bytes.Buffer
		if err := report.WriteHTML(&buf, report.ToProto(rep)); err != nil {
			return nil, err
		}
		return rawBody{contentType: "text/html; charset=utf-8", body: buf.Bytes(), headers: map[string]string{"X-Headroom-Tier": strings.Join(rep.Tiers, ",")}}, nil
	}
	return withHeaders{data: report.ToJSON(report.ToProto(rep)), headers: map[string]string{"X-Headroom-Tier": strings.Join(rep.Tiers, ",")}}, nil
}
