package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/headroomdb/headroom/query/report"
)

// report is /api/v1/report: query (PromQL), end (default now), start or
// range (default 30d before end), step (default by range), threshold,
// horizon (default 365d), percentile_of (samples, points, 5m-avg). The answer is the JSON form of
// headroom.v1.ReportResponse (camelCase fields, "Infinity" for no
// crossing) inside Prometheus's envelope.
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
	o := report.Options{Query: q, Start: time.UnixMilli(start).UTC(), End: time.UnixMilli(end).UTC(), PercentileOf: r.Form.Get("percentile_of")}
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
		if o.Threshold, err = strconv.ParseFloat(s, 64); err != nil {
			return nil, badData("invalid parameter \"threshold\": %q is not a number", s)
		}
		o.HasThreshold = true
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
	b, err := protojson.Marshal(report.ToProto(rep))
	if err != nil {
		return nil, err
	}
	return withHeaders{data: json.RawMessage(b), headers: map[string]string{"X-Headroom-Tier": strings.Join(rep.Tiers, ",")}}, nil
}
