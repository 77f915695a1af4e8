package storage

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// rollupOptions: the default tiers, raw kept long enough for the test's
// days, the clock the test moves, and three rollup workers, so that the
// tests hold for a batch split between goroutines.
func rollupOptions(c *clock) Options {
	o := testOptions(c)
	o.Tiers = nil
	o.Retention = 60 * 24 * time.Hour
	o.RollupWorkers = 3
	return o
}

// canonical is the definition a tier must meet: the samples (sorted,
// unique by time) bucketed day by day the way dayBuckets does, finest
// tier from the samples, each coarser one from the one before.
func canonical(ss []series.Sample, tiers []*tierState) [][]rollup.Bucket {
	out := make([][]rollup.Bucket, len(tiers))
	var day [][]rollup.Bucket
	for i := 0; i < len(ss); {
		d := dayOf(ss[i].T)
		j := i
		for j < len(ss) && dayOf(ss[j].T) == d {
			j++
		}
		day = dayBuckets(tiers, ss[i:j], day, true)
		for k := range tiers {
			for _, b := range day[k] {
				out[k] = append(out[k], cloneBucket(b))
			}
		}
		i = j
	}
	return out
}

func cloneBucket(b rollup.Bucket) rollup.Bucket {
	var sk rollup.Sketch
	sk.Merge(&b.Sketch)
	b.Sketch = sk
	return b
}

// sameBuckets compares buckets bit for bit, sketches included; lenient
// (a day whose raw partition was dropped, where later samples were
// merged) skips the counter increase, which such a merge only
// approximates.
func sameBuckets(t *testing.T, what string, got, want []rollup.Bucket, lenient func(start int64) bool, sketches bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d buckets, want %d\n got %v\nwant %v", what, len(got), len(want), starts(got), starts(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if lenient != nil && lenient(w.Start) {
			g.Increase, w.Increase = 0, 0
		}
		if !sketches {
			g.Sketch, w.Sketch = rollup.Sketch{}, rollup.Sketch{}
		}
		if g.Start != w.Start {
			t.Fatalf("%s: bucket %d starts at %v, want %v", what, i, time.UnixMilli(g.Start).UTC(), time.UnixMilli(w.Start).UTC())
		}
		if d := bucketDiff(&g, &w, sketches); d != "" {
			t.Fatalf("%s: bucket at %v: %s\n got %+v\nwant %+v", what, time.UnixMilli(w.Start).UTC(), d, g, w)
		}
	}
}

func starts(bs []rollup.Bucket) []string {
	var out []string
	for _, b := range bs {
		out = append(out, time.UnixMilli(b.Start).UTC().Format("01-02T15:04"))
	}
	if len(out) > 8 {
		out = append(out[:4], append([]string{"..."}, out[len(out)-4:]...)...)
	}
	return out
}

// storedBlocks reads tier's blocks as the downsampler left them (no day
// computed from raw samples), by series labels.
func storedBlocks(t *testing.T, db *DB, tier int) map[string][]rollup.Bucket {
	t.Helper()
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kindRollup, byte(tier)}, UpperBound: []byte{kindRollup, byte(tier) + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	out := map[string][]rollup.Bucket{}
	for it.First(); it.Valid(); it.Next() {
		id := binoID(it.Key()[6:14])
		bs, _, err := getBlock(db.pdb, nil, append([]byte(nil), it.Key()...))
		if err != nil {
			t.Fatal(err)
		}
		ls, err := db.storedLabels(id)
		if err != nil {
			t.Fatal(err)
		}
		out[ls.String()] = append(out[ls.String()], bs...)
	}
	return out
}

func binoID(b []byte) uint64 {
	var id uint64
	for _, c := range b {
		id = id<<8 | uint64(c)
	}
	return id
}

// drain moves the clock a day and the quiet interval on, so that every
// marked day is over and quiet, and runs a checkpoint and the
// downsampler.
func drain(t *testing.T, db *DB, c *clock) {
	t.Helper()
	c.now = c.now.Add(24*time.Hour + db.rollupQuiet())
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	c.now = c.now.Add(db.rollupQuiet() + time.Second)
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	if bl := db.RollupPending(); bl.Due != 0 || bl.Waiting != 0 {
		t.Fatalf("after draining: %+v", bl)
	}
}

// Property: whatever order samples arrive in (shuffled runs, late
// samples, samples rewritten, samples for days retention has dropped),
// and whatever happens between them (checkpoints, downsampler runs,
// retention, clean and unclean restarts, the clock moving on), every
// tier answers exactly what its definition computes from the samples
// written; once the downsampler has caught up, the stored blocks are
// that too, and CheckTiers finds no bucket that differs.
func TestTiersExactProperty(t *testing.T) {
	seed := testSeed(t)
	r := rand.New(rand.NewPCG(seed, 13))
	c := &clock{day0}
	o := testOptions(c)
	o.Retention = 6 * 24 * time.Hour
	o.Tiers = []Tier{{5 * time.Minute, 12 * 24 * time.Hour}, {time.Hour, 40 * 24 * time.Hour}, {24 * time.Hour, 400 * 24 * time.Hour}}
	o.RollupWorkers = 2
	o.CheckpointInterval = time.Minute
	o.HeadIdleTimeout = 3 * time.Minute
	o.ChunkSamples = 60
	dir := t.TempDir()
	db := openTest(t, dir, o)
	defer func() { db.Close() }()

	const nSeries = 4
	lsets := make([]series.Labels, nSeries)
	model := make([]map[int64]float64, nSeries)
	type sample struct {
		s int
		t int64
		v float64
	}
	var runs [][]sample
	for s := range lsets {
		lsets[s] = series.FromStrings("__name__", "m", "i", fmt.Sprint(s))
		model[s] = map[int64]float64{}
		var run []sample
		v := float64(r.IntN(100))
		// A 60 s grid (so samples fall on day boundaries) with gaps.
		for ts := ms(day0) - 16*86400_000; ts < ms(day0); ts += 60_000 * (1 + r.Int64N(15)) {
			if s%2 == 0 {
				v += float64(r.IntN(5))
				if r.IntN(500) == 0 {
					v = 0 // counter reset
				}
			} else {
				v = max(0, v+float64(r.IntN(5)-2))
			}
			run = append(run, sample{s, ts, v})
			if len(run) >= 1+r.IntN(400) {
				runs = append(runs, run)
				run = nil
			}
		}
		runs = append(runs, run)
	}
	// Mostly in order, runs of series interleaved; one run in four late.
	r.Shuffle(len(runs), func(i, j int) {
		if r.IntN(4) == 0 {
			runs[i], runs[j] = runs[j], runs[i]
		}
	})
	var queue []sample
	for _, run := range runs {
		queue = append(queue, run...)
	}

	reopens := 0
	verify := func(when string) {
		t.Helper()
		floor := db.rawFloor.Load()
		lenient := func(start int64) bool { return dayOf(start+1) < floor }
		now := ms(c.now)
		for ti, tier := range db.tiers {
			got, err := db.Rollups(ti, MinTime, MaxTime)
			if err != nil {
				t.Fatal(err)
			}
			byLabels := map[string][]rollup.Bucket{}
			for _, s := range got {
				byLabels[s.Labels.String()] = s.Buckets
			}
			for s, ls := range lsets {
				want := keptBuckets(db, ti, ls, now, canonical(sortedModel(model[s]), db.tiers)[ti])
				sameBuckets(t, fmt.Sprintf("%s (seed %d): %v tier of %s", when, seed, tier.Resolution, ls), keptBuckets(db, ti, ls, now, byLabels[ls.String()]), want, lenient, tier.sketches)
			}
		}
	}
	steps := 0
	for len(queue) > 0 {
		steps++
		switch op := r.IntN(20); {
		case op < 10:
			n := min(len(queue), 1+r.IntN(300))
			a := db.Appender()
			for _, p := range queue[:n] {
				if err := a.Append(lsets[p.s], p.t, p.v); err != nil {
					t.Fatalf("append %s at %v: %v", lsets[p.s], time.UnixMilli(p.t).UTC(), err)
				}
			}
			// Now and then a recent sample written again, as a retry
			// with another value would.
			var rewritten []sample
			if r.IntN(3) == 0 {
				s := r.IntN(nSeries)
				for ts := range model[s] {
					if ts > ms(c.now)-3*86400_000 {
						p := sample{s, ts, float64(r.IntN(1000))}
						if err := a.Append(lsets[s], p.t, p.v); err != nil {
							t.Fatal(err)
						}
						rewritten = append(rewritten, p)
						break
					}
				}
			}
			if err := a.Commit(); err != nil {
				t.Fatal(err)
			}
			for _, p := range append(queue[:n:n], rewritten...) {
				model[p.s][p.t] = p.v
			}
			queue = queue[n:]
		case op < 12:
			if err := db.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		case op < 14:
			if err := db.RunRollups(); err != nil {
				t.Fatal(err)
			}
		case op < 15:
			if err := db.ApplyRetention(); err != nil {
				t.Fatal(err)
			}
		case op < 18:
			// The clock moves on, at most eight days in all.
			if c.now.Before(day0.Add(8 * 24 * time.Hour)) {
				c.now = c.now.Add(time.Duration(1+r.IntN(360)) * time.Minute)
			}
		default:
			var err error
			if r.IntN(2) == 0 {
				err = db.Close()
			} else {
				err = db.CloseNoCheckpoint()
			}
			if err != nil {
				t.Fatal(err)
			}
			db = openTest(t, dir, o)
			reopens++
		}
		if steps%25 == 0 {
			verify(fmt.Sprintf("step %d", steps))
		}
	}
	verify("all written")
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	drain(t, db, c)
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	verify("drained")
	// What the downsampler stored, with nothing computed on the fly.
	floor := db.rawFloor.Load()
	for ti, tier := range db.tiers {
		stored := storedBlocks(t, db, ti)
		for s, ls := range lsets {
			now := ms(c.now)
			sameBuckets(t, fmt.Sprintf("stored %v tier of %s", tier.Resolution, ls), keptBuckets(db, ti, ls, now, stored[ls.String()]),
				keptBuckets(db, ti, ls, now, canonical(sortedModel(model[s]), db.tiers)[ti]), func(start int64) bool { return dayOf(start+1) < floor }, tier.sketches)
		}
	}
	rep, err := db.CheckTiers(nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Differing != 0 || rep.Pending != 0 {
		t.Fatalf("CheckTiers: %d differing, %d pending: %v", rep.Differing, rep.Pending, rep.Diffs)
	}
	if n := countKeys(t, db, kindRollMark); n > nSeries {
		t.Errorf("%d roll markers left after draining", n)
	}
	t.Logf("%d steps, %d reopens, raw floor %s, %d series-days checked from raw", steps, reopens, dayString(floor), rep.SeriesDays)
}

// sortedModel returns a model series' samples in time order.
func sortedModel(m map[int64]float64) []series.Sample {
	var ss []series.Sample
	for ts, v := range m {
		ss = append(ss, series.Sample{T: ts, V: v})
	}
	sort.Slice(ss, func(i, j int) bool { return ss[i].T < ss[j].T })
	return ss
}

// keptBuckets returns the buckets of bs whose days tier keeps now.
func keptBuckets(db *DB, tier int, ls series.Labels, now int64, bs []rollup.Bucket) []rollup.Bucket {
	var out []rollup.Bucket
	for _, b := range bs {
		if db.keeps(tier, ls, dayOf(b.Start+1), now) {
			out = append(out, b)
		}
	}
	return out
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

// A day is rolled up once it is over and quiet: not while samples keep
// coming, then once; in between, the tiers answer from raw samples.
func TestRollupWaitsForQuietDay(t *testing.T) {
	c := &clock{day0.Add(36 * time.Hour)}
	db := openTest(t, t.TempDir(), rollupOptions(c))
	defer db.Close()
	ls := series.FromStrings("__name__", "m")
	var ss []series.Sample
	for ts := ms(day0) - 86400_000 + 60_000; ts <= ms(day0); ts += 60_000 {
		ss = append(ss, series.Sample{T: ts, V: float64(ts / 60_000 % 7)})
	}
	mustAppend(t, db, ls, ss[:500]...)
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	if bl := db.RollupPending(); bl.Waiting != 1 || bl.Due != 0 {
		t.Fatalf("a day written a moment ago: %+v, want it waiting", bl)
	}
	if n := len(storedBlocks(t, db, 0)); n != 0 {
		t.Fatalf("rolled up while being written: %d series stored", n)
	}
	// Answered from raw meanwhile, exactly.
	got, err := db.Rollups(0, MinTime, MaxTime, nameM)
	if err != nil {
		t.Fatal(err)
	}
	want := canonical(ss[:500], db.tiers)[0]
	if len(got) != 1 {
		t.Fatalf("%d series", len(got))
	}
	sameBuckets(t, "5m tier before the rollup", got[0].Buckets, want, nil, false)

	mustAppend(t, db, ls, ss[500:]...)
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	c.now = c.now.Add(db.rollupQuiet() + time.Second)
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	if bl := db.RollupPending(); bl.Due+bl.Waiting != 0 {
		t.Fatalf("after a quiet interval: %+v", bl)
	}
	sameBuckets(t, "stored 5m tier", storedBlocks(t, db, 0)[ls.String()], canonical(ss, db.tiers)[0], nil, false)
	if n := db.tiers[0].buckets.Load(); n != 288 {
		t.Errorf("the day was rolled up into %d 5m buckets in all, want 288 (once)", n)
	}
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
// follow the tiers' own retention. A late sample for a dev day dropped by
// its rule is merged into the tiers, not rolled up as the whole day.
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

	// A late dev sample, 5 days old: its raw day was dropped by the rule,
	// so it is added to the day's buckets.
	late := ms(day0) - 5*86400_000 + 45_000
	mustAppend(t, db, dev, series.Sample{T: late, V: 5})
	drain(t, db, c)
	hourly, err := db.Rollups(1, rollup.BucketStart(late, 3600_000), late, series.MustMatcher(series.MatchEqual, "env", "dev"))
	if err != nil {
		t.Fatal(err)
	}
	if len(hourly) != 1 || hourly[0].Buckets[0].Count != 7 || hourly[0].Buckets[0].Sum != 11 {
		t.Fatalf("the dev hour of the late sample: %+v, want 6 samples and the late one", hourly)
	}

	// 25 days on: the 1h tier (10 days) has dropped everything but node_.
	c.now = day0.Add(25 * 24 * time.Hour)
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	hourly, err = db.Rollups(1, MinTime, MaxTime)
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

// Samples older than the raw retention are answered at once and, once
// the downsampler has merged them, kept by the tiers that keep their
// days; samples no tier keeps are refused.
func TestBackfillIntoRollups(t *testing.T) {
	c := &clock{day0}
	o := rollupOptions(c)
	o.Retention = 2 * 24 * time.Hour
	o.Tiers = []Tier{{5 * time.Minute, 10 * 24 * time.Hour}, {time.Hour, 30 * 24 * time.Hour}}
	o.HeadIdleTimeout = time.Nanosecond // an open chunk in the head holds its raw day
	db := openTest(t, t.TempDir(), o)
	defer db.Close()
	a := series.FromStrings("__name__", "m", "s", "a")
	b := series.FromStrings("__name__", "m", "s", "b")
	var recent []series.Sample
	for ts := ms(day0) - 86400_000; ts < ms(day0); ts += 60_000 {
		recent = append(recent, series.Sample{T: ts, V: 1})
	}
	mustAppend(t, db, a, recent...)
	// Five days on, raw has rolled up and dropped those days.
	c.now = day0.Add(5 * 24 * time.Hour)
	drain(t, db, c)
	if err := db.Checkpoint(); err != nil { // the series leaves the head: its open chunk no longer holds its day
		t.Fatal(err)
	}
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if f := db.rawFloor.Load(); f <= dayOf(ms(day0)) {
		t.Fatalf("raw floor %s, want the data's days dropped", dayString(f))
	}

	five := ms(day0) - 86400_000 + 100_000 // a dropped raw day, kept by both tiers
	twenty := ms(day0) - 20*86400_000 + 100_000
	mustAppend(t, db, a, series.Sample{T: five, V: 7}, series.Sample{T: five + 60_000, V: 3})
	mustAppend(t, db, b, series.Sample{T: twenty, V: 42})
	app := db.Appender()
	if err := app.Append(a, ms(c.now)-40*86400_000, 1); !errors.Is(err, series.ErrOutOfRetention) {
		t.Fatalf("a sample no tier keeps: %v", err)
	}
	app.Rollback()
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
	check := func(when string) {
		t.Helper()
		// The 5m bucket at five held the samples 60 .. 300 s after the
		// day's start (1 each): the two at 100 s and 160 s more now.
		if bk := find(0, a, five); bk.Count != 7 || bk.Min != 1 || bk.Max != 7 || bk.Sum != 15 {
			t.Errorf("%s: 5m bucket of the backfill: %+v", when, bk)
		}
		if bk := find(1, a, five); bk.Count != 62 || bk.Sum != 70 {
			t.Errorf("%s: 1h bucket of the backfill: %+v", when, bk)
		}
		if bk := find(1, b, twenty); bk.Count != 1 || bk.Last != 42 {
			t.Errorf("%s: 1h bucket of a sample only the 1h tier keeps: %+v", when, bk)
		}
		if bk := find(0, b, twenty); bk.Count != 0 {
			t.Errorf("%s: the 5m tier took a sample older than it keeps: %+v", when, bk)
		}
	}
	check("before the downsampler") // from the head
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	check("checkpointed") // from the chunks of dropped days
	drain(t, db, c)
	check("merged")
	if got := query(t, db, MinTime, ms(day0), nameM); len(got) != 0 {
		t.Fatalf("merged samples left in raw storage: %v", got)
	}
	// The series and label APIs find the series only the tiers keep.
	q, err := db.Querier(twenty-3600_000, twenty+3600_000)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	lsets, err := q.SelectLabels(nameM)
	if err != nil || len(lsets) != 1 || lsets[0].String() != b.String() {
		t.Fatalf("series of a tier-only day: %v %v", lsets, err)
	}
	if vals, err := q.LabelValues("s"); err != nil || len(vals) != 1 || vals[0] != "b" {
		t.Fatalf("label values of a tier-only day: %v %v", vals, err)
	}
	// Running again merges nothing twice.
	c.now = c.now.Add(time.Hour)
	if err := db.RunRollups(); err != nil {
		t.Fatal(err)
	}
	check("after a second run")
}

// Late samples committed, and checkpointed, while the downsampler runs
// are all in the tiers once it has caught up: a day written again while
// it was being rolled up keeps its marker (its generation changed).
func TestLateSamplesWhileRollingUp(t *testing.T) {
	c := &clock{day0}
	o := rollupOptions(c)
	db := openTest(t, t.TempDir(), o)
	defer db.Close()
	const nSeries = 5
	raw := make([][]series.Sample, nSeries)
	lsets := make([]series.Labels, nSeries)
	for s := range lsets {
		lsets[s] = series.FromStrings("__name__", "late", "i", fmt.Sprint(s))
	}
	start := ms(day0) - 3*86400_000
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
	// Every other hour, rolled up; then the hours between, late, while
	// the downsampler runs over and over.
	for h := int64(0); h < 72; h += 2 {
		write(start+h*3600_000, start+(h+1)*3600_000)
	}
	c.now = c.now.Add(time.Hour)
	drain(t, db, c)
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
			if err := db.RunRollups(); err != nil {
				errc <- err
				return
			}
		}
	}()
	for h := int64(1); h < 72; h += 2 {
		write(start+h*3600_000, start+(h+1)*3600_000)
		if err := db.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for s := range raw {
		slices.SortFunc(raw[s], func(a, b series.Sample) int { return int(a.T - b.T) })
	}
	drain(t, db, c)
	for tier := range db.tiers {
		stored := storedBlocks(t, db, tier)
		for s, ls := range lsets {
			sameBuckets(t, fmt.Sprintf("stored tier %d of %s", tier, ls), stored[ls.String()], canonical(raw[s], db.tiers)[tier], nil, db.tiers[tier].sketches)
		}
	}
	rep, err := db.CheckTiers(nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Differing != 0 || rep.SeriesDays == 0 {
		t.Fatalf("CheckTiers: %+v", rep)
	}
}

// CheckTiers finds a bucket that differs from its raw samples.
func TestCheckTiersFindsDifference(t *testing.T) {
	c := &clock{day0}
	db := openTest(t, t.TempDir(), rollupOptions(c))
	defer db.Close()
	ls := series.FromStrings("__name__", "m")
	var ss []series.Sample
	for ts := ms(day0) - 86400_000 + 30_000; ts < ms(day0); ts += 60_000 {
		ss = append(ss, series.Sample{T: ts, V: float64(ts % 7)})
	}
	mustAppend(t, db, ls, ss...)
	drain(t, db, c)
	rep, err := db.CheckTiers(nil)
	if err != nil || rep.Differing != 0 || rep.Buckets != 288+24+1 {
		t.Fatalf("a clean directory: %+v, %v", rep, err)
	}
	// Change one 1h bucket behind the downsampler's back.
	key := rollupKey(nil, 1, uint32((ms(day0)-86400_000)/db.tiers[1].span), 1, (ms(day0)-86400_000)/db.tiers[1].span*db.tiers[1].span)
	bs, found, err := getBlock(db.pdb, nil, key)
	if err != nil || !found {
		t.Fatalf("1h block: %v %v", found, err)
	}
	i := sort.Search(len(bs), func(i int) bool { return bs[i].Start >= ms(day0)-86400_000+3*3600_000 })
	bs[i].Sum += 1
	b := db.pdb.NewBatch()
	if _, err := writeBlock(b, db.tiers[1], key, 1, ls, bs, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	rep, err = db.CheckTiers(nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Differing != 1 || len(rep.Diffs) != 1 || !bytes.Contains([]byte(rep.Diffs[0].String()), []byte("sum")) {
		t.Fatalf("a changed sum: %+v", rep)
	}
	t.Log(rep.Diffs[0])
	_ = math.Inf
}

// A directory of the first downsampler (tier watermarks, dirty markers
// 'D', samples for the tiers only 'B', no raw floor) is converted at
// open: the days after its watermark and those of its dirty markers are
// rolled up, its 'B' samples merged, and nothing of it is left.
func TestLegacyConversion(t *testing.T) {
	c := &clock{day0.Add(time.Hour)}
	o := rollupOptions(c)
	dir := t.TempDir()
	db := openTest(t, dir, o)
	ls := series.FromStrings("__name__", "m")
	var ss []series.Sample
	for ts := ms(day0) - 2*86400_000 + 60_000; ts <= ms(day0); ts += 60_000 {
		ss = append(ss, series.Sample{T: ts, V: float64(ts / 60_000 % 11)})
	}
	mustAppend(t, db, ls, ss...)
	drain(t, db, c)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// What the first downsampler would have left: the second day not
	// rolled up (watermark at its start), a late sample of the first day
	// with its dirty marker, and a sample older than raw kept as 'B'.
	pdb, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := pdb.NewBatch()
	b.Delete(floorMetaKey(), nil)
	b.DeleteRange([]byte{kindRollMark}, []byte{kindRollMark + 1}, nil)
	day2 := ms(day0) - 86400_000
	for tier := range 3 {
		b.DeleteRange([]byte{kindRollup, byte(tier)}, []byte{kindRollup, byte(tier + 1)}, nil)
	}
	b.Set(metaKey(fmt.Sprintf("rollup-watermark-%d", 300_000)), binary64(uint64(day2)), nil)
	late := series.Sample{T: ms(day0) - 2*86400_000 + 90_000, V: 100}
	ss = append(ss[:1], append([]series.Sample{late}, ss[1:]...)...)
	b.Set(chunkKey(nil, dayOf(late.T), 1, late.T), appendChunkValue(nil, late.T, late.T, oneSampleChunk(late)), nil)
	b.Set(append(dirtyKey(0, rollup.BucketStart(late.T, 300_000), 1), binary64(7)...), nil, nil)
	old := series.Sample{T: ms(day0) - 20*86400_000, V: 5}
	bk := append([]byte{kindBackfill}, binary64(1)...)
	b.Set(append(bk, binary64(uint64(old.T))...), binary64le(math.Float64bits(old.V)), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	pdb.Close()
	db = openTest(t, dir, o)
	defer db.Close()
	for _, kind := range []byte{kindDirty, kindBackfill} {
		if n := countKeys(t, db, kind); n != 0 {
			t.Fatalf("%d keys of kind %c left", n, kind)
		}
	}
	drain(t, db, c)
	want := canonical(append([]series.Sample{old}, ss...), db.tiers)
	for ti := range db.tiers {
		got := storedBlocks(t, db, ti)[ls.String()]
		sameBuckets(t, fmt.Sprintf("tier %d", ti), got, want[ti], nil, db.tiers[ti].sketches)
	}
}

func binary64(v uint64) []byte {
	return []byte{byte(v >> 56), byte(v >> 48), byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}
func binary64le(v uint64) []byte {
	return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24), byte(v >> 32), byte(v >> 40), byte(v >> 48), byte(v >> 56)}
}

func dirtyKey(tier int, bucket int64, id uint64) []byte {
	return append(append([]byte{kindDirty, byte(tier)}, binary64(uint64(bucket))...), binary64(id)...)
}

func oneSampleChunk(s series.Sample) []byte {
	a := chunk.NewAppender()
	a.Append(s.T, s.V)
	return a.Bytes()
}
