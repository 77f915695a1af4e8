package ingest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

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

// NewOTLP returns the OTLP metrics service. Register it with Register, on
// a server created with ServerOptions; colmetricspb.
// RegisterMetricsServiceServer works too, through the generated decoder.
func NewOTLP(db Appendable, o Options) *OTLP {
	o.Limits = o.Limits.withDefaults()
	return &OTLP{db: newAppenderPool(db), opts: o}
}

// Export stores what it can of a decoded request and reports the rest.
// The server's path is Register's, which decodes the wire itself.
func (s *OTLP) Export(ctx context.Context, req *colmetricspb.ExportMetricsServiceRequest) (*colmetricspb.ExportMetricsServiceResponse, error) {
	return s.handle(ctx, func(o *oRequest) error {
		fromProto(req, o)
		return nil
	})
}

// handle admits a request, fills a pooled light form with fill and stores
// it; a fill error is a malformed request.
func (s *OTLP) handle(ctx context.Context, fill func(*oRequest) error) (*colmetricspb.ExportMetricsServiceResponse, error) {
	if err := s.opts.admit(ctx, "otlp"); err != nil {
		return nil, err
	}
	defer s.opts.Gate.Leave()
	o := oPool.Get().(*oRequest)
	defer func() { o.reset(); oPool.Put(o) }()
	if err := fill(o); err != nil {
		s.opts.Metrics.Reject("otlp", reason(err))
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return s.export(o)
}

var oPool = sync.Pool{New: func() any { return &oRequest{} }}

// Register registers the metrics service on s, whose Export decodes the
// request without the generated decoder. s must have been created with
// ServerOptions.
func (s *OTLP) Register(srv grpc.ServiceRegistrar) {
	d := colmetricspb.MetricsService_ServiceDesc
	d.Methods = []grpc.MethodDesc{{MethodName: "Export", Handler: rawHandler(colmetricspb.MetricsService_Export_FullMethodName, func(ctx context.Context, b []byte) (any, error) {
		return s.exportRaw(ctx, b)
	})}}
	srv.RegisterService(&d, s)
}

// exportRaw decodes a request body (ours: never reused, so strings may
// share its memory) and stores it.
func (s *OTLP) exportRaw(ctx context.Context, body []byte) (*colmetricspb.ExportMetricsServiceResponse, error) {
	return s.handle(ctx, func(o *oRequest) error {
		err := decodeOTLP(body, o)
		if !errors.Is(err, errFallback) {
			return err
		}
		o.reset()
		var req colmetricspb.ExportMetricsServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			return &wireError{msg: err.Error()}
		}
		fromProto(&req, o)
		return nil
	})
}

func (s *OTLP) export(o *oRequest) (*colmetricspb.ExportMetricsServiceResponse, error) {
	start := time.Now()
	if n := countOTLPSamples(o); n > s.opts.Limits.SamplesPerRequest {
		err := fmt.Errorf("%w: request holds %d samples once mapped to series, the limit is %d", ErrLimit, n, s.opts.Limits.SamplesPerRequest)
		s.opts.Metrics.observe("otlp", start, 0, 0, n, err)
		return nil, grpcStatus(err)
	}
	app := s.db.get()
	defer s.db.put(app)
	c := convPool.Get().(*otlpConverter)
	defer c.release()
	c.app, c.limits, c.promote, c.o = app, s.opts.Limits, s.PromoteResourceAttributes, o
	for _, r := range o.resources {
		c.resource(r)
	}
	var refused map[uint64]bool // series the commit left out
	if c.appended > 0 {
		var err error
		rejected := 0
		if pc, ok := c.app.(PartialCommitter); ok {
			if refused, rejected, err = pc.CommitPartial(); err != nil && rejected > 0 && errors.Is(err, series.ErrTooManySeries) {
				// Taken without the series past a limit, as a single
				// node rejects their points at Append.
				c.appended -= rejected
				c.rejected += rejected
				if c.rejectedBy == nil {
					c.rejectedBy = map[string]int{}
				}
				c.rejectedBy[reason(err)] += rejected
				if len(c.reasons) < maxOTLPReasons {
					c.reasons = append(c.reasons, err.Error())
				}
				err = nil
			}
		} else {
			err = c.app.Commit()
		}
		if err != nil {
			err = commitError(err)
			s.opts.Metrics.observe("otlp", start, 0, 0, c.appended, err)
			return nil, grpcStatus(err)
		}
	} else {
		c.app.Rollback()
	}
	keepMetadata(s.db.db, c.meta)
	if ea, ok := s.db.db.(ExemplarAdder); ok && c.appended > 0 {
		for _, x := range c.exemplars {
			if refused != nil && refused[x.ls.Hash()] {
				continue // its series' points were not taken either
			}
			_ = ea.AddExemplar(x.ls, x.e) // one refused (labels too long) is skipped
		}
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

var convPool = sync.Pool{New: func() any { return &otlpConverter{names: map[string]string{}} }}

// release clears what refers to the request and pools c.
func (c *otlpConverter) release() {
	clear(c.names)
	clear(c.base)
	clear(c.ls)
	clear(c.tmp)
	clear(c.meta)
	clear(c.exemplars)
	*c = otlpConverter{names: c.names, base: c.base[:0], ls: c.ls[:0], tmp: c.tmp[:0], meta: c.meta[:0], exemplars: c.exemplars[:0]}
	convPool.Put(c)
}

// countOTLPSamples counts the samples a request maps to, before any of it
// is converted, so the request limit holds whatever the request's shape.
func countOTLPSamples(o *oRequest) int {
	n := len(o.resources) // target_info
	for _, m := range o.metrics {
		switch m.kind {
		case kindHistogram:
			for _, p := range o.points[m.points.lo:m.points.hi] {
				n += 3 + p.bounds.len()
			}
		case kindSummary:
			for _, p := range o.points[m.points.lo:m.points.hi] {
				n += 2 + p.quants.len()
			}
		default:
			n += m.points.len()
		}
	}
	return n
}

const maxOTLPReasons = 5

type otlpConverter struct {
	o       *oRequest
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

	// meta: the metadata of the metrics converted (Prometheus's name
	// and type, the OTLP unit and description).
	meta []wireMetadata
	// exemplars of the samples appended, for the exemplar store.
	exemplars []otlpExemplar

	rejected   int
	rejectedBy map[string]int // by /metrics reason
	reasons    []string

	// OTLP times are nanoseconds and a series keeps one sample a
	// millisecond: a second point of a series in the same millisecond
	// would replace the first without a word. The points of a series
	// are those of one metric with the same attributes, so seen holds,
	// for the current metric (when it has more than one point), each
	// point's attributes (hashed) and millisecond.
	checkSame bool
	seen      map[msKey]struct{}
}

type msKey struct {
	attrs uint64
	t     int64
}

// errSameMillisecond rejects a point of a series that already has one in
// the same millisecond of the request.
var errSameMillisecond = fmt.Errorf("%w: another point of the series in the same request has the same millisecond (a series keeps one sample a millisecond; the first is kept)", series.ErrInvalid)

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

func (c *otlpConverter) resource(r oResource) {
	attrs := c.o.kvs[r.attrs.lo:r.attrs.hi]
	c.base = c.base[:0]
	var job, ns, inst string
	for _, kv := range attrs {
		switch kv.key {
		case "service.name":
			job = labelValue(kv.val)
		case "service.namespace":
			ns = labelValue(kv.val)
		case "service.instance.id":
			inst = labelValue(kv.val)
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
			if kv.key == name {
				c.base = append(c.base, series.Label{Name: c.labelName(name), Value: labelValue(kv.val)})
			}
		}
	}
	c.resBase = len(c.base)
	c.maxT = -1
	for _, sc := range c.o.scopes[r.scopes.lo:r.scopes.hi] {
		c.base = c.base[:c.resBase]
		if sc.name != "" {
			c.base = append(c.base, series.Label{Name: "otel_scope_name", Value: sc.name})
		}
		if sc.version != "" {
			c.base = append(c.base, series.Label{Name: "otel_scope_version", Value: sc.version})
		}
		for _, m := range c.o.metrics[sc.metrics.lo:sc.metrics.hi] {
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
		switch kv.key {
		case "service.name", "service.namespace", "service.instance.id":
			continue
		}
		extra = true
		c.ls = append(c.ls, series.Label{Name: c.labelName(kv.key), Value: labelValue(kv.val)})
	}
	if extra && (job != "" || inst != "") {
		if err := c.emit("target_info", "", "", c.maxT, 1); err != nil {
			c.reject(1, "target_info", err)
		}
	}
}

func (c *otlpConverter) metric(m oMetric) {
	points := c.o.points[m.points.lo:m.points.hi]
	if m.name == "" {
		// The data model requires a name; inventing one would merge
		// every nameless metric of every exporter into one series.
		c.reject(max(len(points), 1), m.name, fmt.Errorf("%w: metric without a name", series.ErrInvalid))
		return
	}
	if c.checkSame = len(points) > 1; c.checkSame {
		// Sized to this metric: clearing a map grown by a large metric
		// would cost its whole capacity for each small one after it.
		c.seen = make(map[msKey]struct{}, len(points))
	}
	keep := func(name, typ string) {
		if len(c.meta) == 0 || c.meta[len(c.meta)-1].metric != name {
			c.meta = append(c.meta, wireMetadata{metric: name, md: series.Metadata{Type: typ, Unit: m.unit, Help: m.help}})
		}
	}
	switch m.kind {
	case kindGauge:
		name := metricName(m.name, m.unit, "gauge")
		keep(name, "gauge")
		for i := range points {
			c.number(name, m.name, &points[i])
		}
	case kindSum:
		kind := "gauge"
		if m.monotonic && m.temporality == metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
			kind = "counter"
		}
		name := metricName(m.name, m.unit, kind)
		keep(name, kind)
		for i := range points {
			c.number(name, m.name, &points[i])
		}
	case kindHistogram:
		if m.temporality != metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
			c.reject(len(points), m.name, fmt.Errorf("%w: histogram with %s temporality: configure the exporter for cumulative temporality", series.ErrInvalid, m.temporality))
			return
		}
		name := metricName(m.name, m.unit, "histogram")
		keep(name, "histogram")
		for i := range points {
			c.histogram(name, m.name, &points[i])
		}
	case kindSummary:
		name := metricName(m.name, m.unit, "summary")
		keep(name, "summary")
		for i := range points {
			c.summary(name, m.name, &points[i])
		}
	case kindExpHistogram:
		if m.temporality != metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
			c.reject(len(points), m.name, fmt.Errorf("%w: exponential histogram with %s temporality: native histograms are cumulative, configure the exporter for cumulative temporality", series.ErrInvalid, m.temporality))
			return
		}
		name := metricName(m.name, m.unit, "histogram")
		keep(name, "histogram")
		for i := range points {
			c.expHistogram(name, m.name, &points[i])
		}
	default:
		c.reject(1, m.name, fmt.Errorf("%w: metric has no data", series.ErrInvalid))
	}
}

// point starts the label set of one data point: resource, scope and point
// attributes. It returns the timestamp in milliseconds.
func (c *otlpConverter) point(attrs span, tNanos uint64) (int64, error) {
	c.ls = append(c.ls[:0], c.base...)
	for _, kv := range c.o.kvs[attrs.lo:attrs.hi] {
		if kv.key == "" {
			continue
		}
		c.ls = append(c.ls, series.Label{Name: c.labelName(kv.key), Value: labelValue(kv.val)})
	}
	if tNanos == 0 {
		return 0, fmt.Errorf("%w: data point has no time_unix_nano", series.ErrInvalid)
	}
	if tNanos > math.MaxInt64 {
		return 0, fmt.Errorf("%w: time_unix_nano %d is out of range", series.ErrInvalid, tNanos)
	}
	t := int64(tNanos / 1e6)
	if c.checkSame {
		k := msKey{c.ls[len(c.base):].MemHash(), t}
		if _, dup := c.seen[k]; dup {
			return 0, errSameMillisecond
		}
		c.seen[k] = struct{}{}
	}
	if t > c.maxT {
		c.maxT = t
	}
	return t, nil
}

func (c *otlpConverter) number(name, orig string, p *oPoint) {
	t, err := c.point(p.attrs, p.time)
	if err != nil {
		c.reject(1, orig, err)
		return
	}
	if err := c.emit(name, "", "", t, staleOr(noValue(p.flags), p.value)); err != nil {
		c.reject(1, orig, err)
		return
	}
	for _, x := range c.o.exemplars[p.ex.lo:p.ex.hi] {
		c.exemplar(x)
	}
}

// otlpExemplar is an exemplar of an appended sample's series.
type otlpExemplar struct {
	ls series.Labels
	e  series.Exemplar
}

// exemplar keeps x for the series of the sample just emitted (c.tmp),
// labelled with its trace and span, as Prometheus converts them.
func (c *otlpConverter) exemplar(x oExemplar) {
	var el series.Labels
	if x.spanID != "" {
		el = append(el, series.Label{Name: "span_id", Value: x.spanID})
	}
	if x.trace != "" {
		el = append(el, series.Label{Name: "trace_id", Value: x.trace})
	}
	c.exemplars = append(c.exemplars, otlpExemplar{ls: c.tmp.Copy(), e: series.Exemplar{Labels: el, Value: x.value, T: int64(x.time / 1e6)}})
}

// expHistogram stores an exponential histogram point as one native
// histogram sample (exphist.go maps the scale and buckets).
func (c *otlpConverter) expHistogram(name, orig string, p *oPoint) {
	t, err := c.point(p.attrs, p.time)
	if err != nil {
		c.reject(1, orig, err)
		return
	}
	if noValue(p.flags) {
		// No histogram to store: the series ends as a float series does.
		if err := c.emit(name, "", "", t, series.StaleNaN); err != nil {
			c.reject(1, orig, err)
		}
		return
	}
	h, err := expHistogram(p.scale, p.zeroThreshold, p.zeroCount, p.count, p.sum, p.hasSum,
		expBuckets{p.posOff, c.o.uints[p.counts.lo:p.counts.hi]}, expBuckets{p.negOff, c.o.uints[p.neg.lo:p.neg.hi]})
	if err == nil {
		err = c.emitHistogram(name, t, &h)
	}
	if err != nil {
		c.reject(1, orig, err)
		return
	}
	for _, x := range c.o.exemplars[p.ex.lo:p.ex.hi] {
		c.exemplar(x)
	}
}

func (c *otlpConverter) histogram(name, orig string, p *oPoint) {
	bounds, counts := c.o.floats[p.bounds.lo:p.bounds.hi], c.o.uints[p.counts.lo:p.counts.hi]
	if len(counts) != 0 && len(counts) != len(bounds)+1 {
		c.reject(1, orig, fmt.Errorf("%w: histogram point has %d bucket counts for %d bounds, want %d", series.ErrInvalid, len(counts), len(bounds), len(bounds)+1))
		return
	}
	t, ok := c.aggregate(name, orig, p)
	if !ok {
		return
	}
	stale := noValue(p.flags)
	if p.hasSum {
		c.emitRest(orig, name+"_sum", "", "", t, staleOr(stale, p.sum))
	}
	// An exemplar goes to the bucket its value falls in.
	exs := c.o.exemplars[p.ex.lo:p.ex.hi]
	bucketOf := func(v float64) int {
		for i, b := range bounds {
			if v <= b {
				return i
			}
		}
		return len(bounds)
	}
	var cum uint64
	for i, b := range bounds {
		if i < len(counts) {
			cum += counts[i]
		}
		if err := c.emit(name+"_bucket", "le", formatFloat(b), t, staleOr(stale, float64(cum))); err != nil {
			c.reject(0, orig, err)
			continue
		}
		for _, x := range exs {
			if bucketOf(x.value) == i {
				c.exemplar(x)
			}
		}
	}
	if err := c.emit(name+"_bucket", "le", "+Inf", t, staleOr(stale, float64(p.count))); err != nil {
		c.reject(0, orig, err)
		return
	}
	for _, x := range exs {
		if bucketOf(x.value) == len(bounds) {
			c.exemplar(x)
		}
	}
}

func (c *otlpConverter) summary(name, orig string, p *oPoint) {
	t, ok := c.aggregate(name, orig, p)
	if !ok {
		return
	}
	stale := noValue(p.flags)
	c.emitRest(orig, name+"_sum", "", "", t, staleOr(stale, p.sum))
	for _, q := range c.o.quants[p.quants.lo:p.quants.hi] {
		c.emitRest(orig, name, "quantile", formatFloat(q.q), t, staleOr(stale, q.v))
	}
}

// aggregate starts a histogram or summary point: its labels, its time and
// its _count sample. The first sample decides the point's fate (retention
// and label problems are the same for all of its series): ok is false
// when the point was rejected.
func (c *otlpConverter) aggregate(name, orig string, p *oPoint) (int64, bool) {
	t, err := c.point(p.attrs, p.time)
	if err != nil {
		c.reject(1, orig, err)
		return 0, false
	}
	if err := c.emit(name+"_count", "", "", t, staleOr(noValue(p.flags), float64(p.count))); err != nil {
		c.reject(1, orig, err)
		return 0, false
	}
	return t, true
}

// noValue reports the "no recorded value" flag: the point marks the end
// of a series, stored as Prometheus's stale marker.
func noValue(flags uint32) bool {
	return flags&uint32(metricspb.DataPointFlags_DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK) != 0
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
	ls, err := c.seriesLabels(name, extraName, extraValue)
	if err != nil {
		return err
	}
	if err := c.app.Append(ls, t, v); err != nil {
		return err
	}
	c.appended++
	return nil
}

// seriesLabels builds (in c.tmp) and checks the labels of the point's
// series name, with one extra label when extraName is set.
func (c *otlpConverter) seriesLabels(name, extraName, extraValue string) (series.Labels, error) {
	ls := append(append(c.tmp[:0], c.ls...), series.Label{Name: series.MetricName, Value: name})
	if extraName != "" {
		ls = append(ls, series.Label{Name: extraName, Value: extraValue})
	}
	ls.Sort()
	ls = mergeDuplicates(ls)
	c.tmp = ls
	return ls, c.limits.checkLabels(ls)
}

// emitHistogram appends a native histogram sample of the series name
// with the point's labels.
func (c *otlpConverter) emitHistogram(name string, t int64, h *series.Histogram) error {
	ha, ok := c.app.(HistogramAppender)
	if !ok {
		return fmt.Errorf("%w: this server does not store native histograms", series.ErrInvalid)
	}
	ls, err := c.seriesLabels(name, "", "")
	if err != nil {
		return err
	}
	if err := appendHistogram(ha, ls, t, h); err != nil {
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

// labelValue renders an attribute value as a label value.
func labelValue(v oAny) string {
	switch v.kind {
	case anyString:
		return v.s
	case anyBool:
		return strconv.FormatBool(v.i != 0)
	case anyInt:
		return strconv.FormatInt(v.i, 10)
	case anyDouble:
		return strconv.FormatFloat(v.f, 'f', -1, 64)
	case anyBytes:
		return base64.StdEncoding.EncodeToString(v.b)
	case anyComplex:
		b, err := json.Marshal(anyJSON(v.complex))
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
		if x.KvlistValue == nil {
			return out
		}
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
	return labelValue(anyFromProto(v))
}
