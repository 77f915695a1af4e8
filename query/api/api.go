// Package api serves the Prometheus HTTP API (/api/v1/...) over a
// query.Source, with Prometheus's JSON shapes, status codes and error
// types, so that Grafana's Prometheus data source and other Prometheus
// clients work unchanged. It owns parameter parsing and encoding only;
// selection and evaluation belong to package query.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/headroomdb/headroom/admit"
	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage/series"
)

// API is the HTTP API.
type API struct {
	src     query.Source
	version string
	engine  *query.Engine
	// TSDBStatus, if set, answers /api/v1/status/tsdb with the head's
	// cardinality (the limit largest rows of each table).
	TSDBStatus func(limit int) TSDBStatus
	// Metadata, if set, answers /api/v1/metadata: the type, unit and help
	// agents sent for metric (every metric when empty; at most limit
	// metrics, 0: all).
	Metadata func(metric string, limit int) map[string]series.Metadata
	// Exemplars, if set, answers /api/v1/query_exemplars: the exemplars
	// in [start, end] (ms) of the series any matcher set selects.
	Exemplars func(start, end int64, sets [][]*series.Matcher) []series.SeriesExemplars
	// Flags answers /api/v1/status/flags: the server's flags and their
	// values, as Prometheus's does.
	Flags map[string]string
	// Errors, if set, answers /api/v1/status/errors: the server's recent
	// warnings and errors (for the console's status view).
	Errors func() any
	// Cluster, if set, answers /api/v1/status/cluster: the nodes, each
	// partition's owners and this node's lag on those it owns.
	Cluster func() any
}

var errNoStats = errors.New("this server does not report head statistics")

// New returns the API over src; version is reported by buildinfo. engine
// evaluates PromQL (nil: defaults).
func New(src query.Source, version string, engine *query.Engine) *API {
	if engine == nil {
		engine = &query.Engine{}
	}
	return &API{src: src, version: version, engine: engine}
}

// Register adds the API's routes to mux, each wrapped by wrap (for
// authentication and metrics); name is the route as /metrics labels it.
func (a *API) Register(mux *http.ServeMux, wrap func(name string, h http.Handler) http.Handler) {
	for _, r := range []struct {
		path string
		h    func(*http.Request) (any, error)
	}{
		{"/api/v1/query", a.instantQuery},
		{"/api/v1/query_range", a.rangeQuery},
		{"/api/v1/labels", a.labels},
		{"/api/v1/label/{name}/values", a.labelValues},
		{"/api/v1/series", a.series},
		{"/api/v1/status/buildinfo", a.buildInfo},
		{"/api/v1/status/tsdb", a.tsdbStatus},
		{"/api/v1/status/errors", func(*http.Request) (any, error) {
			if a.Errors == nil {
				return []any{}, nil
			}
			return a.Errors(), nil
		}},
		{"/api/v1/status/cluster", func(*http.Request) (any, error) {
			if a.Cluster == nil {
				return map[string]string{"mode": "single node (headroom serve without --cluster)"}, nil
			}
			return a.Cluster(), nil
		}},
		{"/api/v1/status/flags", func(*http.Request) (any, error) {
			if a.Flags == nil {
				return map[string]string{}, nil
			}
			return a.Flags, nil
		}},
		{"/api/v1/metadata", a.metadata},
		{"/api/v1/report", a.report},
		{"/api/v1/format_query", func(r *http.Request) (any, error) {
			if err := r.ParseForm(); err != nil {
				return nil, badData("%v", err)
			}
			return a.engine.Format(r.Form.Get("query"))
		}},
		{"/api/v1/parse_query", func(r *http.Request) (any, error) {
			if err := r.ParseForm(); err != nil {
				return nil, badData("%v", err)
			}
			e, err := a.engine.Parse(r.Form.Get("query"))
			if err != nil {
				return nil, err
			}
			return syntaxTree(e), nil
		}},
		{"/api/v1/query_exemplars", a.queryExemplars},
		// Grafana asks for these too; Headroom has no rules or alerts
		// yet, and answers as a Prometheus without any does.
		{"/api/v1/rules", func(*http.Request) (any, error) { return map[string]any{"groups": []any{}}, nil }},
		{"/api/v1/alerts", func(*http.Request) (any, error) { return map[string]any{"alerts": []any{}}, nil }},
	} {
		mux.Handle(r.path, wrap(r.path, handler(r.h)))
	}
}

// Error types of Prometheus's API, with their status codes.
const (
	errBadData  = "bad_data"  // 400
	errInternal = "internal"  // 500
	errExec     = "execution" // 422
	// errUnavailable: refused while the server is busy (429 with
	// Retry-After; Prometheus uses the type for 503).
	errUnavailable = "unavailable"
)

// apiError is an error with Prometheus's errorType.
type apiError struct {
	typ string
	err error
}

func (e *apiError) Error() string { return e.err.Error() }

func badData(format string, args ...any) error {
	return &apiError{typ: errBadData, err: fmt.Errorf(format, args...)}
}

type response struct {
	Status    string   `json:"status"`
	Data      any      `json:"data,omitempty"`
	ErrorType string   `json:"errorType,omitempty"`
	Error     string   `json:"error,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
	Infos     []string `json:"infos,omitempty"`
}

// handler answers GET and form POST (as Prometheus does, so that long
// selectors fit) with the JSON envelope.
func handler(f func(*http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, POST")
			writeJSON(w, http.StatusMethodNotAllowed, response{Status: "error", ErrorType: errBadData, Error: "method " + r.Method + " not allowed: use GET or POST"})
			return
		}
		if err := r.ParseForm(); err != nil {
			writeJSON(w, http.StatusBadRequest, response{Status: "error", ErrorType: errBadData, Error: "parse form: " + err.Error()})
			return
		}
		data, err := f(r)
		if err != nil {
			typ, code := errInternal, http.StatusInternalServerError
			var ae *apiError
			switch {
			case errors.As(err, &ae):
				typ = ae.typ
				code = map[string]int{errBadData: http.StatusBadRequest, errExec: http.StatusUnprocessableEntity,
					errTimeout: http.StatusServiceUnavailable, errCanceled: 499, errInternal: http.StatusInternalServerError}[typ]
			case errors.Is(err, query.ErrBadQuery), errors.Is(err, series.ErrInvalid):
				typ, code = errBadData, http.StatusBadRequest
			case errors.Is(err, admit.ErrBusy):
				typ, code = errUnavailable, http.StatusTooManyRequests
				w.Header().Set("Retry-After", strconv.Itoa(int(admit.RetryAfter.Seconds())))
			}
			writeJSON(w, code, response{Status: "error", ErrorType: typ, Error: err.Error()})
			return
		}
		if rb, ok := data.(rawBody); ok {
			for k, v := range rb.headers {
				w.Header().Set(k, v)
			}
			w.Header().Set("Content-Type", rb.contentType)
			w.WriteHeader(http.StatusOK)
			w.Write(rb.body)
			return
		}
		var warnings, infos []string
		if wh, ok := data.(withHeaders); ok {
			for k, v := range wh.headers {
				w.Header().Set(k, v)
			}
			data, warnings, infos = wh.data, wh.warnings, wh.infos
		}
		writeJSON(w, http.StatusOK, response{Status: "success", Data: data, Warnings: warnings, Infos: infos})
	})
}

// rawBody is an answer outside Prometheus's JSON envelope (a report's
// HTML page).
type rawBody struct {
	contentType string
	body        []byte
	headers     map[string]string
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// Prometheus's own bounds for "all time", which clients send back.
var (
	minTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC()
	maxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC()
)

// parseTime reads a Prometheus API time: Unix seconds (fractions allowed)
// or RFC 3339; empty gives def.
func parseTime(r *http.Request, name string, def int64) (int64, error) {
	s := r.Form.Get(name)
	if s == "" {
		return def, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, badData("invalid parameter %q: cannot parse %q to a valid timestamp", name, s)
		}
		return clampMillis(f * 1000), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, badData("invalid parameter %q: cannot parse %q to a valid timestamp", name, s)
	}
	switch {
	case t.Equal(minTime):
		return math.MinInt64, nil
	case t.Equal(maxTime):
		return math.MaxInt64, nil
	}
	return t.UnixMilli(), nil
}

func clampMillis(ms float64) int64 {
	switch {
	case ms >= math.MaxInt64:
		return math.MaxInt64
	case ms <= math.MinInt64:
		return math.MinInt64
	}
	return int64(ms)
}

// timeRange reads start and end, all time by default.
func timeRange(r *http.Request) (int64, int64, error) {
	start, err := parseTime(r, "start", math.MinInt64)
	if err != nil {
		return 0, 0, err
	}
	end, err := parseTime(r, "end", math.MaxInt64)
	if err != nil {
		return 0, 0, err
	}
	if end < start {
		return 0, 0, badData("invalid parameter \"end\": end timestamp must not be before start time")
	}
	return start, end, nil
}

// matchers parses every match[] selector.
func matchers(r *http.Request) ([][]*series.Matcher, error) {
	var out [][]*series.Matcher
	for _, s := range r.Form["match[]"] {
		ms, err := query.ParseSelector(s)
		if err != nil {
			return nil, badData("invalid parameter \"match[]\": %v", err)
		}
		out = append(out, ms)
	}
	return out, nil
}

func (a *API) querier(r *http.Request) (query.Querier, [][]*series.Matcher, error) {
	start, end, err := timeRange(r)
	if err != nil {
		return nil, nil, err
	}
	sets, err := matchers(r)
	if err != nil {
		return nil, nil, err
	}
	q, err := a.src.Querier(start, end)
	if err != nil {
		return nil, nil, err
	}
	return q, sets, nil
}

// union collects the strings f returns for each selector (or once, with
// none), sorted and unique; never nil, so that JSON says [] not null.
func union(sets [][]*series.Matcher, f func(ms ...*series.Matcher) ([]string, error)) ([]string, error) {
	if len(sets) == 0 {
		sets = [][]*series.Matcher{nil}
	}
	seen := map[string]struct{}{}
	out := []string{}
	for _, ms := range sets {
		vs, err := f(ms...)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			if _, ok := seen[v]; !ok {
				seen[v] = struct{}{}
				out = append(out, v)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// limitParam is the limit parameter of the metadata endpoints (Grafana
// sends limit=40000): 0 or none for no limit.
func limitParam(r *http.Request) (int, error) {
	s := r.FormValue("limit")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, badData("invalid parameter \"limit\": %v", err)
	}
	if n < 0 {
		return 0, badData("invalid parameter \"limit\": limit must be non-negative")
	}
	return n, nil
}

// truncated cuts a sorted answer at limit, with Prometheus's warning.
func truncated[T any](all []T, limit int) any {
	if limit == 0 || len(all) <= limit {
		return all
	}
	return withHeaders{data: all[:limit], warnings: []string{"results truncated due to limit"}}
}

func (a *API) labels(r *http.Request) (any, error) {
	limit, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	q, sets, err := a.querier(r)
	if err != nil {
		return nil, err
	}
	defer q.Close()
	names, err := union(sets, q.LabelNames)
	if err != nil {
		return nil, err
	}
	return warned(q, truncated(names, limit)), nil
}

// warned adds what q says of its selections (a cluster's partitions that
// no owner answered: query.Warner) to an answer's warnings.
func warned(q query.Querier, v any) any {
	w, ok := q.(query.Warner)
	if !ok {
		return v
	}
	ws := w.Warnings()
	if len(ws) == 0 {
		return v
	}
	wh, ok := v.(withHeaders)
	if !ok {
		wh = withHeaders{data: v}
	}
	wh.warnings = append(ws, wh.warnings...)
	return wh
}

func (a *API) labelValues(r *http.Request) (any, error) {
	name := r.PathValue("name")
	if strings.HasPrefix(name, "U__") {
		return nil, badData("invalid label name %q: UTF-8 escaped label names are not supported", name)
	}
	if !series.ValidLabelName(name) {
		return nil, badData("invalid label name: %q", name)
	}
	limit, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	q, sets, err := a.querier(r)
	if err != nil {
		return nil, err
	}
	defer q.Close()
	values, err := union(sets, func(ms ...*series.Matcher) ([]string, error) { return q.LabelValues(name, ms...) })
	if err != nil {
		return nil, err
	}
	return warned(q, truncated(values, limit)), nil
}

func (a *API) series(r *http.Request) (any, error) {
	limit, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	q, sets, err := a.querier(r)
	if err != nil {
		return nil, err
	}
	defer q.Close()
	if len(sets) == 0 {
		return nil, badData("no match[] parameter provided")
	}
	seen := map[string]struct{}{}
	var all []series.Labels
	for _, ms := range sets {
		lss, err := q.SelectLabels(ms...)
		if err != nil {
			return nil, err
		}
		for _, ls := range lss {
			k := ls.String()
			if _, ok := seen[k]; !ok {
				seen[k] = struct{}{}
				all = append(all, ls)
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return series.Compare(all[i], all[j]) < 0 })
	cut := limit > 0 && len(all) > limit
	if cut {
		all = all[:limit]
	}
	out := make([]map[string]string, 0, len(all))
	for _, ls := range all {
		m := make(map[string]string, len(ls))
		for _, l := range ls {
			m[l.Name] = l.Value
		}
		out = append(out, m)
	}
	if cut {
		return warned(q, withHeaders{data: out, warnings: []string{"results truncated due to limit"}}), nil
	}
	return warned(q, out), nil
}

func (a *API) buildInfo(*http.Request) (any, error) {
	info := map[string]string{"version": a.version, "revision": "", "branch": "", "buildUser": "", "buildDate": "", "goVersion": runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info["revision"] = s.Value
			case "vcs.time":
				info["buildDate"] = s.Value
			}
		}
	}
	return info, nil
}

type metadataEntry struct {
	Type string `json:"type"`
	Help string `json:"help"`
	Unit string `json:"unit"`
}

// metadata answers as Prometheus: metric name -> its entries (one here:
// the latest an agent sent), with metric, limit and limit_per_metric.
func (a *API) metadata(r *http.Request) (any, error) {
	out := map[string][]metadataEntry{}
	if a.Metadata == nil {
		return out, nil
	}
	limit, err := intParam(r, "limit")
	if err != nil {
		return nil, err
	}
	perMetric, err := intParam(r, "limit_per_metric")
	if err != nil {
		return nil, err
	}
	if limit < 0 || perMetric < 0 {
		return out, nil // Prometheus: a negative limit means none
	}
	for name, md := range a.Metadata(r.Form.Get("metric"), limit) {
		out[name] = []metadataEntry{{Type: md.Type, Help: md.Help, Unit: md.Unit}}
	}
	return out, nil
}

// intParam reads an optional integer parameter (0 when absent).
func intParam(r *http.Request, name string) (int, error) {
	v := r.Form.Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, badData("invalid parameter %q: %q is not an integer", name, v)
	}
	return n, nil
}

type exemplarJSON struct {
	Labels    map[string]string `json:"labels"`
	Value     string            `json:"value"`
	Timestamp float64           `json:"timestamp"`
}

type seriesExemplarsJSON struct {
	SeriesLabels map[string]string `json:"seriesLabels"`
	Exemplars    []exemplarJSON    `json:"exemplars"`
}

// queryExemplars answers as Prometheus: the exemplars of the series the
// query's selectors select, in [start, end] (all time when absent).
func (a *API) queryExemplars(r *http.Request) (any, error) {
	out := []seriesExemplarsJSON{}
	q := r.Form.Get("query")
	if strings.TrimSpace(q) == "" {
		return nil, badData("invalid parameter \"query\": empty query")
	}
	e, err := a.engine.Parse(q)
	if err != nil {
		return nil, evalError(err)
	}
	start, err := parseTime(r, "start", 0)
	if err != nil {
		return nil, err
	}
	end, err := parseTime(r, "end", math.MaxInt64)
	if err != nil {
		return nil, err
	}
	if end < start {
		return nil, badData("invalid parameter \"end\": end timestamp must not be before start time")
	}
	if a.Exemplars == nil {
		return out, nil
	}
	sets, err := query.SelectorMatchers(e)
	if err != nil {
		return nil, evalError(err)
	}
	for _, se := range a.Exemplars(start, end, sets) {
		js := seriesExemplarsJSON{SeriesLabels: metricMap(se.Labels)}
		for _, x := range se.Exemplars {
			js.Exemplars = append(js.Exemplars, exemplarJSON{Labels: metricMap(x.Labels), Value: formatValue(x.Value), Timestamp: float64(x.T) / 1000})
		}
		out = append(out, js)
	}
	return out, nil
}
