package storage

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/series"
)

// histGen makes a counter histogram series as a client would: buckets
// that grow, now and then a new bucket (a new layout), a reset, or a
// switch to float counts.
type histGen struct {
	r *rand.Rand
	h series.Histogram
}

func newHistGen(r *rand.Rand) *histGen {
	g := &histGen{r: r}
	g.h = series.Histogram{Schema: 3, ZeroThreshold: 1e-128,
		PositiveSpans: []series.Span{{Offset: 2, Length: 3}, {Offset: 1, Length: 2}}, PositiveBuckets: make([]float64, 5),
		NegativeSpans: []series.Span{{Offset: 0, Length: 1}}, NegativeBuckets: make([]float64, 1)}
	return g
}

func (g *histGen) next() *series.Histogram {
	h := &g.h
	h.CounterReset = 0
	switch x := g.r.IntN(40); {
	case x == 0: // reset
		clear(h.PositiveBuckets)
		clear(h.NegativeBuckets)
		h.ZeroCount, h.Sum = 0, 0
		h.CounterReset = 1
	case x == 1: // a new bucket at the end
		h.PositiveSpans = append(slices.Clone(h.PositiveSpans), series.Span{Offset: 1, Length: 1})
		h.PositiveBuckets = append(slices.Clone(h.PositiveBuckets), 0)
	case x == 2:
		h.Float = !h.Float
	case x == 3 && h.Schema > series.MinSchema: // a coarser schema, as a client that halves its resolution
		h.Schema--
	}
	total := 0.0
	for i := range h.PositiveBuckets {
		h.PositiveBuckets[i] += float64(g.r.IntN(5))
		total += h.PositiveBuckets[i]
	}
	for i := range h.NegativeBuckets {
		h.NegativeBuckets[i] += float64(g.r.IntN(2))
		total += h.NegativeBuckets[i]
	}
	h.ZeroCount += float64(g.r.IntN(2))
	total += h.ZeroCount
	h.Count = total
	h.Sum += float64(g.r.IntN(100)) / 8
	if h.Float {
		h.Sum += 0.1
	}
	return h.Clone()
}

// histKey renders a histogram for comparison: its buckets by index, the
// empty ones left out (a chunk may widen a sample's layout to its
// neighbours'), and the counter reset hint aside (a chunk keeps only its
// first sample's; later ones read "no reset"), but a reset must never
// be lost.
func histKey(h *series.Histogram) string {
	c := *h
	c.CounterReset = 0
	if h.CounterReset == 1 {
		c.CounterReset = 1
	}
	c.PositiveSpans, c.PositiveBuckets, c.NegativeSpans, c.NegativeBuckets = nil, nil, nil, nil
	b := series.AppendHistogramBinary(nil, &c)
	for _, side := range []struct {
		spans   []series.Span
		buckets []float64
	}{{h.PositiveSpans, h.PositiveBuckets}, {h.NegativeSpans, h.NegativeBuckets}} {
		b = append(b, '|')
		chunk.EachBucket(side.spans, side.buckets, func(i int32, n float64) {
			if n != 0 {
				b = fmt.Appendf(b, "%d:%v,", i, n)
			}
		})
	}
	return string(b)
}

func queryHists(t *testing.T, db *DB, mint, maxt int64, ms ...*series.Matcher) map[string][]series.HistSample {
	t.Helper()
	q, err := db.Querier(mint, maxt)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set, err := q.Series(ms...)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]series.HistSample{}
	for set.Next() {
		ls, _ := set.At()
		if hs := set.(series.HistSet).Hists(); len(hs) > 0 {
			out[ls.String()] = hs
		}
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Histograms in order, late, overwritten, across days, through the head,
// checkpoints, clean reopens and log replays, against a model.
func TestHistogramsAgainstModel(t *testing.T) {
	seed := testSeed(t)
	r := rand.New(rand.NewPCG(seed, 7))
	c := &clock{day0.Add(3 * 24 * time.Hour)}
	o := testOptions(c)
	o.ChunkSamples = 30 // several chunks a day at this size
	dir := t.TempDir()
	db := openTest(t, dir, o)
	defer func() { db.Close() }()

	const nSeries = 4
	lsets := make([]series.Labels, nSeries)
	gens := make([]*histGen, nSeries)
	model := make([]map[int64]string, nSeries)
	for i := range lsets {
		lsets[i] = series.FromStrings("__name__", "latency", "pod", fmt.Sprint(i))
		gens[i] = newHistGen(r)
		model[i] = map[int64]string{}
	}
	floats := series.FromStrings("__name__", "latency_count_f", "pod", "0")
	floatModel := map[int64]float64{}
	next := make([]int64, nSeries) // each series' live time, moving on
	start := ms(day0)
	for i := range next {
		next[i] = start
	}
	check := func(when string) {
		t.Helper()
		got := queryHists(t, db, 0, MaxTime, series.MustMatcher(series.MatchEqual, "__name__", "latency"))
		for i, ls := range lsets {
			hs := got[ls.String()]
			if len(hs) != len(model[i]) {
				t.Fatalf("%s: series %d has %d histograms, want %d (seed %d)", when, i, len(hs), len(model[i]), seed)
			}
			for j, x := range hs {
				if j > 0 && hs[j-1].T >= x.T {
					t.Fatalf("%s: series %d out of order at %d", when, i, j)
				}
				if want, ok := model[i][x.T]; !ok || want != histKey(x.H) {
					t.Fatalf("%s: series %d at %d: got %+v, stored %v (seed %d)", when, i, x.T, *x.H, ok, seed)
				}
			}
		}
		fs := query(t, db, 0, MaxTime, series.MustMatcher(series.MatchEqual, "__name__", "latency_count_f"))[floats.String()]
		if len(fs) != len(floatModel) {
			t.Fatalf("%s: %d floats, want %d", when, len(fs), len(floatModel))
		}
	}
	for round := range 60 {
		a := db.Appender()
		for range 1 + r.IntN(20) {
			i := r.IntN(nSeries)
			var ts int64
			if r.IntN(4) == 0 && next[i] > start {
				ts = start + r.Int64N(next[i]-start) // late: anywhere before
			} else {
				next[i] += 10_000 + r.Int64N(50_000)*int64(1+r.IntN(200)) // crosses days now and then
				ts = next[i]
			}
			h := gens[i].next()
			if err := a.AppendHistogram(lsets[i], ts, h); err != nil {
				t.Fatal(err)
			}
			model[i][ts] = histKey(h)
			if err := a.Append(floats, ts, h.Count); err != nil {
				t.Fatal(err)
			}
			floatModel[ts] = h.Count
		}
		if err := a.Commit(); err != nil {
			t.Fatal(err)
		}
		switch r.IntN(8) {
		case 0:
			if err := db.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		case 1:
			if err := db.CloseNoCheckpoint(); err != nil {
				t.Fatal(err)
			}
			db = openTest(t, dir, o)
		case 2:
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			db = openTest(t, dir, o)
		}
		check(fmt.Sprintf("round %d", round))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, m := range model {
		total += len(m)
	}
	if rep.Damaged() || rep.HistSamples != int64(total) {
		t.Fatalf("check: %d histograms in %d chunks, want %d; damage %v", rep.HistSamples, rep.HistChunks, total, rep.Damage)
	}
	db = openTest(t, dir, o)
	check("after check")
}

func TestHistogramRefused(t *testing.T) {
	c := &clock{day0}
	db := openTest(t, t.TempDir(), testOptions(c))
	defer db.Close()
	ls := series.FromStrings("__name__", "latency", "job", "api")
	good := series.Histogram{Schema: 0, Count: 3, Sum: 1, PositiveSpans: []series.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []float64{1, 2}}
	for _, tc := range []struct {
		name string
		edit func(h *series.Histogram)
		t    int64
		want string
	}{
		{"spans", func(h *series.Histogram) { h.PositiveSpans[0].Length = 3 }, ms(day0), "positive spans count 3 buckets, 2 given"},
		{"negative count", func(h *series.Histogram) { h.PositiveBuckets[1] = -1 }, ms(day0), "positive bucket 1 has count -1"},
		{"count", func(h *series.Histogram) { h.Count = 2 }, ms(day0), "count 2 is below the 3"},
		{"schema", func(h *series.Histogram) { h.Schema = 9 }, ms(day0), "schema 9"},
		{"fraction", func(h *series.Histogram) { h.PositiveBuckets[0] = 0.5; h.Count = 2.5 }, ms(day0), "integer histogram has a count of"},
		{"retention", func(h *series.Histogram) {}, ms(day0) - 31*24*3600*1000, "before the retention cutoff"},
	} {
		h := good.Clone()
		h.PositiveSpans = slices.Clone(h.PositiveSpans)
		tc.edit(h)
		a := db.Appender()
		err := a.AppendHistogram(ls, tc.t, h)
		a.Rollback()
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) || !bytes.Contains([]byte(err.Error()), []byte(`job="api"`)) {
			t.Errorf("%s: err = %v, want it to say %q and name the series", tc.name, err, tc.want)
		}
		if tc.name != "retention" && !errors.Is(err, series.ErrInvalid) {
			t.Errorf("%s: %v does not wrap ErrInvalid", tc.name, err)
		}
	}
	if n := db.ActiveSeries(); n != 0 {
		t.Errorf("refused histograms left %d series in the head", n)
	}
}

func TestHistogramBinaryRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	g := newHistGen(r)
	for range 200 {
		h := g.next()
		b := series.AppendHistogramBinary(nil, h)
		got, n, err := series.ReadHistogramBinary(append(b, 0xff))
		if err != nil || n != len(b) || !bytes.Equal(series.AppendHistogramBinary(nil, got), b) {
			t.Fatalf("round trip of %+v: %+v, %d of %d bytes, %v", *h, got, n, len(b), err)
		}
		for cut := range len(b) {
			if _, _, err := series.ReadHistogramBinary(b[:cut]); err == nil {
				t.Fatalf("%d of %d bytes decoded without error", cut, len(b))
			}
		}
	}
}

// Live data checkpointed a few samples at a time extends the newest
// stored chunk instead of starting one per checkpoint.
func TestHistogramChunksFill(t *testing.T) {
	c := &clock{day0}
	o := testOptions(c)
	o.ChunkSamples = 30
	dir := t.TempDir()
	db := openTest(t, dir, o)
	ls := series.FromStrings("__name__", "latency")
	h := series.Histogram{Schema: 1, PositiveSpans: []series.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []float64{0, 0}}
	t0 := ms(day0) - 12*3600*1000
	const n = 300
	for i := range n {
		h.PositiveBuckets[0] += 2
		h.PositiveBuckets[1] += 3
		h.Count, h.Sum = h.Count+5, h.Sum+7.5
		a := db.Appender()
		if err := a.AppendHistogram(ls, t0+int64(i)*15_000, &h); err != nil {
			t.Fatal(err)
		}
		if err := a.Commit(); err != nil {
			t.Fatal(err)
		}
		if i%3 == 2 {
			if err := db.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.HistSamples != n || rep.HistChunks != n/30 {
		t.Fatalf("%d histograms in %d chunks, want %d in %d", rep.HistSamples, rep.HistChunks, n, n/30)
	}
}

// Retention drops histogram chunks with the float chunks of their days,
// and a series whose histograms go on past its floats is not collected.
func TestHistogramRetention(t *testing.T) {
	c := &clock{day0}
	o := testOptions(c)
	o.Retention = 3 * 24 * time.Hour
	o.HeadIdleTimeout = time.Nanosecond
	dir := t.TempDir()
	db := openTest(t, dir, o)
	old := series.FromStrings("__name__", "latency", "pod", "old")
	mixed := series.FromStrings("__name__", "latency", "pod", "mixed")
	h := &series.Histogram{Schema: 0, Count: 1, Sum: 1, PositiveSpans: []series.Span{{Length: 1}}, PositiveBuckets: []float64{1}}
	a := db.Appender()
	for _, err := range []error{
		a.AppendHistogram(old, ms(day0)-1000, h),
		a.Append(mixed, ms(day0)-1000, 5),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	db.Checkpoint()
	c.now = day0.Add(5 * 24 * time.Hour)
	a = db.Appender()
	if err := a.AppendHistogram(mixed, ms(c.now)-1000, h); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		db.Checkpoint()
	}
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	got := queryHists(t, db, 0, MaxTime, series.MustMatcher(series.MatchEqual, "__name__", "latency"))
	if len(got) != 1 || len(got[mixed.String()]) != 1 {
		t.Fatalf("after retention: %v, want only the mixed series' new histogram", got)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(dir, nil)
	if err != nil || rep.Damaged() || rep.HistChunks != 1 || rep.Series != 1 {
		t.Fatalf("check: %d series, %d histogram chunks, damage %v, %v; want 1 and 1", rep.Series, rep.HistChunks, rep.Damage, err)
	}
}
