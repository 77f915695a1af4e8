package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage/series"
)

// Prometheus's error types for evaluation.
const (
	errTimeout  = "timeout"  // 503
	errCanceled = "canceled" // 499
)

// queryData is the "data" of /api/v1/query and /api/v1/query_range.
type queryData struct {
	ResultType string      `json:"resultType"`
	Result     any         `json:"result"`
	Stats      *queryStats `json:"stats,omitempty"`
}

// queryStats is Prometheus's answer to the stats parameter, in seconds
// and samples. Headroom counts the samples a query loads, not how many
// it held at once: peakSamples is that count, an upper bound; the
// per-step counts of stats=all are not kept.
type queryStats struct {
	Timings struct {
		EvalTotalTime        float64 `json:"evalTotalTime"`
		ResultSortTime       float64 `json:"resultSortTime"`
		QueryPreparationTime float64 `json:"queryPreparationTime"`
		InnerEvalTime        float64 `json:"innerEvalTime"`
		ExecQueueTime        float64 `json:"execQueueTime"`
		ExecTotalTime        float64 `json:"execTotalTime"`
	} `json:"timings"`
	Samples struct {
		TotalQueryableSamples int `json:"totalQueryableSamples"`
		PeakSamples           int `json:"peakSamples"`
	} `json:"samples"`
}

// withStats adds the stats the request asked for (any value of stats).
func withStats(r *http.Request, res *query.Result, d queryData) queryData {
	if r.Form.Get("stats") == "" {
		return d
	}
	st := &queryStats{}
	st.Timings.EvalTotalTime = res.Eval.Seconds()
	st.Timings.InnerEvalTime = res.Eval.Seconds()
	st.Timings.QueryPreparationTime = res.Parse.Seconds()
	st.Timings.ExecQueueTime = res.Queue.Seconds()
	st.Timings.ExecTotalTime = (res.Parse + res.Queue + res.Eval).Seconds()
	st.Samples.TotalQueryableSamples = res.Samples
	st.Samples.PeakSamples = res.Samples
	d.Stats = st
	return d
}

// sample is [seconds, "value"], as Prometheus encodes points.
type sample struct {
	t int64
	v string
}

func (s sample) MarshalJSON() ([]byte, error) {
	b := []byte{'['}
	b = strconv.AppendFloat(b, float64(s.t)/1000, 'f', -1, 64)
	b = append(b, ',')
	b = strconv.AppendQuote(b, s.v)
	return append(b, ']'), nil
}

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

type vectorElem struct {
	Metric    map[string]string `json:"metric"`
	Value     *sample           `json:"value,omitempty"`
	Histogram *histSample       `json:"histogram,omitempty"`
}

type matrixElem struct {
	Metric     map[string]string `json:"metric"`
	Values     []sample          `json:"values,omitempty"`
	Histograms []histSample      `json:"histograms,omitempty"`
}

// histSample is [seconds, {"count", "sum", "buckets"}], as Prometheus
// encodes a native histogram: each bucket that holds something as
// [boundary rule, lower, upper, count], the rule 0 for (lower, upper],
// 1 for [lower, upper), 2 for (lower, upper), 3 for [lower, upper].
type histSample struct {
	t int64
	h *query.FloatHistogram
}

func (s histSample) MarshalJSON() ([]byte, error) {
	b := []byte{'['}
	b = strconv.AppendFloat(b, float64(s.t)/1000, 'f', -1, 64)
	b = append(b, `,{"count":`...)
	b = strconv.AppendQuote(b, formatValue(s.h.Count))
	b = append(b, `,"sum":`...)
	b = strconv.AppendQuote(b, formatValue(s.h.Sum))
	first := true
	for _, bk := range query.HistogramBuckets(s.h) {
		if first {
			b = append(b, `,"buckets":[`...)
			first = false
		} else {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(bk.Boundaries), 10)
		for _, f := range []float64{bk.Lower, bk.Upper, bk.Count} {
			b = append(b, ',')
			b = strconv.AppendQuote(b, formatValue(f))
		}
		b = append(b, ']')
	}
	if !first {
		b = append(b, ']')
	}
	return append(b, "}]"...), nil
}

func metricMap(ls series.Labels) map[string]string {
	m := make(map[string]string, len(ls))
	for _, l := range ls {
		m[l.Name] = l.Value
	}
	return m
}

func encodeResult(r *query.Result) queryData {
	switch r.Type {
	case "scalar":
		return queryData{ResultType: "scalar", Result: sample{r.Scalar.T, formatValue(r.Scalar.V)}}
	case "string":
		return queryData{ResultType: "string", Result: sample{r.Scalar.T, r.String}}
	case "vector":
		out := make([]vectorElem, 0, len(r.Series))
		for _, s := range r.Series {
			if len(s.Histograms) > 0 {
				out = append(out, vectorElem{Metric: metricMap(s.Labels), Histogram: &histSample{s.Histograms[0].T, s.Histograms[0].H}})
				continue
			}
			out = append(out, vectorElem{Metric: metricMap(s.Labels), Value: &sample{s.Points[0].T, formatValue(s.Points[0].V)}})
		}
		return queryData{ResultType: "vector", Result: out}
	}
	out := make([]matrixElem, 0, len(r.Series))
	for _, s := range r.Series {
		var vs []sample
		if len(s.Points) > 0 {
			vs = make([]sample, len(s.Points))
			for i, p := range s.Points {
				vs[i] = sample{p.T, formatValue(p.V)}
			}
		}
		var hs []histSample
		for _, p := range s.Histograms {
			hs = append(hs, histSample{p.T, p.H})
		}
		out = append(out, matrixElem{Metric: metricMap(s.Labels), Values: vs, Histograms: hs})
	}
	return queryData{ResultType: "matrix", Result: out}
}

// parseDuration reads a step or timeout: seconds (fractions allowed) or
// a Prometheus duration (1m, 1h30m, 1d).
func parseDuration(r *http.Request, name string) (time.Duration, error) {
	s := r.Form.Get(name)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		ts := f * float64(time.Second)
		if ts > float64(math.MaxInt64) || ts < float64(math.MinInt64) || math.IsNaN(ts) {
			return 0, badData("invalid parameter %q: cannot parse %q to a valid duration. It overflows int64", name, s)
		}
		return time.Duration(ts), nil
	}
	d, err := model.ParseDuration(s)
	if err != nil {
		return 0, badData("invalid parameter %q: cannot parse %q to a valid duration", name, s)
	}
	return time.Duration(d), nil
}

// evalContext applies the timeout parameter.
func evalContext(r *http.Request) (context.Context, context.CancelFunc, error) {
	// tier: auto (default), raw, or a rollup tier (5m, 1h, 1d), like
	// Thanos's max_source_resolution but naming the tier to read.
	ctx := query.WithTier(r.Context(), r.Form.Get("tier"))
	// lookback_delta: this query's, as Prometheus accepts it.
	if r.Form.Get("lookback_delta") != "" {
		d, err := parseDuration(r, "lookback_delta")
		if err != nil {
			return nil, nil, err
		}
		ctx = query.WithLookbackDelta(ctx, d)
	}
	if r.Form.Get("timeout") == "" {
		// No derived cancel context: the request's own cancellation (the
		// client leaving) is then seen by the engine at once, not when a
		// derived context catches up with it.
		return ctx, func() {}, nil
	}
	d, err := parseDuration(r, "timeout")
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, cancel, nil
}

// withHeaders carries response headers, and the envelope's warnings and
// infos, out of a handler function.
type withHeaders struct {
	data     any
	headers  map[string]string
	warnings []string
	infos    []string
}

// answer encodes a result, saying which data tiers served it and where
// it may be incomplete.
func answer(r *http.Request, res *query.Result) any {
	return withHeaders{withStats(r, res, encodeResult(res)), map[string]string{"X-Headroom-Tier": strings.Join(res.Tiers, ",")}, res.Warnings, res.Infos}
}

// limitSeries applies a query's limit parameter (Prometheus 3): at most
// that many series of a vector or matrix, with its warning; 0: all.
func limitSeries(res *query.Result, limit int) {
	if limit == 0 || len(res.Series) <= limit {
		return
	}
	res.Series = res.Series[:limit]
	res.Warnings = append(res.Warnings, "results truncated due to limit")
}

// evalError maps engine errors to Prometheus's error types.
func evalError(err error) error {
	var perr parser.ParseErrors
	switch {
	case errors.As(err, &perr):
		// Worded as Prometheus words a query that does not parse.
		return &apiError{typ: errBadData, err: fmt.Errorf("invalid parameter \"query\": %w", perr)}
	case errors.Is(err, query.ErrBadQuery):
		return &apiError{typ: errBadData, err: err}
	case errors.Is(err, query.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return &apiError{typ: errTimeout, err: err}
	case errors.Is(err, context.Canceled):
		return &apiError{typ: errCanceled, err: err}
	case errors.Is(err, query.ErrTooLarge), errors.Is(err, query.ErrExec):
		return &apiError{typ: errExec, err: err}
	}
	return err
}

func (a *API) instantQuery(r *http.Request) (any, error) {
	q := r.Form.Get("query")
	if strings.TrimSpace(q) == "" {
		return nil, badData("invalid parameter \"query\": empty query")
	}
	t, err := parseTime(r, "time", time.Now().UnixMilli())
	if err != nil {
		return nil, err
	}
	ctx, cancel, err := evalContext(r)
	if err != nil {
		return nil, err
	}
	defer cancel()
	limit, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	res, err := a.engine.Instant(ctx, a.src, q, t)
	if err != nil {
		return nil, evalError(err)
	}
	limitSeries(res, limit)
	return answer(r, res), nil
}

func (a *API) rangeQuery(r *http.Request) (any, error) {
	q := r.Form.Get("query")
	if strings.TrimSpace(q) == "" {
		return nil, badData("invalid parameter \"query\": empty query")
	}
	for _, p := range []string{"start", "end", "step"} {
		if r.Form.Get(p) == "" {
			return nil, badData("invalid parameter %q: missing", p)
		}
	}
	start, err := parseTime(r, "start", 0)
	if err != nil {
		return nil, err
	}
	end, err := parseTime(r, "end", 0)
	if err != nil {
		return nil, err
	}
	if end < start {
		return nil, badData("invalid parameter \"end\": end timestamp must not be before start time")
	}
	step, err := parseDuration(r, "step")
	if err != nil {
		return nil, err
	}
	if step <= 0 {
		return nil, badData("invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer")
	}
	if (end-start)/step.Milliseconds() > 11000 {
		return nil, badData("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")
	}
	ctx, cancel, err := evalContext(r)
	if err != nil {
		return nil, err
	}
	defer cancel()
	limit, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	res, err := a.engine.Range(ctx, a.src, q, start, end, step.Milliseconds())
	if err != nil {
		return nil, evalError(err)
	}
	limitSeries(res, limit)
	return answer(r, res), nil
}
