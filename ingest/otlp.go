package ingest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/headroomdb/headroom/storage/series"
)

// OTLP implements opentelemetry.proto.collector.metrics.v1.MetricsService.
//
// Mapping (the one Prometheus's OTLP receiver uses, see README):
//   - metric names: characters outside [a-zA-Z0-9_:] become "_", the unit
//     is appended as a word (s -> _seconds, By -> _bytes, 1 -> _ratio for
//     gauges), monotonic cumulative sums get _total;
//   - attribute names: the same sanitising, a leading digit gets "key_";
//     names that collide after sanitising get their values joined by ";";
//   - resource: service.name (prefixed by service.namespace + "/") is job,
//     service.instance.id is instance, attributes named in
//     PromoteResourceAttributes become labels, and all other resource
//     attributes go on one target_info series per resource;
//   - scope: otel_scope_name and otel_scope_version labels;
//   - gauges and sums: one series per data point; delta sums are stored as
//     gauges of the per-interval change (use sum_over_time);
//   - histograms (cumulative): _bucket{le=...} with cumulative counts
//     including le="+Inf", _sum, _count; summaries: {quantile=...}, _sum,
//     _count;
//   - a data point flagged "no recorded value" stores the stale marker.
//
// Points that cannot be stored (delta histograms, exponential histograms,
// bad timestamps or labels, out of retention, over the active-series
// limit) are counted in partial_success with the first reasons; the rest
// of the request is stored, as the OTLP specification requires.
type OTLP struct {
	colmetricspb.UnimplementedMetricsServiceServer
	db   *appenderPool
	opts Options
	// PromoteResourceAttributes lists resource attributes copied onto
	// every series of the resource as labels.
	PromoteResourceAttributes []string
}

// NewOTLP returns the OTLP metrics service; register it with
// colmetricspb.RegisterMetricsServiceServer.
func NewOTLP(db Appendable, o Options) *OTLP {
	o.Limits = o.Limits.withDefaults()
	return &OTLP{db: newAppenderPool(db), opts: o}
}

// Export stores what it can of the request and reports the rest.
func (s *OTLP) Export(ctx context.Context, req *colmetricspb.ExportMetricsServiceRequest) (*colmetricspb.ExportMetricsServiceResponse, error) {
	start := time.Now()
	if n := countOTLPSamples(req); n > s.opts.Limits.SamplesPerRequest {
		err := fmt.Errorf("%w: request holds %d samples once mapped to series, the limit is %d", ErrLimit, n, s.opts.Limits.SamplesPerRequest)
		s.opts.Metrics.observe("otlp", start, 0, 0, n, err)
		return nil, grpcStatus(err)
	}
	app := s.db.get()
	defer s.db.put(app)
	c := otlpConverter{app: app, limits: s.opts.Limits, names: map[string]string{}, promote: s.PromoteResourceAttributes}
	for _, rm := range req.GetResourceMetrics() {
		c.resource(rm)
	}
	if c.appended > 0 {
		if err := c.app.Commit(); err != nil {
			err = fmt.Errorf("%w: commit: %v", ErrUnavailable, err)
			s.opts.Metrics.observe("otlp", start, 0, 0, c.appended, err)
			return nil, grpcStatus(err)
		}
	} else {
		c.app.Rollback()
	}
	s.opts.Metrics.observe("otlp", start, c.appended, c.appended, 0, nil)
	resp := &colmetricspb.ExportMetricsServiceResponse{}
	if c.rejected > 0 {
		for why, n := range c.rejectedBy {
			s.opts.Metrics.rejectPoints("otlp", why, n)
		}
		resp.PartialSuccess = &colmetricspb.ExportMetricsPartialSuccess{
			RejectedDataPoints: int64(c.rejected),
			ErrorMessage:       strings.Join(c.reasons, "; "),
		}
	}
	return resp, nil
}

// countOTLPSamples counts the samples a request maps to, before any of it
// is converted, so the request limit holds whatever the request's shape.
func countOTLPSamples(req *colmetricspb.ExportMetricsServiceRequest) int {
	n := 0
	for _, rm := range req.GetResourceMetrics() {
		n++ // target_info
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				switch d := m.GetData().(type) {
				case *metricspb.Metric_Gauge:
					n += len(d.Gauge.GetDataPoints())
				case *metricspb.Metric_Sum:
					n += len(d.Sum.GetDataPoints())
				case *metricspb.Metric_Histogram:
					for _, p := range d.Histogram.GetDataPoints() {
						n += 3 + len(p.GetExplicitBounds())
					}
				case *metricspb.Metric_Summary:
					for _, p := range d.Summary.GetDataPoints() {
						n += 2 + len(p.GetQuantileValues())
					}
				case *metricspb.Metric_ExponentialHistogram:
					n += len(d.ExponentialHistogram.GetDataPoints())
				}
			}
		}
	}
	return n
}

const maxOTLPReasons = 5

type otlpConverter struct {
	app     Appender
	limits  Limits
	names   map[string]string // attribute key -> label name
	promote []string

	base     series.Labels // resource and scope labels
	resBase  int           // len(base) after the resource labels
	ls       series.Labels // labels of the current data point
	tmp      series.Labels // scratch for one sample, sorted
	maxT     int64         // newest point of the resource, for target_info
	appended int

	rejected   int
	rejectedBy map[string]int // by /metrics reason
	reasons    []string
}

func (c *otlpConverter) reject(points int, metric string, err error) {
	c.rejected += points
	if c.rejectedBy == nil {
		c.rejectedBy = map[string]int{}
	}
	c.rejectedBy[reason(err)] += points
	if len(c.reasons) < maxOTLPReasons {
		c.reasons = append(c.reasons, fmt.Sprintf("metric %q: %v", metric, err))
	}
}

func (c *otlpConverter) resource(rm *metricspb.ResourceMetrics) {
	attrs := rm.GetResource().GetAttributes()
	c.base = c.base[:0]
	var job, ns, inst string
	for _, kv := range attrs {
		switch kv.GetKey() {
		case "service.name":
			job = anyString(kv.GetValue())
		case "service.namespace":
			ns = anyString(kv.GetValue())
		case "service.instance.id":
			inst = anyString(kv.GetValue())
		}
	}
	if ns != "" && job != "" {
		job = ns + "/" + job
	}
	if job != "" {
		c.base = append(c.base, series.Label{Name: "job", Value: job})
	}
	if inst != "" {
		c.base = append(c.base, series.Label{Name: "instance", Value: inst})
	}
	for _, name := range c.promote {
		for _, kv := range attrs {
			if kv.GetKey() == name {
				c.base = append(c.base, series.Label{Name: c.labelName(name), Value: anyString(kv.GetValue())})
			}
		}
	}
	c.resBase = len(c.base)
	c.maxT = -1
	for _, sm := range rm.GetScopeMetrics() {
		c.base = c.base[:c.resBase]
		if n := sm.GetScope().GetName(); n != "" {
			c.base = append(c.base, series.Label{Name: "otel_scope_name", Value: n})
		}
		if v := sm.GetScope().GetVersion(); v != "" {
			c.base = append(c.base, series.Label{Name: "otel_scope_version", Value: v})
		}
		for _, m := range sm.GetMetrics() {
			c.metric(m)
		}
	}
	// target_info carries the resource's other attributes once, not on
	// every series, as Prometheus does.
	c.base = c.base[:c.resBase]
	if c.maxT < 0 {
		return
	}
	c.ls = append(c.ls[:0], c.base...)
	extra := false
	for _, kv := range attrs {
		switch kv.GetKey() {
		case "service.name", "service.namespace", "service.instance.id":
			continue
		}
		extra = true
		c.ls = append(c.ls, series.Label{Name: c.labelName(kv.GetKey()), Value: anyString(kv.GetValue())})
	}
	if extra && (job != "" || inst != "") {
		if err := c.emit("target_info", "", "", c.maxT, 1); err != nil {
			c.reject(1, "target_info", err)
		}
	}
}

func (c *otlpConverter) metric(m *metricspb.Metric) {
	switch d := m.GetData().(type) {
	case *metricspb.Metric_Gauge:
		name := metricName(m.GetName(), m.GetUnit(), "gauge")
		for _, p := range d.Gauge.GetDataPoints() {
			c.number(name, m.GetName(), p)
		}
	case *metricspb.Metric_Sum:
		kind := "gauge"
		if d.Sum.GetIsMonotonic() && d.Sum.GetAggregationTemporality() == metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
			kind = "counter"
		}
		name := metricName(m.GetName(), m.GetUnit(), kind)
		for _, p := range d.Sum.GetDataPoints() {
			c.number(name, m.GetName(), p)
		}
	case *metricspb.Metric_Histogram:
		if d.Histogram.GetAggregationTemporality() != metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
			c.reject(len(d.Histogram.GetDataPoints()), m.GetName(), fmt.Errorf("%w: histogram with %s temporality: configure the exporter for cumulative temporality", series.ErrInvalid, d.Histogram.GetAggregationTemporality()))
			return
		}
		name := metricName(m.GetName(), m.GetUnit(), "histogram")
		for _, p := range d.Histogram.GetDataPoints() {
			c.histogram(name, m.GetName(), p)
		}
	case *metricspb.Metric_Summary:
		name := metricName(m.GetName(), m.GetUnit(), "summary")
		for _, p := range d.Summary.GetDataPoints() {
			c.summary(name, m.GetName(), p)
		}
	case *metricspb.Metric_ExponentialHistogram:
		c.reject(len(d.ExponentialHistogram.GetDataPoints()), m.GetName(), fmt.Errorf("%w: exponential histograms (native histograms) are not supported: use explicit buckets", series.ErrInvalid))
	default:
		c.reject(1, m.GetName(), fmt.Errorf("%w: metric has no data", series.ErrInvalid))
	}
}

// point starts the label set of one data point: resource, scope and point
// attributes. It returns the timestamp in milliseconds.
func (c *otlpConverter) point(attrs []*commonpb.KeyValue, tNanos uint64) (int64, error) {
	c.ls = append(c.ls[:0], c.base...)
	for _, kv := range attrs {
		if kv.GetKey() == "" {
			continue
		}
		c.ls = append(c.ls, series.Label{Name: c.labelName(kv.GetKey()), Value: anyString(kv.GetValue())})
	}
	if tNanos == 0 {
		return 0, fmt.Errorf("%w: data point has no time_unix_nano", series.ErrInvalid)
	}
	if tNanos > math.MaxInt64 {
		return 0, fmt.Errorf("%w: time_unix_nano %d is out of range", series.ErrInvalid, tNanos)
	}
	t := int64(tNanos / 1e6)
	if t > c.maxT {
		c.maxT = t
	}
	return t, nil
}

func (c *otlpConverter) number(name, orig string, p *metricspb.NumberDataPoint) {
	t, err := c.point(p.GetAttributes(), p.GetTimeUnixNano())
	if err != nil {
		c.reject(1, orig, err)
		return
	}
	var v float64
	switch x := p.GetValue().(type) {
	case *metricspb.NumberDataPoint_AsDouble:
		v = x.AsDouble
	case *metricspb.NumberDataPoint_AsInt:
		v = float64(x.AsInt)
	}
	stale := p.GetFlags()&uint32(metricspb.DataPointFlags_DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK) != 0
	if err := c.emit(name, "", "", t, staleOr(stale, v)); err != nil {
		c.reject(1, orig, err)
	}
}

func (c *otlpConverter) histogram(name, orig string, p *metricspb.HistogramDataPoint) {
	bounds, counts := p.GetExplicitBounds(), p.GetBucketCounts()
	if len(counts) != 0 && len(counts) != len(bounds)+1 {
		c.reject(1, orig, fmt.Errorf("%w: histogram point has %d bucket counts for %d bounds, want %d", series.ErrInvalid, len(counts), len(bounds), len(bounds)+1))
		return
	}
	t, stale, ok := c.aggregate(name, orig, p.GetAttributes(), p.GetTimeUnixNano(), p.GetFlags(), p.GetCount())
	if !ok {
		return
	}
	if p.Sum != nil {
		c.emitRest(orig, name+"_sum", "", "", t, staleOr(stale, p.GetSum()))
	}
	var cum uint64
	for i, b := range bounds {
		if i < len(counts) {
			cum += counts[i]
		}
		c.emitRest(orig, name+"_bucket", "le", formatFloat(b), t, staleOr(stale, float64(cum)))
	}
	c.emitRest(orig, name+"_bucket", "le", "+Inf", t, staleOr(stale, float64(p.GetCount())))
}

func (c *otlpConverter) summary(name, orig string, p *metricspb.SummaryDataPoint) {
	t, stale, ok := c.aggregate(name, orig, p.GetAttributes(), p.GetTimeUnixNano(), p.GetFlags(), p.GetCount())
	if !ok {
		return
	}
	c.emitRest(orig, name+"_sum", "", "", t, staleOr(stale, p.GetSum()))
	for _, q := range p.GetQuantileValues() {
		c.emitRest(orig, name, "quantile", formatFloat(q.GetQuantile()), t, staleOr(stale, q.GetValue()))
	}
}

// aggregate starts a histogram or summary point: its labels, its time and
// its _count sample. The first sample decides the point's fate (retention
// and label problems are the same for all of its series): ok is false
// when the point was rejected.
func (c *otlpConverter) aggregate(name, orig string, attrs []*commonpb.KeyValue, tNanos uint64, flags uint32, count uint64) (t int64, stale, ok bool) {
	t, err := c.point(attrs, tNanos)
	if err != nil {
		c.reject(1, orig, err)
		return 0, false, false
	}
	stale = flags&uint32(metricspb.DataPointFlags_DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK) != 0
	if err := c.emit(name+"_count", "", "", t, staleOr(stale, float64(count))); err != nil {
		c.reject(1, orig, err)
		return 0, false, false
	}
	return t, stale, true
}

// staleOr is v, or the stale marker for a point flagged "no recorded
// value".
func staleOr(stale bool, v float64) float64 {
	if stale {
		return series.StaleNaN
	}
	return v
}

// emitRest stores a further sample of a point whose first sample was
// stored; a failure here (the active-series limit) is still reported.
func (c *otlpConverter) emitRest(orig, name, extraName, extraValue string, t int64, v float64) {
	if err := c.emit(name, extraName, extraValue, t, v); err != nil {
		c.reject(0, orig, err)
	}
}

// emit appends one sample of c.ls plus __name__ and an optional extra
// label (le, quantile).
func (c *otlpConverter) emit(name, extraName, extraValue string, t int64, v float64) error {
	ls := append(append(c.tmp[:0], c.ls...), series.Label{Name: series.MetricName, Value: name})
	if extraName != "" {
		ls = append(ls, series.Label{Name: extraName, Value: extraValue})
	}
	ls.Sort()
	ls = mergeDuplicates(ls)
	c.tmp = ls
	if err := c.limits.checkLabels(ls); err != nil {
		return err
	}
	if err := c.app.Append(ls, t, v); err != nil {
		return err
	}
	c.appended++
	return nil
}

// mergeDuplicates joins the values of labels that sanitising made equal
// ("a.b" and "a_b"), as Prometheus does; ls is sorted, so they are
// adjacent. Sorting is stable only by name, so the order of the joined
// values follows the attributes' order.
func mergeDuplicates(ls series.Labels) series.Labels {
	for i := 1; i < len(ls); i++ {
		if ls[i].Name == ls[i-1].Name {
			out := ls[:i]
			for _, l := range ls[i:] {
				if last := &out[len(out)-1]; l.Name == last.Name {
					last.Value += ";" + l.Value
				} else {
					out = append(out, l)
				}
			}
			return out
		}
	}
	return ls
}

// labelName sanitises an attribute key, cached per request: the same keys
// come back on every data point.
func (c *otlpConverter) labelName(key string) string {
	if n, ok := c.names[key]; ok {
		return n
	}
	n := sanitize(key, false)
	if n != "" && n[0] >= '0' && n[0] <= '9' {
		n = "key_" + n
	} else if strings.HasPrefix(n, "_") && !strings.HasPrefix(n, "__") {
		n = "key" + n
	}
	c.names[key] = n
	return n
}

// sanitize replaces characters a Prometheus name may not hold with "_"
// (metric names may also hold ':').
func sanitize(s string, colon bool) string {
	ok := func(r rune) bool {
		return r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || (colon && r == ':')
	}
	clean := true
	for _, r := range s {
		if !ok(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if ok(r) {
			return r
		}
		return '_'
	}, s)
}

// units maps UCUM units of OpenTelemetry's semantic conventions to the
// words Prometheus metric names use.
var units = map[string]string{
	"d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds",
	"By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tibibytes",
	"KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
	"m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
	"Cel": "celsius", "Hz": "hertz", "%": "percent",
}

// perUnits maps the denominator of a rate unit ("By/s").
var perUnits = map[string]string{"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}

// metricName builds the Prometheus name of an OTLP metric: sanitised,
// with the unit and, for counters, _total appended.
func metricName(name, unit, kind string) string {
	n := sanitize(name, true)
	// Collapse the runs of "_" that sanitising dotted names leaves.
	for strings.Contains(n, "__") {
		n = strings.ReplaceAll(n, "__", "_")
	}
	n = strings.Trim(n, "_")
	if n == "" {
		n = "unnamed"
	}
	if n[0] >= '0' && n[0] <= '9' {
		n = "_" + n
	}
	words := strings.Split(n, "_")
	has := func(w string) bool {
		for _, x := range words {
			if x == w {
				return true
			}
		}
		return false
	}
	var suffix []string
	if i := strings.IndexByte(unit, '{'); i >= 0 {
		unit = unit[:i] // annotations like {requests} carry no unit
	}
	main, per, _ := strings.Cut(unit, "/")
	if w, ok := units[main]; ok && !has(w) {
		suffix = append(suffix, w)
	}
	if w, ok := perUnits[per]; ok && !has(w) {
		suffix = append(suffix, "per", w)
	}
	if main == "1" && per == "" && kind == "gauge" && !has("ratio") {
		suffix = append(suffix, "ratio")
	}
	if kind == "counter" {
		n = strings.TrimSuffix(n, "_total")
		suffix = append(suffix, "total")
	}
	if len(suffix) > 0 {
		n += "_" + strings.Join(suffix, "_")
	}
	return n
}

func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// anyString renders an attribute value as a label value.
func anyString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'f', -1, 64)
	case *commonpb.AnyValue_BytesValue:
		return base64.StdEncoding.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue, *commonpb.AnyValue_KvlistValue:
		b, err := json.Marshal(anyJSON(v))
		if err != nil {
			return ""
		}
		return string(b)
	}
	return ""
}

func anyJSON(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_ArrayValue:
		out := make([]any, 0, len(x.ArrayValue.GetValues()))
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, anyJSON(e))
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		out := map[string]any{}
		for _, kv := range x.KvlistValue.GetValues() {
			out[kv.GetKey()] = anyJSON(kv.GetValue())
		}
		return out // json.Marshal sorts the keys
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	}
	return anyString(v)
}
