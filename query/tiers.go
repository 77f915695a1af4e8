package query

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// Tier describes a downsampled tier a source keeps.
type Tier struct {
	Resolution time.Duration
	// Watermark: buckets starting before it are complete (ms).
	Watermark int64
	// Oldest: the tier's retention cutoff (ms); older buckets are gone.
	Oldest int64
	// Sketches: the tier keeps a quantile sketch per bucket
	// (quantile_over_time can read it).
	Sketches bool
}

// RollupSource is a Source that also keeps downsampled tiers, finest
// first. EachRollup calls f with each selected series (of the shard-th of
// shards parts of the selection) that has buckets of tier in the blocks
// covering [mint, maxt] (others may come along), with only the columns in
// cols (rollup.Col*) decoded; f must not keep them. The buckets are
// exact; the TierRead says how they were read.
type RollupSource interface {
	Source
	Tiers() []Tier
	EachRollup(tier int, mint, maxt int64, cols uint, shard, shards int, ms []*series.Matcher, f func(series.Labels, *rollup.Columns) error) (TierRead, error)
}

// TierRead says how a source answered a tier read.
type TierRead struct {
	// RawDays counts the series-days the source computed from raw
	// samples because they were not rolled up yet.
	RawDays int
	// Warnings name what the read had to leave out, as a Warner's do (a
	// cluster's partitions none of whose owners answered): they go into
	// the answer's warnings.
	Warnings []string
}

// tierColumns are the bucket columns fn needs.
func tierColumns(fn string) uint {
	switch fn {
	case "sum_over_time":
		return rollup.ColSum
	case "avg_over_time":
		return rollup.ColSum | rollup.ColCount
	case "count_over_time", "present_over_time":
		return rollup.ColCount
	case "min_over_time":
		return rollup.ColMin
	case "max_over_time":
		return rollup.ColMax
	case "last_over_time":
		return rollup.ColLast
	case "quantile_over_time":
		return rollup.ColSketch
	}
	return rollup.ColCount | rollup.ColFirst | rollup.ColLast | rollup.ColIncrease | rollup.ColFirstT | rollup.ColLastT // rate, increase, delta
}

// TierName names a resolution as queries and answers do: 5m, 1h, 1d.
func TierName(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

type tierKey struct{}

// WithTier returns a context whose queries read the given tier: "auto"
// (the default: the coarsest tier that answers each range function
// exactly as raw data would, raw where none does), "raw", or a tier's
// name ("5m", "1h", "1d"), which is used wherever it can answer (raw
// elsewhere). CheckTier validates a name against a source.
func WithTier(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, tierKey{}, name)
}

// CheckTier reports whether name is a tier a query can ask src for.
func CheckTier(src Source, name string) error {
	if name == "" || name == "auto" || name == "raw" {
		return nil
	}
	var have []string
	if rs, ok := src.(RollupSource); ok {
		for _, t := range rs.Tiers() {
			if TierName(t.Resolution) == name {
				return nil
			}
			have = append(have, TierName(t.Resolution))
		}
	}
	return fmt.Errorf("%w: unknown tier %q (auto, raw%s)", ErrBadQuery, name, strings.Join(append([]string{""}, have...), ", "))
}

// rollupFuncs are the range functions a run of buckets answers exactly
// as the samples do (quantile_over_time within the sketch's accuracy).
var rollupFuncs = map[string]bool{
	"sum_over_time": true, "count_over_time": true, "avg_over_time": true, "min_over_time": true, "max_over_time": true,
	"last_over_time": true, "present_over_time": true, "quantile_over_time": true, "rate": true, "increase": true, "delta": true,
}

// planTier picks the tier that evaluates f(x[w] offset off): the coarsest
// whose resolution divides the range, the step and the evaluation times
// (its buckets then tile every window exactly). split is the last
// evaluation time it has complete buckets for; later steps read raw.
func (ev *evaluator) planTier(fn string, w, off int64) (tier int, split int64, ok bool) {
	if ev.tierMode == "raw" || !rollupFuncs[fn] {
		return 0, 0, false
	}
	rs, isRollup := ev.src.(RollupSource)
	if !isRollup {
		return 0, 0, false
	}
	tiers := rs.Tiers()
	first, last := ev.evalTimes(off, nil)
	for i := len(tiers) - 1; i >= 0; i-- {
		t := tiers[i]
		if ev.tierMode != "" && ev.tierMode != "auto" && ev.tierMode != TierName(t.Resolution) {
			continue
		}
		res := t.Resolution.Milliseconds()
		if fn == "quantile_over_time" && !t.Sketches {
			continue
		}
		if res <= 0 || w%res != 0 || mod(first, res) != 0 || (ev.steps() > 1 && ev.step%res != 0) {
			continue
		}
		// A window ending at t needs buckets up to t-res: complete when
		// t <= watermark; and from t-w, which the tier must still keep.
		if first > t.Watermark || first-w < t.Oldest {
			continue
		}
		split = last
		if split > t.Watermark {
			split = first + (t.Watermark-first)/ev.step*ev.step
		}
		return i, split, true
	}
	return 0, 0, false
}

// markTier records that the query read tier (-1: raw).
func (ev *evaluator) markTier(tier int) { ev.counts.tiers.Or(1 << uint(tier+1)) }

// tiersUsed names the tiers a query read.
func tiersUsed(mask uint32, src Source) []string {
	var out []string
	if mask&1 != 0 {
		out = append(out, "raw")
	}
	if rs, ok := src.(RollupSource); ok {
		for i, t := range rs.Tiers() {
			if mask&(1<<uint(i+1)) != 0 {
				out = append(out, TierName(t.Resolution))
			}
		}
	}
	return out
}

// tierSeries evaluates f(x[w] offset off) from a tier at the evaluation
// times up to split.
func (ev *evaluator) tierSeries(fn string, tier int, ms []*series.Matcher, w, off, split int64, param scalarValue, fold *folder) ([]*vecSeries, error) {
	rs := ev.src.(RollupSource)
	res := rs.Tiers()[tier].Resolution.Milliseconds()
	ev.markTier(tier)
	first, _ := ev.evalTimes(off, nil)
	return ev.tierShards(fold, func(k, shards int, emit func(*vecSeries)) (TierRead, error) {
		var acc rollup.Sketch
		var scratch []float64
		var buf *vecSeries // folding: one series' steps at a time
		if fold != nil {
			buf = ev.newSeries(nil)
		}
		return rs.EachRollup(tier, first-w, split-res, tierColumns(fn), k, shards, ms, func(ls series.Labels, c *rollup.Columns) error {
			o, err := ev.tierSeriesOne(fn, ls, c, res, w, off, split, param, &acc, buf, fold, k, &scratch)
			if err != nil {
				return err
			}
			if o != nil {
				emit(o)
			}
			return ev.checkCtx()
		})
	})
}

// tierShards reads a tier's selection in shards, in parallel as raw
// selections are: read reads shard k of shards, giving each series it
// evaluates to emit (which folds it, with a folder), and says how.
func (ev *evaluator) tierShards(fold *folder, read func(k, shards int, emit func(*vecSeries)) (TierRead, error)) ([]*vecSeries, error) {
	shards := ev.shards()
	parts := make([][]*vecSeries, shards)
	errs := make([]error, shards)
	var wg sync.WaitGroup
	for k := 0; k < shards; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			defer recoverTo(&errs[k])
			var tr TierRead
			tr, errs[k] = read(k, shards, func(o *vecSeries) {
				if fold != nil {
					fold.add(k, o)
				} else {
					parts[k] = append(parts[k], o)
				}
			})
			if tr.RawDays > 0 {
				ev.markTier(-1) // days not rolled up yet were read from raw samples
			}
			ev.addWarnings(tr.Warnings)
		}(k)
	}
	wg.Wait()
	var out []*vecSeries
	for k := range parts {
		if errs[k] != nil {
			return nil, errs[k]
		}
		out = append(out, parts[k]...)
	}
	return out, nil
}

// tierSeriesOne evaluates one series' buckets at every step up to split.
// With a folder, the dashboard case folds straight into the series'
// group (and gives nil); buf is the series to reuse for the others.
func (ev *evaluator) tierSeriesOne(fn string, ls series.Labels, c *rollup.Columns, res, w, off, split int64, param scalarValue, acc *rollup.Sketch, buf *vecSeries, fold *folder, shard int, scratch *[]float64) (*vecSeries, error) {
	if ev.counts.series.Add(1) > int64(ev.maxSeries) {
		return nil, fmt.Errorf("%w: query selects more than %d series", ErrTooLarge, ev.maxSeries)
	}
	if ev.counts.samples.Add(int64(c.Len())) > int64(ev.max) {
		return nil, fmt.Errorf("%w: query processing would load too many samples into memory (more than %d)", ErrTooLarge, ev.max)
	}
	dropped := false
	if !keepsName[fn] {
		ls, dropped = ev.nameless(ls)
	}
	op, oneBucket := oneBucketOps[fn]
	oneBucket = oneBucket && w == res && (ev.steps() == 1 || ev.step == res)
	if oneBucket && fold != nil {
		oneBucketSteps(op, c, nil, fold.group(shard, ls), fold.agg, ev.steps(), res, off, split, ev.start, ev.step, scratch)
		return nil, nil
	}
	o := buf
	if o == nil {
		o = ev.newSeries(ls)
		o.dropName = dropped
	} else {
		o.labels, o.dropName = ls, dropped
		clear(o.ok)
	}
	any := false
	starts := c.Start
	if oneBucket {
		// The dashboard case: one bucket per window and per step. The
		// bucket starting at s answers the step at s+res: no window to
		// search, one value to read.
		if any = oneBucketSteps(op, c, o, nil, 0, len(o.v), res, off, split, ev.start, ev.step, scratch); !any {
			return nil, nil
		}
		return o, nil
	}
	lo, hi := 0, 0
	for i := range o.v {
		t := ev.ts(i) - off
		if t > split {
			break
		}
		for lo < len(starts) && starts[lo] < t-w {
			lo++
		}
		for hi < len(starts) && starts[hi] <= t-res {
			hi++
		}
		if hi <= lo {
			continue
		}
		var q float64
		if param != nil {
			q = param[i]
		}
		if v, ok := tierValue(fn, c, lo, hi, t, w, q, acc); ok {
			o.v[i], o.ok[i], any = v, true, true
		}
	}
	if !any {
		return nil, nil
	}
	return o, nil
}

// oneBucketOps numbers the functions oneBucketSteps computes: a string
// switch per bucket cost as much as the rest of the loop.
var oneBucketOps = map[string]int{"sum_over_time": 0, "avg_over_time": 1, "count_over_time": 2, "min_over_time": 3,
	"max_over_time": 4, "last_over_time": 5, "present_over_time": 6}

// oneBucketSteps sets the steps (of n) that one bucket of c answers each
// (window = resolution = step, or an instant query) with the function op
// (oneBucketOps), in o or folded into g with the aggregation agg
// (aggOps), and reports whether it set any.
// scratch holds computed values between calls.
func oneBucketSteps(op int, c *rollup.Columns, o *vecSeries, g *foldGroup, agg, n int, res, off, split, start, step int64, scratch *[]float64) bool {
	// The buckets whose step is in range and not after split: [j0, j1).
	// Starts increase, so both ends are searches.
	starts := c.Start
	j0, _ := slices.BinarySearch(starts, start-off-res)
	j1, _ := slices.BinarySearch(starts, min(split, start+int64(n-1)*step-off)-res+1)
	if j1 <= j0 {
		return false
	}
	// The common case: buckets [j0, j1) without a gap answer a run of
	// consecutive steps (step = resolution): whole columns at a time.
	base := start - off - res
	if d := starts[j0] - base; d%step == 0 && starts[j1-1]-starts[j0] == int64(j1-1-j0)*step && int(d/step)+(j1-j0) <= n {
		i0 := int(d / step)
		var xs []float64
		switch op {
		case 0:
			xs = c.Sum[j0:j1]
		case 1:
			xs = slices.Grow((*scratch)[:0], j1-j0)[:j1-j0]
			*scratch = xs
			for k, sum := range c.Sum[j0:j1] {
				xs[k] = sum / c.Count[j0+k]
			}
		case 2:
			xs = c.Count[j0:j1]
		case 3:
			xs = c.Min[j0:j1]
		case 4:
			xs = c.Max[j0:j1]
		case 5:
			xs = c.Last[j0:j1]
		case 6:
			xs = slices.Grow((*scratch)[:0], j1-j0)[:j1-j0]
			*scratch = xs
			for k := range xs {
				xs[k] = 1
			}
		}
		if g != nil {
			g.addRun(agg, i0, xs)
		} else {
			copy(o.v[i0:], xs)
			for i := i0; i < i0+len(xs); i++ {
				o.ok[i] = true
			}
		}
		return true
	}
	// Bucket j answers step i when starts[j] = at(i) = start-off-res +
	// i*step: both increase, so one merge walk, without a division.
	set := 0
	i, at := 0, base
	for j := j0; j < j1; j++ {
		for at < starts[j] && i < n {
			i++
			at += step
		}
		if i == n {
			break
		}
		if at != starts[j] {
			continue
		}
		set++
		var x float64
		switch op {
		case 0:
			x = c.Sum[j]
		case 1:
			x = c.Sum[j] / c.Count[j]
		case 2:
			x = c.Count[j]
		case 3:
			x = c.Min[j]
		case 4:
			x = c.Max[j]
		case 5:
			x = c.Last[j]
		case 6:
			x = 1
		}
		if g != nil {
			g.addStep(agg, i, x)
		} else {
			o.v[i], o.ok[i] = x, true
		}
	}
	return set > 0
}

// tierValue computes fn over the buckets [lo, hi) of c (at least one).
func tierValue(fn string, c *rollup.Columns, lo, hi int, t, w int64, q float64, acc *rollup.Sketch) (float64, bool) {
	switch fn {
	case "sum_over_time", "avg_over_time":
		var sum float64
		for _, x := range c.Sum[lo:hi] {
			sum += x
		}
		if fn == "sum_over_time" {
			return sum, true
		}
		var n float64
		for _, x := range c.Count[lo:hi] {
			n += x
		}
		return sum / n, true
	case "count_over_time":
		var n float64
		for _, x := range c.Count[lo:hi] {
			n += x
		}
		return n, true
	case "min_over_time":
		m := c.Min[lo]
		for _, v := range c.Min[lo+1 : hi] {
			if v < m || math.IsNaN(m) {
				m = v
			}
		}
		return m, true
	case "max_over_time":
		m := c.Max[lo]
		for _, v := range c.Max[lo+1 : hi] {
			if v > m || math.IsNaN(m) {
				m = v
			}
		}
		return m, true
	case "last_over_time":
		return c.Last[hi-1], true
	case "present_over_time":
		return 1, true
	case "quantile_over_time":
		if q < 0 {
			return math.Inf(-1), true
		}
		if q > 1 {
			return math.Inf(1), true
		}
		acc.Reset()
		for i := lo; i < hi; i++ {
			acc.Merge(&c.Sketches[i])
		}
		v, ok := acc.Quantile(q)
		if !ok {
			return math.NaN(), true // only NaN or infinite samples
		}
		return v, true
	}
	// rate, increase, delta: the change from the window's first sample to
	// its last (resets counted for counters), and Prometheus's
	// extrapolation from the same inputs the samples give.
	var n float64
	var change float64
	counter := fn != "delta"
	for i := lo; i < hi; i++ {
		n += c.Count[i]
		if counter {
			change += c.Increase[i]
			if i > lo {
				if d := c.First[i] - c.Last[i-1]; d >= 0 {
					change += d
				} else {
					change += c.First[i]
				}
			}
		}
	}
	if n < 2 {
		return 0, false
	}
	first := Point{T: c.FirstT[lo], V: c.First[lo]}
	last := Point{T: c.LastT[hi-1], V: c.Last[hi-1]}
	if !counter {
		change = last.V - first.V
	}
	return extrapolate(first, last, int(n), change, t, w, counter, fn == "rate"), true
}

// mergeTiers puts raw's answers for the steps from step `from` on into
// the tier's series of the same labels (or adds them).
func mergeTiers(tier, raw []*vecSeries, from int) []*vecSeries {
	if len(tier) == 0 {
		return raw
	}
	byLabels := make(map[string]*vecSeries, len(tier))
	for _, s := range tier {
		byLabels[s.labels.String()] = s
	}
	for _, r := range raw {
		s, ok := byLabels[r.labels.String()]
		if !ok {
			tier = append(tier, r)
			continue
		}
		for i := from; i < len(r.ok); i++ {
			if r.ok[i] {
				s.v[i], s.ok[i] = r.v[i], true
				s.setHist(i, r.hist(i))
			}
		}
	}
	return tier
}
