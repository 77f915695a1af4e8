package storage

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// histCanonical is the definition a tier's histogram buckets must meet:
// the series' samples bucketed day by day as dayHistBuckets does.
func histCanonical(hs []series.HistSample, tiers []*tierState) [][]rollup.HistBucket {
	out := make([][]rollup.HistBucket, len(tiers))
	for i := 0; i < len(hs); {
		d := dayOf(hs[i].T)
		j := i
		for j < len(hs) && dayOf(hs[j].T) == d {
			j++
		}
		day := dayHistBuckets(tiers, hs[i:j], nil)
		for k := range tiers {
			out[k] = append(out[k], day[k]...)
		}
		i = j
	}
	return out
}

// checkHistTiers compares every tier's histogram buckets, as a query
// reads them, with the definition computed from the samples the store
// returns; it returns the series-days read from raw samples.
func checkHistTiers(t *testing.T, db *DB, what string) int {
	t.Helper()
	m := series.MustMatcher(series.MatchEqual, series.MetricName, "latency_seconds")
	all := queryHists(t, db, 0, MaxTime, m)
	if len(all) == 0 {
		t.Fatalf("%s: no histograms stored", what)
	}
	rawDays := 0
	for ti := range db.tiers {
		got := map[string][]rollup.HistBucket{}
		rr, err := db.EachHistRollup(ti, 0, math.MaxInt64/4, 0, 1, []*series.Matcher{m}, func(ls series.Labels, bs []rollup.HistBucket) error {
			got[ls.String()] = bs
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		rawDays += rr.RawDays
		for name, hs := range all {
			want := histCanonical(hs, db.tiers)[ti]
			g := got[name]
			if len(g) != len(want) {
				t.Fatalf("%s: %s %v tier: %d buckets, want %d", what, name, db.tiers[ti].Resolution, len(g), len(want))
			}
			for i := range want {
				if g[i].Start != want[i].Start {
					t.Fatalf("%s: %s %v tier: bucket %d at %d, want %d", what, name, db.tiers[ti].Resolution, i, g[i].Start, want[i].Start)
				}
				if d := histBucketDiff(&g[i], &want[i]); d != "" {
					t.Fatalf("%s: %s %v bucket at %v: %s", what, name, db.tiers[ti].Resolution, time.UnixMilli(want[i].Start).UTC(), d)
				}
			}
		}
		if len(got) != len(all) {
			t.Fatalf("%s: %v tier has %d histogram series, want %d", what, db.tiers[ti].Resolution, len(got), len(all))
		}
	}
	return rawDays
}

// Histogram tiers are exact whatever the order samples come in: before
// the downsampler ran (computed from raw samples and the head), once it
// has (stored), after late samples land in rolled-up days, and across a
// reopen; CheckTiers agrees, and finds a damaged bucket.
func TestHistogramTiersExact(t *testing.T) {
	seed := testSeed(t)
	r := rand.New(rand.NewPCG(seed, 17))
	c := &clock{day0.Add(6 * 24 * time.Hour)}
	o := rollupOptions(c)
	o.ChunkSamples = 40
	dir := t.TempDir()
	db := openTest(t, dir, o)
	defer func() { db.Close() }()

	// Three days of two counter histograms (resets, new buckets, schema
	// and float changes), a sample every 30 s to 3 min, in runs written
	// in random order: most days see late samples.
	type run struct {
		ls series.Labels
		hs []series.HistSample
	}
	var runs []run
	for s := range 2 {
		ls := series.FromStrings(series.MetricName, "latency_seconds", "pod", string(rune('a'+s)))
		g := newHistGen(r)
		tt := day0.Add(2 * 24 * time.Hour).UnixMilli()
		var cur run
		for tt < day0.Add(5*24*time.Hour).UnixMilli() {
			tt += int64(30_000 + r.IntN(150_000))
			cur.hs = append(cur.hs, series.HistSample{T: tt, H: g.next()})
			if len(cur.hs) == 60 {
				cur.ls = ls
				runs = append(runs, cur)
				cur = run{}
			}
		}
		cur.ls = ls
		runs = append(runs, cur)
	}
	r.Shuffle(len(runs), func(i, j int) { runs[i], runs[j] = runs[j], runs[i] })
	write := func(rs []run) {
		for i, x := range rs {
			a := db.Appender()
			for _, s := range x.hs {
				if err := a.AppendHistogram(x.ls, s.T, s.H); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.Commit(); err != nil {
				t.Fatal(err)
			}
			if i%7 == 6 {
				if err := db.Checkpoint(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	half := len(runs) / 2
	write(runs[:half])
	if n := checkHistTiers(t, db, "before any rollup, partly in the head"); n == 0 {
		t.Fatal("nothing was read from raw samples before the downsampler ran")
	}
	drain(t, db, c)
	if n := checkHistTiers(t, db, "rolled up"); n != 0 {
		t.Fatalf("%d series-days read from raw samples once rolled up", n)
	}
	rep, err := db.CheckTiers(nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Differing != 0 || rep.Buckets == 0 {
		t.Fatalf("CheckTiers after the rollup: %d differing of %d: %v", rep.Differing, rep.Buckets, rep.Diffs)
	}
	// Late samples into rolled-up days: exact at once, from raw samples
	// until the downsampler has them again.
	write(runs[half:])
	checkHistTiers(t, db, "late samples, not rolled up")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, dir, o)
	checkHistTiers(t, db, "reopened")
	drain(t, db, c)
	if n := checkHistTiers(t, db, "rolled up again"); n != 0 {
		t.Fatalf("%d series-days read from raw samples once rolled up", n)
	}
	if rep, err = db.CheckTiers(nil); err != nil {
		t.Fatal(err)
	}
	if rep.Differing != 0 || rep.Buckets == 0 {
		t.Fatalf("CheckTiers after the late samples: %d differing of %d: %v", rep.Differing, rep.Buckets, rep.Diffs)
	}
	if n := countKeys(t, db, kindHistRollup); n == 0 {
		t.Fatal("no histogram rollup block stored")
	}

	// A stored bucket that lost a sample's worth of count is found.
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kindHistRollup, 1}, UpperBound: []byte{kindHistRollup, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if !it.First() {
		t.Fatal("no 1h histogram block")
	}
	key := append([]byte(nil), it.Key()...)
	bs, err := rollup.DecodeHistBlock(nil, it.Value())
	it.Close()
	if err != nil {
		t.Fatal(err)
	}
	bs[len(bs)/2].Count--
	if bs[len(bs)/2].Count == 0 {
		bs[len(bs)/2].Count += 2
	}
	enc, err := rollup.AppendHistBlock(nil, bs)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.pdb.Set(key, enc, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if rep, err = db.CheckTiers(nil); err != nil {
		t.Fatal(err)
	}
	if rep.Differing != 1 {
		t.Fatalf("CheckTiers found %d differing buckets after one was damaged: %v", rep.Differing, rep.Diffs)
	}
}

// Histograms older than raw retention, in a day the tiers keep, are
// taken (no longer refused): a query sees them in the tiers at once
// (from the head, then from the dropped day's chunks), the downsampler
// merges them into the blocks and deletes their chunks, once.
func TestHistogramBackfillIntoTiers(t *testing.T) {
	c := &clock{day0}
	o := rollupOptions(c)
	o.Retention = 2 * 24 * time.Hour
	o.Tiers = []Tier{{5 * time.Minute, 10 * 24 * time.Hour}, {time.Hour, 30 * 24 * time.Hour}}
	db := openTest(t, t.TempDir(), o)
	defer db.Close()
	ls := series.FromStrings("__name__", "latency_seconds", "pod", "a")
	m := series.MustMatcher(series.MatchEqual, series.MetricName, "latency_seconds")
	g := newHistGen(rand.New(rand.NewPCG(1, 2)))
	// A day of histograms a minute, without resets: a counter.
	count := 0.0
	next := func() *series.Histogram {
		h := g.next()
		h.CounterReset = 0
		h.Float = false
		count += 10
		h.Count, h.ZeroCount = count, count
		clear(h.PositiveBuckets)
		clear(h.NegativeBuckets)
		return h
	}
	app := db.Appender()
	for ts := ms(day0) - 86400_000; ts < ms(day0); ts += 60_000 {
		if err := app.AppendHistogram(ls, ts, next()); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	c.now = day0.Add(5 * 24 * time.Hour)
	drain(t, db, c)
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if f := db.rawFloor.Load(); f <= dayOf(ms(day0)-1) {
		t.Fatalf("raw floor %s, want the data's day dropped", dayString(f))
	}
	// Two histograms into the dropped day, between minute 5 (the last of
	// a 5m bucket) and minute 6 (the first of the next): the earlier
	// becomes the next bucket's first, the later counts among its others.
	dayStart := ms(day0) - 86400_000
	early := dayStart + 5*60_000 + 20_000
	later := dayStart + 5*60_000 + 40_000
	app = db.Appender()
	for _, ts := range []int64{early, later} {
		h := &series.Histogram{Schema: 3, ZeroThreshold: 1e-128, ZeroCount: 7, Count: 7}
		if err := app.AppendHistogram(ls, ts, h); err != nil {
			t.Fatalf("a histogram older than raw retention that the tiers keep: %v", err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	find := func(tier int, at int64) rollup.HistBucket {
		t.Helper()
		var out rollup.HistBucket
		_, err := db.EachHistRollup(tier, MinTime, MaxTime, 0, 1, []*series.Matcher{m}, func(_ series.Labels, bs []rollup.HistBucket) error {
			for _, b := range bs {
				if b.Start == rollup.BucketStart(at, db.tiers[tier].res) {
					out = b
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	check := func(when string) {
		t.Helper()
		// The 5m bucket (minute 5, minute 10] held 5 histograms: 2 more now.
		b := find(0, early)
		if b.Count != 7 || b.First().T != early || b.Last().T != dayStart+10*60_000 {
			t.Fatalf("%s: 5m bucket %+v, want 7 histograms from the backfilled one", when, b)
		}
		// The reset to a count of 7 from the minute-5 histogram is seen
		// only where the new one is a bucket's first: the 1h bucket holds
		// it among the others, and counts it.
		if b := find(1, early); b.Count != 62 {
			t.Fatalf("%s: 1h bucket of %d histograms, want 62", when, b.Count)
		}
	}
	check("in the head")
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if n := countKeys(t, db, kindHistChunk); n == 0 {
		t.Fatal("the backfilled histograms are not in the dropped day's chunks")
	}
	check("checkpointed")
	drain(t, db, c)
	check("merged")
	if n := countKeys(t, db, kindHistChunk); n != 0 {
		t.Fatalf("%d histogram chunks left in the dropped day after the merge", n)
	}
	c.now = c.now.Add(time.Hour)
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	check("after a second run")
}

// BenchmarkDayHistBuckets: a day of one series' latency histograms
// (a scrape every 15 s, 40 buckets) bucketed at every default tier.
func BenchmarkDayHistBuckets(b *testing.B) {
	r := rand.New(rand.NewPCG(8, 8))
	g := newHistGen(r)
	var hs []series.HistSample
	for k := 1; k <= 5760; k++ {
		h := g.next()
		h.CounterReset = 0
		hs = append(hs, series.HistSample{T: int64(k) * 15_000, H: h})
	}
	var tiers []*tierState
	for i, t := range DefaultTiers {
		ts := &tierState{Tier: t, idx: i, res: t.Resolution.Milliseconds()}
		ts.span = blockBuckets * ts.res
		tiers = append(tiers, ts)
	}
	b.ReportAllocs()
	for b.Loop() {
		dayHistBuckets(tiers, hs, nil)
	}
}
