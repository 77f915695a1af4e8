package query

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/parser/posrange"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/headroomdb/headroom/admit"
	"github.com/headroomdb/headroom/storage/series"
)

// Engine evaluates PromQL with Prometheus's semantics: a 5-minute
// lookback for instant vectors, left-open windows (t-range, t], stale
// markers ending series, rate extrapolation and counter resets, metric
// names dropped by functions and arithmetic.
type Engine struct {
	// LookbackDelta is how far back an instant vector looks for a sample.
	// Default 5 minutes.
	LookbackDelta time.Duration
	// MaxSamples bounds the samples one query may load. Default 50M.
	MaxSamples int
	// MaxSeries bounds the series one query may select, over all its
	// selectors. Default 1M.
	MaxSeries int
	// Parallelism is how many goroutines evaluate a range function's
	// series when the source can split a selection. Default GOMAXPROCS.
	Parallelism int
	// Timeout bounds a query's evaluation. Default 2 minutes.
	Timeout time.Duration
	// Gate, if set, bounds the queries evaluating at once and sheds them
	// over the memory budget: a refused query fails with admit.ErrBusy.
	Gate *admit.Gate
	// Features are the Prometheus 3 features turned on (Feature*
	// constants); nil means all of them.
	Features []string
}

// parse parses q with the engine's features.
func (e *Engine) parse(q string) (parser.Expr, error) {
	fs := e.Features
	if fs == nil {
		fs = Features
	}
	return parseWith(q, fs)
}

// Errors of evaluation that the API maps to its error types.
var (
	ErrTooLarge = errors.New("query too large")
	ErrTimeout  = errors.New("query timed out")
	ErrExec     = errors.New("execution error")
)

// Point is one sample of a result (the storage vocabulary's sample, so
// that a scan fills query buffers straight from the chunks).
type Point = series.Sample

// Series is one series of a result.
type Series struct {
	Labels series.Labels
	Points []Point
	// Histograms are the series' native histogram samples; a time has a
	// float or a histogram, not both.
	Histograms []HPoint
}

// Result is what a query returns: a matrix (range query, or a range
// vector at an instant), a vector or scalar (instant query), or a string.
type Result struct {
	Type   string // "matrix", "vector", "scalar", "string"
	Series []Series
	Scalar Point
	String string
	// Samples is how many samples (or rollup buckets) the evaluation
	// loaded from storage.
	Samples int
	// Tiers names the data tiers the answer came from ("raw", "5m", ...).
	Tiers []string
	// Infos are Prometheus's info annotations (a histogram's buckets made
	// monotonic...).
	Infos []string
	// Where the query's time went: parsing, waiting for a query slot,
	// evaluating (the API's stats parameter).
	Parse, Queue, Eval time.Duration
	// Warnings say where the answer may be incomplete: raw samples read
	// for a time the source no longer keeps them.
	Warnings []string
}

// evaluation state of one query.
type evaluator struct {
	ctx      context.Context
	parent   context.Context // the caller's, which ctx (with the timeout) derives from
	src      Source
	start    int64
	end      int64
	step     int64
	lookback int64
	// The counts of what the query loaded are shared with the workers
	// of parallel selections and with subqueries' evaluators.
	counts    *counts
	max       int
	maxSeries int
	workers   int
	tierMode  string // WithTier's
	// The query's own range, for @ start(), @ end(), step() and
	// range(): subqueries have their own start, end and step.
	queryStart, queryEnd, queryStep int64
	// delayName: Prometheus 3's delayed name removal (Features).
	delayName bool
	// histOnly: selections read native histograms only (histogramsOnly).
	histOnly bool
	// fold: set by a simple aggregation for the range function it
	// evaluates next (callRange takes it at once, so that nothing
	// evaluated below that sees it).
	fold *folder
}

type counts struct {
	samples, series atomic.Int64
	tiers           atomic.Uint32 // bit 0: raw, bit i+1: tier i (markTier)
	rawFrom         atomic.Int64  // the earliest time raw samples were read from
	annoMu          sync.Mutex
	annos           annotations.Annotations // Prometheus's, merged as it merges them
	partial         map[string]bool         // the queriers' Warnings, under annoMu
}

// Warner is a Querier that can say where its selections were incomplete
// (a cluster's partitions no owner answered for): the engine adds what
// it says, once each, to the answer's warnings.
type Warner interface {
	Warnings() []string
}

// noteWarnings keeps what q says of its selections, if it says anything.
func (ev *evaluator) noteWarnings(q Querier) {
	w, ok := q.(Warner)
	if !ok {
		return
	}
	ev.addWarnings(w.Warnings())
}

// addWarnings keeps warnings a source gave about what it left out.
func (ev *evaluator) addWarnings(ws []string) {
	if len(ws) == 0 {
		return
	}
	c := ev.counts
	c.annoMu.Lock()
	defer c.annoMu.Unlock()
	if c.partial == nil {
		c.partial = map[string]bool{}
	}
	for _, x := range ws {
		c.partial[x] = true
	}
}

// annotate adds one of Prometheus's annotations (a warning or an info,
// with the position of the expression it is about) to the answer.
func (ev *evaluator) annotate(err error) {
	c := ev.counts
	c.annoMu.Lock()
	defer c.annoMu.Unlock()
	c.annos.Add(err)
}

// checkQuantile warns, as Prometheus does, of a quantile outside [0, 1]
// at any step (the answer is then -Inf, +Inf or NaN); pos is the
// quantile's expression.
func (ev *evaluator) checkQuantile(qs scalarValue, pos posrange.PositionRange) {
	for _, q := range qs {
		if math.IsNaN(q) || q < 0 || q > 1 {
			ev.annotate(annotations.NewInvalidQuantileWarning(q, pos))
			return
		}
	}
}

// steps returns the number of evaluation steps.
func (ev *evaluator) steps() int { return int((ev.end-ev.start)/ev.step) + 1 }

func (ev *evaluator) ts(i int) int64 { return ev.start + int64(i)*ev.step }

// Range evaluates q at start, start+step, ..., end (milliseconds).
func (e *Engine) Range(ctx context.Context, src Source, q string, start, end, step int64) (res *Result, err error) {
	if step <= 0 {
		return nil, fmt.Errorf("%w: zero or negative query resolution step widths are not accepted. Try a positive integer", ErrBadQuery)
	}
	if end < start {
		return nil, fmt.Errorf("%w: end timestamp must not be before start time", ErrBadQuery)
	}
	// Unsigned: end-start of times at the int64 limits overflows.
	if uint64(end-start)/uint64(step) > 11000 {
		return nil, fmt.Errorf("%w: exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)", ErrBadQuery)
	}
	p0 := time.Now()
	expr, err := e.parse(q)
	if err != nil {
		return nil, err
	}
	parsed := time.Since(p0)
	v, n, tiers, warns, err := e.run(ctx, src, q, expr, start, end, step)
	if err != nil {
		return nil, err
	}
	defer func() {
		if res != nil {
			res.Parse, res.Queue, res.Eval = parsed, warns.queue, warns.eval
		}
	}()
	switch v := v.(type) {
	case scalarValue:
		pts := make([]Point, len(v))
		for i, f := range v {
			pts[i] = Point{T: start + int64(i)*step, V: f}
		}
		return &Result{Type: "matrix", Series: []Series{{Labels: series.Labels{}, Points: pts}}, Samples: n, Tiers: tiers, Warnings: warns.warnings, Infos: warns.infos}, nil
	case vectorValue:
		return &Result{Type: "matrix", Series: v.matrix(start, step), Samples: n, Tiers: tiers, Warnings: warns.warnings, Infos: warns.infos}, nil
	case stringValue:
		return nil, fmt.Errorf("%w: invalid expression type \"string\" for range query, must be Scalar or instant Vector", ErrBadQuery)
	case rangeValue:
		return nil, fmt.Errorf("%w: invalid expression type \"range vector\" for range query, must be Scalar or instant Vector", ErrBadQuery)
	}
	return nil, fmt.Errorf("%w: unexpected result %T", ErrExec, v)
}

// Instant evaluates q at t (milliseconds).
func (e *Engine) Instant(ctx context.Context, src Source, q string, t int64) (res *Result, err error) {
	p0 := time.Now()
	expr, err := e.parse(q)
	if err != nil {
		return nil, err
	}
	parsed := time.Since(p0)
	v, n, tiers, warns, err := e.run(ctx, src, q, expr, t, t, 1)
	if err != nil {
		return nil, err
	}
	defer func() {
		if res != nil {
			res.Parse, res.Queue, res.Eval = parsed, warns.queue, warns.eval
		}
	}()
	switch v := v.(type) {
	case scalarValue:
		return &Result{Type: "scalar", Scalar: Point{T: t, V: v[0]}, Samples: n, Tiers: tiers, Warnings: warns.warnings, Infos: warns.infos}, nil
	case stringValue:
		return &Result{Type: "string", String: string(v), Scalar: Point{T: t}, Samples: n, Tiers: tiers, Warnings: warns.warnings, Infos: warns.infos}, nil
	case vectorValue:
		r := &Result{Type: "vector", Samples: n, Tiers: tiers, Warnings: warns.warnings, Infos: warns.infos}
		for _, s := range v.series {
			if h := s.hist(0); h != nil && s.ok[0] {
				r.Series = append(r.Series, Series{Labels: s.labels, Histograms: []HPoint{{T: t, H: h}}})
			} else if s.ok[0] {
				r.Series = append(r.Series, Series{Labels: s.labels, Points: []Point{{T: t, V: s.v[0]}}})
			}
		}
		// Ordered by labels, for stable answers, unless the query's
		// outermost operation orders its answer: sort, or topk and
		// bottomk (each group's series by value, as Prometheus gives them).
		if !ordersResult(expr) {
			sort.Slice(r.Series, func(i, j int) bool { return series.Compare(r.Series[i].Labels, r.Series[j].Labels) < 0 })
		}
		return r, nil
	case rangeValue:
		r := &Result{Type: "matrix", Samples: n, Tiers: tiers, Warnings: warns.warnings, Infos: warns.infos}
		for _, s := range v {
			if len(s.Points) > 0 || len(s.Histograms) > 0 {
				r.Series = append(r.Series, s)
			}
		}
		return r, nil
	}
	return nil, fmt.Errorf("%w: unexpected result %T", ErrExec, v)
}

// annos are an answer's annotations, and where its time went.
type annos struct {
	warnings, infos []string
	queue, eval     time.Duration
}

func (e *Engine) run(ctx context.Context, src Source, q string, expr parser.Expr, start, end, step int64) (v value, samples int, tiers []string, warnings annos, err error) {
	t0 := time.Now()
	if err := e.Gate.Enter(ctx); err != nil {
		if errors.Is(err, admit.ErrBusy) {
			return nil, 0, nil, annos{}, err
		}
		return nil, 0, nil, annos{}, fmt.Errorf("%w: %v", ctx.Err(), err)
	}
	defer e.Gate.Leave()
	timeout := e.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lb := e.LookbackDelta
	if d, ok := ctx.Value(lookbackKey{}).(time.Duration); ok && d > 0 {
		lb = d
	}
	if lb == 0 {
		lb = 5 * time.Minute
	}
	max := e.MaxSamples
	if max == 0 {
		max = 50_000_000
	}
	maxSeries := e.MaxSeries
	if maxSeries == 0 {
		maxSeries = 1_000_000
	}
	workers := e.Parallelism
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	mode, _ := ctx.Value(tierKey{}).(string)
	if err := CheckTier(src, mode); err != nil {
		return nil, 0, nil, annos{}, err
	}
	ev := &evaluator{ctx: ctx, parent: parent, src: src, start: start, end: end, step: step, lookback: lb.Milliseconds(),
		max: max, maxSeries: maxSeries, workers: workers, counts: &counts{}, tierMode: mode,
		queryStart: start, queryEnd: end, queryStep: step}
	if start == end {
		ev.queryStep = 0 // an instant query has no step
	}
	fs, err := e.features()
	if err != nil {
		return nil, 0, nil, annos{}, err
	}
	ev.delayName = fs[FeatureDelayedNameRemoval]
	ev.counts.rawFrom.Store(math.MaxInt64)
	t1 := time.Now()
	v, err = ev.eval(expr)
	if err == nil {
		v, err = ev.cleanup(v)
	}
	meta := ev.annotations(q)
	meta.queue, meta.eval = t1.Sub(t0), time.Since(t1)
	return v, int(ev.counts.samples.Load()), tiersUsed(ev.counts.tiers.Load(), src), meta, err
}

// RawKeeper is a Source that says since when it keeps raw samples.
type RawKeeper interface {
	// RawOldest: raw samples before it (ms) are gone, every series'.
	RawOldest() int64
}

// warnings are the answer's annotations (annotate), then where it read
// raw samples for a time the source no longer keeps them (a range
// function no tier could answer, a plain selector, a tier forced past its
// retention): the points there may be missing, and a coarser step would
// read the tiers.
func (ev *evaluator) annotations(q string) annos {
	ev.counts.annoMu.Lock()
	ws, is := ev.counts.annos.AsStrings(q, 0, 0)
	for x := range ev.counts.partial {
		ws = append(ws, x)
	}
	ev.counts.annoMu.Unlock()
	slices.Sort(ws) // the annotations come from a map
	slices.Sort(is)
	out := annos{warnings: ws, infos: is}
	rk, ok := ev.src.(RawKeeper)
	from := ev.counts.rawFrom.Load()
	if !ok || from == math.MaxInt64 {
		return out
	}
	oldest := rk.RawOldest()
	if from >= oldest {
		return out
	}
	w := fmt.Sprintf("raw samples before %s are no longer kept: the part of the query from %s to %s read raw samples and may have no data",
		fmtTime(oldest), fmtTime(max(from, 0)), fmtTime(oldest))
	if rs, ok := ev.src.(RollupSource); ok && len(rs.Tiers()) > 0 {
		var names []string
		for _, t := range rs.Tiers() {
			names = append(names, TierName(t.Resolution))
		}
		w += fmt.Sprintf(" (the tiers %s answer range functions such as avg_over_time whose window and step are multiples of their resolution)", strings.Join(names, ", "))
	}
	out.warnings = append(out.warnings, w)
	return out
}

func fmtTime(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339) }

// checkCtx reports cancellation (client gone) or the timeout.
func (ev *evaluator) checkCtx() error {
	// The caller's context first: a derived context may learn of its
	// cancellation a moment later (when the parent is not a plain cancel
	// context, as a server request's need not be).
	if err := ev.parent.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	switch err := ev.ctx.Err(); {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: query timed out in expression evaluation", ErrTimeout)
	case err != nil:
		return err
	}
	return nil
}

// nesting is the deepest nesting of ( [ { in q outside string literals.
func nesting(q string) int {
	depth, deepest := 0, 0
	var quote byte
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == '\\' && quote != '`' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case c == '(' || c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ')' || c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

// Bounds on a query's text. Real dashboards stay far below both (long
// queries are regex alternations of hosts, tens of KiB); a hostile one
// could otherwise make the parser and the recursive evaluator spend
// time and stack in proportion to whatever the request body allows.
const (
	MaxQueryBytes = 256 << 10
	MaxQueryDepth = 256
)

// Prometheus 3's PromQL features that it keeps behind --enable-feature
// flags, by its names. Headroom has them all on unless told otherwise
// (Engine.Features): they only add to the language, but for delayed name
// removal, which lets dashboards group by __name__ after a function.
const (
	// Functions such as sort_by_label, limitk, info, mad_over_time,
	// double_exponential_smoothing, range(), min_of.
	FeatureExperimentalFunctions = "promql-experimental-functions"
	// __name__ kept until the end of the evaluation, so that
	// max by (__name__) (rate(...)) and label_replace of it work.
	FeatureDelayedNameRemoval = "promql-delayed-name-removal"
	// fill(), fill_left(), fill_right() on binary operators.
	FeatureFillModifiers = "promql-binop-fill-modifiers"
	// Names with dots and other Unicode letters written unquoted
	// (http.server.requests{service.name="api"}); quoted names
	// ({"http.server.requests"}) need no flag.
	FeatureUnquotedUTF8Names = "promql-unquoted-utf8-names"
)

// Features lists every feature, the default.
var Features = []string{FeatureExperimentalFunctions, FeatureDelayedNameRemoval, FeatureFillModifiers, FeatureUnquotedUTF8Names}

// parsers by EnableExperimentalFunctions, EnableBinopFillModifiers,
// EnableUnquotedUTF8Names.
var parsers = func() (p [2][2][2]parser.Parser) {
	for i := range 2 {
		for j := range 2 {
			for k := range 2 {
				p[i][j][k] = parser.NewParser(parser.Options{EnableExperimentalFunctions: i == 1, EnableBinopFillModifiers: j == 1, EnableUnquotedUTF8Names: k == 1})
			}
		}
	}
	return p
}()

// features returns the engine's features as a set, checked.
func (e *Engine) features() (map[string]bool, error) {
	fs := e.Features
	if fs == nil {
		fs = Features
	}
	out := map[string]bool{}
	for _, f := range fs {
		if !slices.Contains(Features, f) {
			return nil, fmt.Errorf("unknown PromQL feature %q (known: %s)", f, strings.Join(Features, ", "))
		}
		out[f] = true
	}
	return out, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// parse parses q with Prometheus's own parser, which checks types and
// argument counts and reports positions as Prometheus does.
func parse(q string) (parser.Expr, error) { return parseWith(q, Features) }

func parseWith(q string, features []string) (parser.Expr, error) {
	if len(q) > MaxQueryBytes {
		return nil, fmt.Errorf("%w: query of %d bytes is too long (the limit is %d)", ErrBadQuery, len(q), MaxQueryBytes)
	}
	if !utf8.ValidString(q) {
		// Answers must be UTF-8 (protobuf strings, JSON).
		return nil, fmt.Errorf("%w: query is not valid UTF-8", ErrBadQuery)
	}
	if d := nesting(q); d > MaxQueryDepth {
		return nil, fmt.Errorf("%w: query nested %d deep in brackets, over the limit of %d", ErrBadQuery, d, MaxQueryDepth)
	}
	p := parsers[b2i(slices.Contains(features, FeatureExperimentalFunctions))][b2i(slices.Contains(features, FeatureFillModifiers))][b2i(slices.Contains(features, FeatureUnquotedUTF8Names))]
	e, err := p.ParseExpr(q)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadQuery, err)
	}
	return e, nil
}

// ordersResult reports whether e's answer comes in an order of its own.
func ordersResult(e parser.Expr) bool {
	switch x := unwrap(e).(type) {
	case *parser.Call:
		switch x.Func.Name {
		case "sort", "sort_desc", "sort_by_label", "sort_by_label_desc":
			return true
		}
	case *parser.AggregateExpr:
		return x.Op == parser.TOPK || x.Op == parser.BOTTOMK
	}
	return false
}

type lookbackKey struct{}

// WithLookbackDelta sets the lookback delta of the queries evaluated under
// ctx, as the API's lookback_delta parameter does for one request (0:
// the engine's).
func WithLookbackDelta(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, lookbackKey{}, d)
}

// Format returns q laid out for reading (/api/v1/format_query), after the
// checks any query gets: an error names what is wrong, as a query's
// would. The layout is Prometheus's own.
func Format(q string) (string, error) {
	e, err := parse(q)
	if err != nil {
		return "", err
	}
	return parser.Prettify(e), nil
}

// Parse returns q's syntax tree (/api/v1/parse_query), after the checks
// any query gets, with the engine's features.
func (e *Engine) Parse(q string) (parser.Expr, error) { return e.parse(q) }

// Format is query.Format with the engine's features: what it prints
// parses again on this engine.
func (e *Engine) Format(q string) (string, error) {
	x, err := e.parse(q)
	if err != nil {
		return "", err
	}
	return parser.Prettify(x), nil
}
