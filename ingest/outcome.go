package ingest

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/headroomdb/headroom/admit"
	"github.com/headroomdb/headroom/storage/series"
)

// Options configure every protocol's front end.
type Options struct {
	Limits Limits
	// Metrics, if set, counts what each protocol stored and refused.
	Metrics *Metrics
	// Gate, if set, bounds the requests in progress across protocols
	// (and sheds them over the memory budget).
	Gate *admit.Gate
}

// seriesError names the series of a request that made it fail, so the
// gRPC status can point at the field.
type seriesError struct {
	index int
	err   error
}

func (e *seriesError) Error() string { return fmt.Sprintf("series %d: %v", e.index, e.err) }
func (e *seriesError) Unwrap() error { return e.err }

// reason is the label under which /metrics counts a refusal.
func reason(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, series.ErrTooManySeries):
		return "active_series_limit"
	case errors.Is(err, admit.ErrBusy):
		return "busy"
	case errors.Is(err, ErrLimit):
		return "request_limit"
	case errors.Is(err, ErrSeriesLimit):
		return "series_limit"
	case errors.Is(err, ErrUnavailable), errors.Is(err, series.ErrClosed), errors.Is(err, series.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, series.ErrOutOfRetention):
		return "out_of_retention"
	case errors.Is(err, errBadBody):
		return "bad_body"
	case errors.Is(err, errSameMillisecond):
		return "same_millisecond"
	default:
		return "invalid"
	}
}

// errBadBody marks a request that could not be decoded at all.
var errBadBody = errors.New("bad request body")

// grpcStatus turns a write error into the status the client sees:
// InvalidArgument with a BadRequest detail naming the series,
// ResourceExhausted over a limit, Unavailable when it may be retried.
func grpcStatus(err error) error {
	var code codes.Code
	switch reason(err) {
	case "active_series_limit", "request_limit", "busy":
		code = codes.ResourceExhausted
	case "unavailable":
		code = codes.Unavailable
	default:
		code = codes.InvalidArgument
	}
	st := status.New(code, err.Error())
	var se *seriesError
	if code == codes.InvalidArgument && errors.As(err, &se) {
		if d, derr := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{
			Field:       fmt.Sprintf("series[%d]", se.index),
			Description: se.err.Error(),
		}}}); derr == nil {
			st = d
		}
	}
	if d := RetryAfter(err); d > 0 {
		if withRetry, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}); derr == nil {
			st = withRetry
		}
	}
	return st.Err()
}

// RetryAfter is how long a client should wait before sending a refused
// request again, or 0 when sending it again will not help.
func RetryAfter(err error) time.Duration {
	switch reason(err) {
	case "busy":
		return admit.RetryAfter
	case "unavailable":
		return 5 * time.Second
	}
	return 0
}

// httpError answers a refused write: the status, Retry-After when a
// later retry may pass, and the message.
func httpError(w http.ResponseWriter, err error) {
	if d := RetryAfter(err); d > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(d.Seconds())))
	}
	http.Error(w, err.Error(), httpStatus(err))
}

// httpStatus is the HTTP counterpart of grpcStatus.
func httpStatus(err error) int {
	switch reason(err) {
	case "active_series_limit", "busy":
		return http.StatusTooManyRequests
	case "request_limit":
		return http.StatusRequestEntityTooLarge
	case "unavailable":
		return http.StatusServiceUnavailable
	default:
		return http.StatusBadRequest
	}
}

// Metrics are the ingest counters exported on /metrics.
type Metrics struct {
	samples  *prometheus.CounterVec
	series   *prometheus.CounterVec
	rejected *prometheus.CounterVec
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the ingest metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		samples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headroom_ingest_samples_total", Help: "Samples stored, by protocol.",
		}, []string{"protocol"}),
		series: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headroom_ingest_series_total", Help: "Series in stored requests (a series sent twice counts twice), by protocol.",
		}, []string{"protocol"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headroom_ingest_rejected_samples_total", Help: "Samples refused, by protocol and reason.",
		}, []string{"protocol", "reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headroom_ingest_requests_total", Help: "Write requests, by protocol and outcome (ok or the reason of the refusal).",
		}, []string{"protocol", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "headroom_ingest_request_duration_seconds", Help: "Time from a decoded write request to its acknowledgement, by protocol.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"protocol"}),
	}
	reg.MustRegister(m.samples, m.series, m.rejected, m.requests, m.duration)
	return m
}

// observe records one request: n samples and s series stored, rejected
// samples refused for err's reason.
func (m *Metrics) observe(protocol string, start time.Time, stored, seriesN, rejected int, err error) {
	if m == nil {
		return
	}
	m.duration.WithLabelValues(protocol).Observe(time.Since(start).Seconds())
	m.requests.WithLabelValues(protocol, reason(err)).Inc()
	if stored > 0 {
		m.samples.WithLabelValues(protocol).Add(float64(stored))
		m.series.WithLabelValues(protocol).Add(float64(seriesN))
	}
	if rejected > 0 {
		m.rejected.WithLabelValues(protocol, reason(err)).Add(float64(rejected))
	}
}

// Reject counts a request refused before it reached a protocol handler
// (authentication, for example).
func (m *Metrics) Reject(protocol, why string) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(protocol, why).Inc()
}

// rejectPoints counts points refused inside a request that was otherwise
// stored (OTLP's partial success).
func (m *Metrics) rejectPoints(protocol, why string, n int) {
	if m == nil || n == 0 {
		return
	}
	m.rejected.WithLabelValues(protocol, why).Add(float64(n))
}
