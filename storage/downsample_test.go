package storage

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// rollupOptions: the default tiers, raw kept long enough for the test's
// days, the clock the test moves, and three rollup workers, so that the
// tests hold for a window split between goroutines.
func rollupOptions(c *clock) Options {
	o := testOptions(c)
	o.Tiers = nil
	o.Retention = 60 * 24 * time.Hour
	o.RollupWorkers = 3
	return o
}

// expectBuckets is the definition a tier must meet: every non-stale raw
// sample, bucketed at res, added in time order.
func expectBuckets(ss []series.Sample, res, before int64) []rollup.Bucket {
	var bs []rollup.Bucket
	for _, s := range ss {
		if series.IsStaleNaN(s.V) {
			continue
		}
		start := rollup.BucketStart(s.T, res)
		if start >= before {
			continue
		}
		if len(bs) == 0 || bs[len(bs)-1].Start != start {
			bs = append(bs, rollup.Bucket{Start: start})
		}
		bs[len(bs)-1].Add(s.T, s.V)
	}
	return bs
}

func sameBuckets(t *testing.T, what string, got, want []rollup.Bucket) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d buckets, want %d", what, len(got), len(want))
	}
	close := func(a, b float64) bool {
		return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b)) || (math.IsNaN(a) && math.IsNaN(b))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Start != w.Start || g.Count != w.Count || g.FirstT != w.FirstT || g.LastT != w.LastT ||
			!close(g.Sum, w.Sum) || !close(g.Min, w.Min) || !close(g.Max, w.Max) || !close(g.First, w.First) || !close(g.Last, w.Last) || !close(g.Increase, w.Increase) {
			t.Fatalf("%s: bucket %d\n got %+v\nwant %+v", what, i, g, w)
		}
		if !bytes.Equal(g.Sketch.AppendBinary(nil), w.Sketch.AppendBinary(nil)) {
			t.Fatalf("%s: bucket %d: sketch differs", what, i)
		}
	}
}

// Property: for random raw data (gaps, stale markers, counters with
// resets, irregular intervals), every tier's buckets equal the buckets
// computed straight from the raw samples, including after late samples.
func TestRollupsEqualRaw(t *testing.T) {
	r := rand.New(rand.NewPCG(testSeed(t), 11))
	c := &clock{day0}
	db := openTest(t, t.TempDir(), rollupOptions(c))
	defer db.Close()
	start := ms(day0) - 3*86400_000 + r.Int64N(3600_000)
	end := ms(day0)
	raw := map[string][]series.Sample{}
	var lsets []series.Labels
	for s := 0; s < 6; s++ {
		ls := series.FromStrings("__name__", "m", "i", fmt.Sprint(s))
		lsets = append(lsets, ls)
		var ss []series.Sample
		v := 0.0
		from, step := start, func() int64 { return 5_000 + r.Int64N(30_000) }
		if s%3 == 2 { // scraped on a 10 s grid: samples on bucket boundaries
			from, step = rollup.Align(start, 10_000), func() int64 { return 10_000 * (1 + r.Int64N(3)) }
		}
		for ts := from; ts < end; ts += step() {
			if r.IntN(200) == 0 {
				ts += 10_000 * r.Int64N(1440) // a gap (keeping a grid on its grid)
			}
			switch {
			case r.IntN(100) == 0:
				ss = append(ss, series.Sample{T: ts, V: series.StaleNaN})
				continue
			case s%2 == 0 && r.IntN(300) == 0:
				v = 0 // counter reset
			case s%2 == 0:
				v += float64(r.IntN(10))
			default:
				v = math.Round(r.NormFloat64()*1000) / 100
			}
			ss = append(ss, series.Sample{T: ts, V: v})
		}
		raw[ls.String()] = ss
		for i := 0; i < len(ss); i += 500 {
			mustAppend(t, db, ls, ss[i:min(i+500, len(ss))]...)
		}
	}
	check := func(when string) {
		t.Helper()
		for ti, tier := range db.opts.Tiers {
			before := db.tiers[ti].watermark.Load()
			got, err := db.Rollups(ti, MinTime, MaxTime)
			if err != nil {
				t.Fatal(err)
			}
			byLabels := map[string][]rollup.Bucket{}
			for _, s := range got {
				byLabels[s.Labels.String()] = s.Buckets
			}
			for _, ls := range lsets {
				want := expectBuckets(raw[ls.String()], tier.Resolution.Milliseconds(), before)
				sameBuckets(t, fmt.Sprintf("%s: %v tier of %s", when, tier.Resolution, ls), byLabels[ls.String()], want)
			}
		}
	}
	c.now = day0.Add(2 * 24 * time.Hour) // every tier can close its buckets up to day0
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	for _, tr := range db.tiers {
		if w := tr.watermark.Load(); w < ms(day0)-tr.res {
			t.Fatalf("%v watermark %v, want near %v", tr.Resolution, time.UnixMilli(w).UTC(), day0)
		}
	}
	check("first run")

	// Late samples into buckets already rolled up, in every tier.
	for k := 0; k < 20; k++ {
		ls := lsets[r.IntN(len(lsets))]
		ss := raw[ls.String()]
		ts := start + r.Int64N(end-start)
		i, found := slices.BinarySearchFunc(ss, ts, func(s series.Sample, t int64) int { return int(s.T - t) })
		if found {
			continue
		}
		late := series.Sample{T: ts, V: float64(r.IntN(1000))}
		ss = slices.Insert(ss, i, late)
		raw[ls.String()] = ss
		mustAppend(t, db, ls, late)
	}
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	check("after late samples")
	if n := countKeys(t, db, kindDirty); n != 0 {
		t.Fatalf("%d dirty markers left", n)
	}

	// A crash after the blocks but before the watermark (or anywhere):
	// running again from older watermarks gives the same rollups.
	for _, tr := range db.tiers {
		tr.watermark.Store(tr.watermark.Load() - 2*tr.span)
	}
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	check("after rerunning")
}

func countKeys(t *testing.T, db *DB, kind byte) int {
	t.Helper()
	it, err := db.pdb.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for valid := it.SeekGE([]byte{kind}); valid && it.Key()[0] == kind; valid = it.Next() {
		n++
	}
	return n
}

// Raw days are dropped only once rolled up; each tier drops its own
// partitions at its own retention, and series stay while any tier has them.
func TestTierRetention(t *testing.T) {
	c := &clock{day0}
	o := rollupOptions(c)
	o.Retention = 2 * 24 * time.Hour
	o.Tiers = []Tier{{5 * time.Minute, 4 * 24 * time.Hour}, {time.Hour, 30 * 24 * time.Hour}}
	o.HeadIdleTimeout = time.Nanosecond // the series leaves the head at once
	db := openTest(t, t.TempDir(), o)
	defer db.Close()
	ls := series.FromStrings("__name__", "m")
	var ss []series.Sample
	for ts := ms(day0) - 86400_000; ts < ms(day0); ts += 60_000 {
		ss = append(ss, series.Sample{T: ts, V: 1})
	}
	mustAppend(t, db, ls, ss...)
	for i := 0; i < 3; i++ {
		if err := db.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}

	// Three days later raw has expired, but is not rolled up: kept.
	c.now = day0.Add(3 * 24 * time.Hour)
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if got := query(t, db, MinTime, MaxTime, nameM); len(got[ls.String()]) != len(ss) {
		t.Fatalf("raw data dropped before its rollup: %d samples left", len(got[ls.String()]))
	}
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if got := query(t, db, MinTime, MaxTime, nameM); len(got) != 0 {
		t.Fatalf("rolled-up raw data kept past retention: %v", got)
	}
	tiersHave := func() (int, int) {
		a, err := db.Rollups(0, MinTime, MaxTime, nameM)
		if err != nil {
			t.Fatal(err)
		}
		b, err := db.Rollups(1, MinTime, MaxTime, nameM)
		if err != nil {
			t.Fatal(err)
		}
		n := func(rs []RollupSeries) int {
			if len(rs) == 0 {
				return 0
			}
			return len(rs[0].Buckets)
		}
		return n(a), n(b)
	}
	// Buckets are left-open: the first sample, on the day's first
	// instant, is in the bucket ending there, a day the 5m tier (4 days)
	// has already dropped and the 1h tier keeps.
	if a, b := tiersHave(); a != 288 || b != 25 {
		t.Fatalf("after the raw days went: %d 5m and %d 1h buckets, want 288 and 25", a, b)
	}
	// Past the 5m tier's 4 days, before the 1h tier's 30.
	c.now = day0.Add(6 * 24 * time.Hour)
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if a, b := tiersHave(); a != 0 || b != 25 {
		t.Fatalf("past 5m retention: %d 5m and %d 1h buckets, want 0 and 25", a, b)
	}
	if db.stats.SeriesCollected.Load() != 0 {
		t.Fatal("a series with 1h rollups was collected")
	}
	c.now = day0.Add(40 * 24 * time.Hour)
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if a, b := tiersHave(); a != 0 || b != 0 {
		t.Fatalf("past every retention: %d and %d buckets", a, b)
	}
	if db.stats.SeriesCollected.Load() != 1 {
		t.Fatalf("SeriesCollected = %d, want 1", db.stats.SeriesCollected.Load())
	}
}

var nameM = series.MustMatcher(series.MatchEqual, "__name__", "m")

// Retention rules by selector: dev series keep raw samples 3 days instead
// of 10; node_ series keep 1h rollups 30 days instead of 10; the others
// follow the tiers' own retention.
func TestRetentionRules(t *testing.T) {
	c := &clock{day0}
	o := rollupOptions(c)
	o.Retention = 10 * 24 * time.Hour
	o.Tiers = []Tier{{5 * time.Minute, 10 * 24 * time.Hour}, {time.Hour, 10 * 24 * time.Hour}}
	o.RetentionRules = []RetentionRule{
		{Matchers: []*series.Matcher{series.MustMatcher(series.MatchEqual, "env", "dev")}, Tier: -1, Retention: 3 * 24 * time.Hour},
		{Matchers: []*series.Matcher{series.MustMatcher(series.MatchRegexp, "__name__", "node_.*")}, Tier: 1, Retention: 30 * 24 * time.Hour},
	}
	db := openTest(t, t.TempDir(), o)
	defer db.Close()
	dev := series.FromStrings("__name__", "m", "env", "dev")
	prod := series.FromStrings("__name__", "m", "env", "prod")
	node := series.FromStrings("__name__", "node_load", "env", "prod")
	for _, ls := range []series.Labels{dev, prod, node} {
		var ss []series.Sample
		for ts := ms(day0) - 8*86400_000 + 30_000; ts < ms(day0); ts += 600_000 {
			ss = append(ss, series.Sample{T: ts, V: 1})
		}
		mustAppend(t, db, ls, ss...)
	}
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	c.now = day0.Add(24 * time.Hour)
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	oldest := func(ss []series.Sample) time.Duration {
		if len(ss) == 0 {
			return 0
		}
		return time.UnixMilli(ms(c.now)).Sub(time.UnixMilli(ss[0].T))
	}
	raw := query(t, db, MinTime, MaxTime, series.MustMatcher(series.MatchRegexp, "__name__", ".+"))
	if d := oldest(raw[dev.String()]); d > 3*24*time.Hour || d < 2*24*time.Hour {
		t.Errorf("dev raw data reaches back %v, want at most 3 days", d)
	}
	if d := oldest(raw[prod.String()]); d < 8*24*time.Hour {
		t.Errorf("prod raw data reaches back %v, want all 8 days (10-day retention)", d)
	}

	// 25 days on: the 1h tier (10 days) has dropped everything but node_.
	c.now = day0.Add(25 * 24 * time.Hour)
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	hourly, err := db.Rollups(1, MinTime, MaxTime)
	if err != nil {
		t.Fatal(err)
	}
	if len(hourly) != 1 || hourly[0].Labels.String() != node.String() || len(hourly[0].Buckets) < 8*24 {
		var got []string
		for _, s := range hourly {
			got = append(got, fmt.Sprintf("%s: %d buckets", s.Labels, len(s.Buckets)))
		}
		t.Errorf("1h tier after 25 days: %v, want node_load's 8 days only", got)
	}
	// A rule naming a tier that does not exist is refused.
	bad := o
	bad.RetentionRules = []RetentionRule{{Matchers: o.RetentionRules[0].Matchers, Tier: 5, Retention: time.Hour}}
	if err := bad.Validate(); err == nil {
		t.Error("a rule for tier 5 of 2 was accepted")
	}
}

// Samples older than the raw retention go straight into the finest tier
// that keeps them (and, rolled up again, the coarser ones); samples no
// tier keeps are refused.
func TestBackfillIntoRollups(t *testing.T) {
	c := &clock{day0}
	o := rollupOptions(c)
	o.Retention = 2 * 24 * time.Hour
	o.Tiers = []Tier{{5 * time.Minute, 10 * 24 * time.Hour}, {time.Hour, 30 * 24 * time.Hour}}
	db := openTest(t, t.TempDir(), o)
	defer db.Close()
	a := series.FromStrings("__name__", "m", "s", "a")
	b := series.FromStrings("__name__", "m", "s", "b")
	var recent []series.Sample
	for ts := ms(day0) - 86400_000; ts < ms(day0); ts += 60_000 {
		recent = append(recent, series.Sample{T: ts, V: 1})
	}
	mustAppend(t, db, a, recent...)
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}

	five := ms(day0) - 5*86400_000 + 100_000 // kept by the 5m tier only
	twenty := ms(day0) - 20*86400_000 + 100_000
	mustAppend(t, db, a, series.Sample{T: five, V: 7}, series.Sample{T: five + 60_000, V: 3})
	mustAppend(t, db, b, series.Sample{T: twenty, V: 42})
	app := db.Appender()
	if err := app.Append(a, ms(day0)-40*86400_000, 1); !errors.Is(err, series.ErrOutOfRetention) {
		t.Fatalf("a sample no tier keeps: %v", err)
	}
	app.Rollback()
	if got := query(t, db, MinTime, ms(day0)-3*86400_000, nameM); len(got) != 0 {
		t.Fatalf("backfilled samples in raw storage: %v", got)
	}
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	find := func(tier int, ls series.Labels, at int64) rollup.Bucket {
		t.Helper()
		rs, err := db.Rollups(tier, MinTime, MaxTime)
		if err != nil {
			t.Fatal(err)
		}
		start := rollup.BucketStart(at, db.tiers[tier].res)
		for _, s := range rs {
			if s.Labels.String() != ls.String() {
				continue
			}
			for _, bk := range s.Buckets {
				if bk.Start == start {
					return bk
				}
			}
		}
		return rollup.Bucket{}
	}
	if bk := find(0, a, five); bk.Count != 2 || bk.Min != 3 || bk.Max != 7 || bk.First != 7 || bk.Last != 3 {
		t.Errorf("5m bucket of the backfill: %+v", bk)
	}
	if bk := find(1, a, five); bk.Count != 2 || bk.Sum != 10 {
		t.Errorf("1h bucket of the backfill (rolled up again from 5m): %+v", bk)
	}
	if bk := find(1, b, twenty); bk.Count != 1 || bk.Last != 42 {
		t.Errorf("1h bucket of a sample only the 1h tier keeps: %+v", bk)
	}
	if bk := find(0, b, twenty); bk.Count != 0 {
		t.Errorf("the 5m tier took a sample older than it keeps: %+v", bk)
	}
	if n := countKeys(t, db, kindBackfill); n != 0 {
		t.Fatalf("%d backfill keys left", n)
	}
	// Running again merges nothing twice.
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	if bk := find(0, a, five); bk.Count != 2 {
		t.Errorf("after a second run: %+v", bk)
	}
}

// TestLateSamplesWhileRollingUp: late samples committed while the
// downsampler runs are all in the tiers once it has caught up. A dirty
// marker is committed with its samples, which reach the head only after
// the commit returns; a recompute that read the head in between rolled
// up the bucket without them and deleted the marker (TestServeRollups
// failed on it once under load). The test runs the downsampler in that
// very moment after every commit, through a test hook.
func TestLateSamplesWhileRollingUp(t *testing.T) {
	c := &clock{day0}
	db := openTest(t, t.TempDir(), rollupOptions(c))
	defer db.Close()
	var rollErr error
	testHookCommitted = func() {
		done := make(chan error, 1)
		go func() { done <- db.RunRollups() }()
		// A correct downsampler waits for the samples to be applied,
		// which happens once this hook returns: give it a moment, then
		// let the commit go on (it finishes in the background).
		select {
		case err := <-done:
			if err != nil {
				rollErr = err
			}
		case <-time.After(20 * time.Millisecond):
		}
	}
	defer func() { testHookCommitted = nil }()
	const nSeries = 5
	start := ms(day0) - 3*3600_000
	raw := make([][]series.Sample, nSeries)
	lsets := make([]series.Labels, nSeries)
	for s := range lsets {
		lsets[s] = series.FromStrings("__name__", "late", "i", fmt.Sprint(s))
	}
	write := func(from, to int64) {
		a := db.Appender()
		for s := range lsets {
			for ts := from; ts < to; ts += 15_000 {
				v := float64(ts/1000%1000) + float64(s)
				if err := a.Append(lsets[s], ts, v); err != nil {
					t.Fatal(err)
				}
				raw[s] = append(raw[s], series.Sample{T: ts, V: v})
			}
		}
		if err := a.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// The first hour, rolled up; then the rest, late, five minutes a
	// commit.
	write(start, start+3600_000)
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	for from := start + 3600_000; from < start+3*3600_000; from += 300_000 {
		write(from, from+300_000)
	}
	testHookCommitted = nil
	if rollErr != nil {
		t.Fatal(rollErr)
	}
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	for tier, res := range []int64{300_000, 3600_000} {
		got, err := db.Rollups(tier, 0, MaxTime, series.MustMatcher(series.MatchEqual, "__name__", "late"))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != nSeries {
			t.Fatalf("tier %d: %d series", tier, len(got))
		}
		wm := db.Tiers()[tier].Watermark
		for _, rs := range got {
			var s int
			fmt.Sscan(rs.Labels.Get("i"), &s)
			sameBuckets(t, fmt.Sprintf("tier %d, series %d", tier, s), rs.Buckets, expectBuckets(raw[s], res, wm))
		}
	}
}
