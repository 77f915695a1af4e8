package query

import (
	"context"
	"fmt"
	"math"
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
}

// RollupSource is a Source that also keeps downsampled tiers, finest
// first. EachRollup calls f with each selected series (of the shard-th of
// shards parts of the selection) that has buckets of tier in the blocks
// covering [mint, maxt] (others may come along), with only the columns in
// cols (rollup.Col*) decoded; f must not keep them.
type RollupSource interface {
	Source
	Tiers() []Tier
	EachRollup(tier int, mint, maxt int64, cols uint, shard, shards int, ms []*series.Matcher, f func(series.Labels, *rollup.Columns) error) error
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
func (ev *evaluator) tierSeries(fn string, tier int, ms []*series.Matcher, w, off, split int64, param scalarValue) ([]*vecSeries, error) {
	rs := ev.src.(RollupSource)
	res := rs.Tiers()[tier].Resolution.Milliseconds()
	ev.markTier(tier)
	first, _ := ev.evalTimes(off, nil)
	// The selection in shards read in parallel, as raw selections are.
	shards := ev.shards()
	parts := make([][]*vecSeries, shards)
	errs := make([]error, shards)
	var wg sync.WaitGroup
	for k := 0; k < shards; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			defer recoverTo(&errs[k])
			var acc rollup.Sketch
			errs[k] = rs.EachRollup(tier, first-w, split-res, tierColumns(fn), k, shards, ms, func(ls series.Labels, c *rollup.Columns) error {
				if o, err := ev.tierSeriesOne(fn, ls, c, res, w, off, split, param, &acc); err != nil || o == nil {
					return err
				} else {
					parts[k] = append(parts[k], o)
				}
				return ev.checkCtx()
			})
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
func (ev *evaluator) tierSeriesOne(fn string, ls series.Labels, c *rollup.Columns, res, w, off, split int64, param scalarValue, acc *rollup.Sketch) (*vecSeries, error) {
	if ev.counts.series.Add(1) > int64(ev.maxSeries) {
		return nil, fmt.Errorf("%w: query selects more than %d series", ErrTooLarge, ev.maxSeries)
	}
	if ev.counts.samples.Add(int64(c.Len())) > int64(ev.max) {
		return nil, fmt.Errorf("%w: query processing would load too many samples into memory (more than %d)", ErrTooLarge, ev.max)
	}
	if !keepsName[fn] {
		ls = dropName(ls)
	}
	o := ev.newSeries(ls)
	any := false
	starts := c.Start
	if w == res && (ev.steps() == 1 || ev.step == res) && fn != "rate" && fn != "increase" && fn != "delta" && fn != "quantile_over_time" {
		// The dashboard case: one bucket per window and per step. The
		// bucket starting at s answers the step at s+res: no window to
		// search, one value to read.
		for j, st := range starts {
			t := st + res
			if t > split {
				break
			}
			k := t + off - ev.start
			if k < 0 || k%ev.step != 0 {
				continue
			}
			i := int(k / ev.step)
			if i >= len(o.v) {
				break
			}
			v, _ := tierValue(fn, c, j, j+1, t, w, 0, nil)
			o.v[i], o.ok[i], any = v, true, true
		}
		if !any {
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
			}
		}
	}
	return tier
}
