package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/series"
)

// Native histograms (issue 16): a day of request latencies as services
// expose them (schema 3, counters), encoded by our chunk codec and by
// Prometheus's own (tsdb/chunkenc) on the same samples, then stored,
// ingested live and late, and queried with histogram_quantile.

const (
	histSeries  = 100
	histScrape  = 15_000 // ms
	histPerDay  = 24 * 3600 * 1000 / histScrape
	histObserve = 50 // requests a scrape interval
)

// latencySeries makes one series' day: each scrape adds histObserve
// observations of a log-normal latency (median 20 to 200 ms by series),
// now and then a slow outlier that opens a bucket at the tail (a new
// layout), as real services do.
func latencySeries(r *rand.Rand, n int) []series.Histogram {
	g := newLatencyGen(r)
	out := make([]series.Histogram, n)
	for k := range out {
		out[k] = *g.next()
	}
	return out
}

// latencyGen is one series' latency histogram, a scrape at a time.
type latencyGen struct {
	r                *rand.Rand
	median           float64
	counts           map[int32]float64
	zero, count, sum float64
}

func newLatencyGen(r *rand.Rand) *latencyGen {
	return &latencyGen{r: r, median: 0.02 + r.Float64()*0.18, counts: map[int32]float64{}}
}

// next observes a scrape interval's requests and returns the histogram.
func (g *latencyGen) next() *series.Histogram {
	r := g.r
	for range histObserve {
		v := g.median * math.Exp(r.NormFloat64()*0.6)
		if r.IntN(2000) == 0 {
			v *= 20 // an outlier
		}
		g.count++
		g.sum += v
		if v <= 1e-128 {
			g.zero++
			continue
		}
		g.counts[int32(math.Ceil(math.Log2(v)*8))]++
	}
	idx := make([]int32, 0, len(g.counts))
	for i := range g.counts {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	h := series.Histogram{Schema: 3, ZeroThreshold: 1e-128, ZeroCount: g.zero, Count: g.count, Sum: g.sum}
	prev := int32(0)
	for j, i := range idx {
		gap := i - prev
		switch {
		case j == 0:
			h.PositiveSpans = append(h.PositiveSpans, series.Span{Offset: i, Length: 1})
		case gap <= 3: // a short gap costs less as empty buckets than as a span
			for range gap - 1 {
				h.PositiveBuckets = append(h.PositiveBuckets, 0)
			}
			h.PositiveSpans[len(h.PositiveSpans)-1].Length += uint32(gap)
		default:
			h.PositiveSpans = append(h.PositiveSpans, series.Span{Offset: gap - 1, Length: 1})
		}
		h.PositiveBuckets = append(h.PositiveBuckets, g.counts[i])
		prev = i
	}
	return h.Clone()
}

// promHistogram is h as Prometheus's integer histogram: deltas between
// buckets.
func promHistogram(h *series.Histogram) *histogram.Histogram {
	ph := &histogram.Histogram{Schema: h.Schema, ZeroThreshold: h.ZeroThreshold, ZeroCount: uint64(h.ZeroCount), Count: uint64(h.Count), Sum: h.Sum}
	for _, s := range h.PositiveSpans {
		ph.PositiveSpans = append(ph.PositiveSpans, histogram.Span{Offset: s.Offset, Length: s.Length})
	}
	prev := 0.0
	for _, c := range h.PositiveBuckets {
		ph.PositiveBuckets = append(ph.PositiveBuckets, int64(c-prev))
		prev = c
	}
	return ph
}

func benchHistograms() {
	r := rand.New(rand.NewPCG(16, 16))
	days := make([][]series.Histogram, histSeries)
	buckets := 0
	for i := range days {
		days[i] = latencySeries(r, histPerDay)
		buckets += len(days[i][histPerDay-1].PositiveBuckets)
	}
	n := histSeries * histPerDay
	record("histograms", "data: series x samples (15 s, a day), buckets at the day's end (mean)", float64(n), "samples", fmt.Sprintf("%d buckets", buckets/histSeries), nil)

	// The codecs on the same samples, chunks of at most 120 (Prometheus's
	// default); a new bucket widens the chunk's layout (WidenLayouts, as
	// the storage does; Prometheus recodes its chunk) rather than cut it.
	ours, theirs := 0, 0
	for _, raw := range days {
		hs := make([]series.HistSample, len(raw))
		for k := range raw {
			hs[k] = series.HistSample{T: int64(k) * histScrape, H: &raw[k]}
		}
		hs = chunk.WidenLayouts(hs, 120, math.MaxInt64)
		day := make([]series.Histogram, len(hs))
		for k := range hs {
			day[k] = *hs[k].H
		}
		var a *chunk.HistogramAppender
		for k := range day {
			if a == nil || a.Count() >= 120 {
				if a != nil {
					ours += a.Size()
				}
				a = chunk.NewHistogramAppender()
			}
			err := a.Append(int64(k)*histScrape, &day[k])
			if errors.Is(err, chunk.ErrLayout) {
				ours += a.Size()
				a = chunk.NewHistogramAppender()
				err = a.Append(int64(k)*histScrape, &day[k])
			}
			if err != nil {
				fatal(err)
			}
		}
		ours += a.Size()
		day = raw
		c := chunkenc.Chunk(chunkenc.NewHistogramChunk())
		app, err := c.Appender()
		if err != nil {
			fatal(err)
		}
		inChunk := 0
		for k := range day {
			if inChunk >= 120 {
				theirs += len(c.Bytes())
				c = chunkenc.NewHistogramChunk()
				if app, err = c.Appender(); err != nil {
					fatal(err)
				}
				inChunk = 0
			}
			nc, recoded, napp, err := app.AppendHistogram(nil, 0, int64(k)*histScrape, promHistogram(&day[k]), false)
			if err != nil {
				fatal(err)
			}
			if nc != nil {
				if !recoded {
					theirs += len(c.Bytes())
					inChunk = 0
				}
				c = nc
			}
			app = napp
			inChunk++
		}
		theirs += len(c.Bytes())
	}
	record("histograms", "chunk bytes a histogram sample, Headroom", float64(ours)/float64(n), "bytes", "", nil)
	record("histograms", "chunk bytes a histogram sample, Prometheus's tsdb/chunkenc", float64(theirs)/float64(n), "bytes", fmt.Sprintf("<= %.1f (Prometheus's)", float64(theirs)/float64(n)), boolp(ours <= theirs))

	// Stored: live (in order, a commit per scrape of every series) and
	// late (the day before, backfilled newest hour first).
	dir, err := os.MkdirTemp("", "headroom-bench-hist-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := storage.Open(dir, storage.Options{Retention: 30 * 24 * time.Hour})
	if err != nil {
		fatal(err)
	}
	lsets := make([]series.Labels, histSeries)
	for i := range lsets {
		lsets[i] = series.FromStrings("__name__", "http_request_duration_seconds", "job", "api", "instance", "pod-"+strconv.Itoa(i))
	}
	t0 := time.Now().Truncate(24 * time.Hour).Add(-24 * time.Hour).UnixMilli()
	appendRange := func(ks []int, base int64) time.Duration {
		start := time.Now()
		a := db.Appender()
		for _, k := range ks {
			for i := range lsets {
				if err := a.AppendHistogram(lsets[i], base+int64(k)*histScrape, &days[i][k]); err != nil {
					fatal(err)
				}
			}
			if err := a.Commit(); err != nil {
				fatal(err)
			}
		}
		return time.Since(start)
	}
	live := make([]int, histPerDay)
	for k := range live {
		live[k] = k
	}
	el := appendRange(live, t0)
	rate := float64(n) / el.Seconds()
	record("histograms", "ingest live, a commit of 100 histograms a scrape", rate, "histograms/s", "", nil)
	// Late: the day before, an hour at a time from the newest back, each
	// hour in order (an agent catching up).
	var late []int
	for h := 23; h >= 0; h-- {
		for k := h * 240; k < (h+1)*240; k++ {
			late = append(late, k)
		}
	}
	el = appendRange(late, t0-24*3600*1000)
	lrate := float64(n) / el.Seconds()
	record("histograms", "ingest late (yesterday, newest hour first)", lrate, "histograms/s", fmt.Sprintf(">= %.0f (live's)", rate*0.8), boolp(lrate >= rate*0.8))
	start := time.Now()
	if err := db.Checkpoint(); err != nil {
		fatal(err)
	}
	record("histograms", "checkpoint of two days of histograms", time.Since(start).Seconds(), "s", "", nil)
	if err := db.Flush(); err != nil {
		fatal(err)
	}
	if err := db.Compact(); err != nil {
		fatal(err)
	}
	record("histograms", "bytes at rest a histogram sample (data directory, compacted)", float64(db.TableBytes())/float64(2*n), "bytes", fmt.Sprintf("<= %.1f (Prometheus's chunks)", float64(theirs)/float64(n)), boolp(float64(db.TableBytes())/float64(2*n) <= float64(theirs)/float64(n)))

	// Queries over the live day and the late one: the p99 latency of the
	// job, and per pod.
	eng := &query.Engine{}
	for _, q := range []string{
		`histogram_quantile(0.99, sum(rate(http_request_duration_seconds[5m])))`,
		`histogram_quantile(0.99, sum by (instance) (rate(http_request_duration_seconds[5m])))`,
	} {
		for _, day := range []struct {
			name string
			base int64
		}{{"live", t0}, {"late", t0 - 24*3600*1000}} {
			var times []float64
			for range 3 {
				start := time.Now()
				res, err := eng.Range(context.Background(), benchSource{db}, q, day.base+300_000, day.base+24*3600*1000-histScrape, 60_000)
				if err != nil {
					fatal(err)
				}
				if len(res.Series) == 0 {
					fatal(fmt.Errorf("%s: no answer", q))
				}
				times = append(times, time.Since(start).Seconds()*1000)
			}
			sort.Float64s(times)
			record("histograms", fmt.Sprintf("%s, the %s day at 1m steps", q, day.name), times[1], "ms", "", nil)
		}
	}
	db.Close()
	benchHistogramTiers()
}

// benchHistogramTiers: 30 days of latency histograms (50 pods, a scrape
// a minute), one day of which comes late, after the others were rolled
// up; the p99 over the 30 days at a 1h step from raw samples and from
// the 1h tier's histogram buckets, with the late day pending (read from
// raw) and once it is rolled up too.
func benchHistogramTiers() {
	const (
		pods   = 50
		days   = 30
		scrape = 60_000
		perDay = 24 * 3600_000 / scrape
		lateD  = 15 // the day that comes late
	)
	dir, err := os.MkdirTemp("", "headroom-bench-histtier-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	end := time.Now().UTC().Truncate(24 * time.Hour).Add(-24 * time.Hour)
	start := end.Add(-days * 24 * time.Hour)
	c := &rollupBenchClock{end}
	db, err := storage.Open(dir, storage.Options{Retention: 60 * 24 * time.Hour, Now: c.Now, DisableBackground: true})
	if err != nil {
		fatal(err)
	}
	defer db.Close()
	r := rand.New(rand.NewPCG(30, 30))
	gens := make([]*latencyGen, pods)
	lsets := make([]series.Labels, pods)
	for i := range gens {
		gens[i] = newLatencyGen(r)
		lsets[i] = series.FromStrings("__name__", "http_request_duration_seconds", "job", "api", "instance", "pod-"+strconv.Itoa(i))
	}
	// writeDay writes a day's histograms, an hour a commit; hist gives
	// pod i's at scrape k.
	writeDay := func(hist func(i, k int) series.HistSample) {
		a := db.Appender()
		for k := range perDay {
			for i := range pods {
				x := hist(i, k)
				if err := a.AppendHistogramOwned(lsets[i], x.T, x.H); err != nil {
					fatal(err)
				}
			}
			if k%60 == 59 {
				if err := a.Commit(); err != nil {
					fatal(err)
				}
			}
		}
		if err := a.Commit(); err != nil {
			fatal(err)
		}
	}
	// Every day's histograms are made in order (counters grow through the
	// late day too); the late day's are kept aside.
	late := make([][]series.HistSample, pods)
	var appendDur time.Duration
	for d := range days {
		if d == lateD {
			for i := range pods {
				for k := range perDay {
					late[i] = append(late[i], series.HistSample{T: start.UnixMilli() + int64(d*perDay+k+1)*scrape, H: gens[i].next()})
				}
			}
			continue
		}
		t0 := time.Now()
		writeDay(func(i, k int) series.HistSample {
			return series.HistSample{T: start.UnixMilli() + int64(d*perDay+k+1)*scrape, H: gens[i].next()}
		})
		appendDur += time.Since(t0)
	}
	n := float64(pods * (days - 1) * perDay)
	record("histograms", "30 days x 50 pods at 1m written (an hour a commit; making the histograms included)", n/appendDur.Seconds(), "histograms/s", "", nil)
	rollAll := func() time.Duration {
		c.now = end.Add(24 * time.Hour)
		if err := db.Checkpoint(); err != nil {
			fatal(err)
		}
		c.now = c.now.Add(time.Hour)
		t0 := time.Now()
		if err := db.RunRollups(); err != nil {
			fatal(err)
		}
		return time.Since(t0)
	}
	el := rollAll()
	record("histograms", "rollup of 29 days x 50 pods of histograms (all tiers)", n/el.Seconds(), "histograms/s", "", nil)
	liveRate := n / el.Seconds()

	eng := &query.Engine{}
	src := rollupSource{db}
	q := `histogram_quantile(0.99, sum(rate(http_request_duration_seconds[1h])))`
	timeQuery := func(ctx context.Context, what string) *query.Result {
		var times []float64
		var res *query.Result
		for range 3 {
			t0 := time.Now()
			var err error
			if res, err = eng.Range(ctx, src, q, start.UnixMilli()+3600_000, end.UnixMilli(), 3600_000); err != nil {
				fatal(err)
			}
			if len(res.Series) == 0 {
				fatal(fmt.Errorf("%s: no answer", q))
			}
			times = append(times, time.Since(t0).Seconds()*1000)
		}
		sort.Float64s(times)
		record("histograms", fmt.Sprintf("p99 of 50 pods over 30 days at 1h steps, %s (tiers %v)", what, res.Tiers), times[1], "ms", "", nil)
		return res
	}
	// The late day: written now, the others rolled up.
	t0 := time.Now()
	writeDay(func(i, k int) series.HistSample { return late[i][k] })
	record("histograms", "the late day (day 15 of 30) written after the rollup (made beforehand)", float64(pods*perDay)/time.Since(t0).Seconds(), "histograms/s", "", nil)
	pending := timeQuery(context.Background(), "1h tier, the late day pending")
	el = rollAll()
	lateRate := float64(pods*perDay) / el.Seconds()
	record("histograms", "rollup of the late day (50 pods)", lateRate, "histograms/s", fmt.Sprintf(">= %.0f (live's x 0.8)", liveRate*0.8), boolp(lateRate >= liveRate*0.8))
	tier := timeQuery(context.Background(), "1h tier")
	raw := timeQuery(query.WithTier(context.Background(), "raw"), "raw samples")
	same := true
	for _, r := range []*query.Result{pending, tier} {
		for j, p := range r.Series[0].Points {
			w := raw.Series[0].Points[j]
			if p.T != w.T || math.Abs(p.V-w.V) > 1e-9*math.Abs(w.V) {
				same = false
			}
		}
	}
	record("histograms", "tier answers = raw answers (every step, within 1e-9)", map[bool]float64{true: 1, false: 0}[same], "", "1", boolp(same))
	_, tiers, err := db.TierDiskBytes()
	if err != nil {
		fatal(err)
	}
	if err := db.Flush(); err != nil {
		fatal(err)
	}
	if err := db.Compact(); err != nil {
		fatal(err)
	}
	if _, tiers, err = db.TierDiskBytes(); err != nil {
		fatal(err)
	}
	for i, name := range []string{"5m", "1h", "1d"} {
		if i < len(tiers) {
			hours := float64(pods * days * 24)
			record("histograms", fmt.Sprintf("%s tier on disk a series-hour (raw: %d histograms)", name, 3600_000/scrape), float64(tiers[i])/hours, "bytes", "", nil)
		}
	}
}
