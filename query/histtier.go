package query

import (
	"fmt"
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/promql/parser/posrange"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// HistRollupSource is a RollupSource whose tiers keep native histograms
// too (rollup.HistBucket): EachHistRollup is EachRollup for them, f
// being free to keep the buckets.
type HistRollupSource interface {
	EachHistRollup(tier int, mint, maxt int64, shard, shards int, ms []*series.Matcher, f func(series.Labels, []rollup.HistBucket) error) (TierRead, error)
}

// histTierFuncs are the range functions a run of histogram buckets
// answers bit for bit as the samples do. sum_over_time and avg_over_time
// of histograms read raw samples (a bucket keeps no merged sum).
var histTierFuncs = map[string]bool{
	"rate": true, "increase": true, "delta": true, "count_over_time": true, "last_over_time": true, "present_over_time": true,
}

// tierHistSeries evaluates fn(x[w] offset off) over the histogram series
// of a tier at the evaluation times up to split, as tierSeries does
// floats.
func (ev *evaluator) tierHistSeries(fn string, hs HistRollupSource, tier int, ms []*series.Matcher, w, off, split int64, fold *folder, pos posrange.PositionRange) ([]*vecSeries, error) {
	rs := ev.src.(RollupSource)
	res := rs.Tiers()[tier].Resolution.Milliseconds()
	first, _ := ev.evalTimes(off, nil)
	return ev.tierShards(fold, func(k, shards int, emit func(*vecSeries)) (TierRead, error) {
		return hs.EachHistRollup(tier, first-w, split-res, k, shards, ms, func(ls series.Labels, bs []rollup.HistBucket) error {
			o, err := ev.tierHistOne(fn, ls, bs, res, w, off, split, pos)
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

// tierHistOne evaluates one series' histogram buckets at every step up
// to split.
func (ev *evaluator) tierHistOne(fn string, ls series.Labels, bs []rollup.HistBucket, res, w, off, split int64, pos posrange.PositionRange) (*vecSeries, error) {
	if ev.counts.series.Add(1) > int64(ev.maxSeries) {
		return nil, fmt.Errorf("%w: query selects more than %d series", ErrTooLarge, ev.maxSeries)
	}
	if ev.counts.samples.Add(int64(len(bs))) > int64(ev.max) {
		return nil, fmt.Errorf("%w: query processing would load too many samples into memory (more than %d)", ErrTooLarge, ev.max)
	}
	c := &histCall{ev: ev, name: ls.Get(series.MetricName), pos: pos}
	dropped := false
	if !keepsName[fn] {
		ls, dropped = ev.nameless(ls)
	}
	o := ev.newSeries(ls)
	o.dropName = dropped
	any := false
	lo, hi := 0, 0
	for i := range o.v {
		t := ev.ts(i) - off
		if t > split {
			break
		}
		for lo < len(bs) && bs[lo].Start < t-w {
			lo++
		}
		for hi < len(bs) && bs[hi].Start <= t-res {
			hi++
		}
		if hi <= lo {
			continue
		}
		if f, h, isHist, ok := c.tierValue(fn, bs[lo:hi], t, w); ok {
			o.v[i], o.ok[i], any = f, true, true
			if isHist {
				o.setHist(i, h)
			}
		}
	}
	if !any {
		return nil, nil
	}
	return o, nil
}

// tierValue is fn over a window of histogram buckets (at least one), as
// histRangeFuncs computes it over the samples.
func (c *histCall) tierValue(fn string, bs []rollup.HistBucket, t, w int64) (float64, *FloatHistogram, bool, bool) {
	switch fn {
	case "count_over_time":
		n := int64(0)
		for i := range bs {
			n += bs[i].Count
		}
		return float64(n), nil, false, true
	case "present_over_time":
		return 1, nil, false, true
	case "last_over_time":
		return 0, floatHistogram(bs[len(bs)-1].Last().H), true, true
	}
	n := int64(0)
	for i := range bs {
		n += bs[i].Count
	}
	if n < 2 {
		return 0, nil, true, false
	}
	counter := fn != "delta"
	h, ok := c.tierIncrease(bs, counter)
	if !ok {
		return 0, nil, true, false
	}
	first, last := bs[0].First(), bs[len(bs)-1].Last()
	h.Mul(extrapolationFactor(first.T, last.T, first.H.Count, int(n), h.Count, t, w, counter))
	if fn == "rate" {
		h.Div(float64(w) / 1000)
	}
	return 0, h, true, true
}

// tierIncrease is increase over a window of buckets (at least two
// samples): the same operations, in the same order, on the same
// histograms as histCall.increase over the window's samples, so that the
// answer is the same bit for bit.
func (c *histCall) tierIncrease(bs []rollup.HistBucket, counter bool) (*FloatHistogram, bool) {
	first, last := floatHistogram(bs[0].First().H), floatHistogram(bs[len(bs)-1].Last().H)
	// What the samples after the window's first hold.
	var rest uint8
	minRest := int32(math.MaxInt32)
	for i := range bs {
		if i > 0 {
			rest |= rollup.HistRest(bs[i].First().H)
			minRest = min(minRest, bs[i].First().H.Schema)
		}
		if bs[i].Count > 1 {
			rest |= bs[i].Rest
			minRest = min(minRest, bs[i].MinSchema)
		}
	}
	if counter && (first.CounterResetHint == histogram.GaugeType || rest&rollup.HistRestGauge != 0) {
		c.warn(annotations.NewNativeHistogramNotCounterWarning(c.name, c.pos))
	}
	// The window's second sample, when it is a reset: Prometheus then
	// starts from nothing, in its layout.
	var second *FloatHistogram
	if bs[0].Count > 1 {
		if bs[0].FirstResets() {
			second = floatHistogram(bs[0].Second().H)
		}
	} else if s := floatHistogram(bs[1].First().H); s.DetectReset(first) {
		second = s
	}
	prev := first
	custom := prev.UsesCustomBuckets()
	if counter && second != nil {
		prev = &FloatHistogram{Schema: second.Schema, CustomValues: second.CustomValues}
		custom = second.UsesCustomBuckets()
	}
	schema := min(prev.Schema, last.Schema)
	mixed := func() (*FloatHistogram, bool) {
		c.warn(annotations.NewMixedExponentialCustomHistogramsWarning(c.name, c.pos))
		return nil, false
	}
	if counter {
		schema = min(schema, minRest)
		if custom && rest&rollup.HistRestExp != 0 || !custom && rest&rollup.HistRestCustom != 0 {
			return mixed()
		}
	}
	if last.UsesCustomBuckets() != custom {
		return mixed()
	}
	h, err := last.CopyToSchema(schema)
	if err != nil {
		return mixed()
	}
	_, _, rec, err := h.Sub(prev)
	if err != nil {
		return mixed()
	}
	if rec {
		c.warn(annotations.NewMismatchedCustomBucketsHistogramsInfo(c.pos, annotations.HistogramSub))
	}
	if !counter {
		if first.CounterResetHint != histogram.GaugeType || last.CounterResetHint != histogram.GaugeType {
			c.warn(annotations.NewNativeHistogramNotGaugeWarning(c.name, c.pos))
		}
		h.CounterResetHint = histogram.GaugeType
		return h.Compact(0), true
	}
	// Each reset's histogram before it, in time order: inside a bucket
	// the bucket kept them; between buckets, the last of one and the
	// first of the next tell.
	add := func(p *FloatHistogram) bool {
		_, _, _, err := h.Add(p)
		return err == nil
	}
	if second != nil && second.DetectReset(prev) && !add(prev) {
		return mixed()
	}
	for i := range bs {
		if i > 0 && !(i == 1 && bs[0].Count == 1 && second != nil) {
			if p := floatHistogram(bs[i-1].Last().H); floatHistogram(bs[i].First().H).DetectReset(p) && !add(p) {
				return mixed()
			}
		}
		for k := range bs[i].Kept {
			x := &bs[i].Kept[k]
			if x.Role&rollup.RolePreReset == 0 || i == 0 && k == 0 {
				continue // the window's first: handled above
			}
			if !add(floatHistogram(x.H)) {
				return mixed()
			}
		}
	}
	h.CounterResetHint = histogram.GaugeType
	return h.Compact(0), true
}
