package storage

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage/series"
)

var seedFlag = flag.Uint64("storage.seed", 0, "seed for randomized storage tests (0: from the clock)")

func testSeed(t testing.TB) uint64 {
	s := *seedFlag
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -storage.seed=%d)", s, s)
	return s
}

// day0 is a fixed "now" for tests: 2026-11-01T00:00:00Z.
var day0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

// testOptions: raw storage alone (rollup tests turn tiers on).
func testOptions(c *clock) Options {
	return Options{Now: c.Now, DisableBackground: true, Retention: 30 * 24 * time.Hour, Tiers: []Tier{}}
}

func openTest(t *testing.T, dir string, o Options) *DB {
	t.Helper()
	db, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return db
}

func mustAppend(t *testing.T, db *DB, ls series.Labels, ss ...series.Sample) {
	t.Helper()
	a := db.Appender()
	for _, s := range ss {
		if err := a.Append(ls, s.T, s.V); err != nil {
			t.Fatalf("Append(%s, %d): %v", ls, s.T, err)
		}
	}
	if err := a.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

// query returns every selected series' samples keyed by the label string.
func query(t *testing.T, db *DB, mint, maxt int64, ms ...*series.Matcher) map[string][]series.Sample {
	t.Helper()
	q, err := db.Querier(mint, maxt)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set, err := q.Select(ms...)
	if err != nil {
		t.Fatalf("Select: %v", err)
	}
	out := map[string][]series.Sample{}
	for set.Next() {
		s := set.At()
		it := s.Iterator()
		var ss []series.Sample
		for it.Next() {
			ts, v := it.At()
			ss = append(ss, series.Sample{T: ts, V: v})
		}
		if err := it.Err(); err != nil {
			t.Fatalf("iterate %s: %v", s.Labels, err)
		}
		if len(ss) > 0 {
			out[s.Labels.String()] = ss
		}
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// queryScan is query as the engine reads: buffers reused from series to
// series, each series' samples taken in one AppendSamples call.
func queryScan(t *testing.T, db *DB, mint, maxt int64, ms ...*series.Matcher) map[string][]series.Sample {
	t.Helper()
	q, err := db.Querier(mint, maxt)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	q.ReuseBuffers()
	set, err := q.Series(ms...)
	if err != nil {
		t.Fatalf("Series: %v", err)
	}
	out := map[string][]series.Sample{}
	for set.Next() {
		ls, it := set.At()
		ss := it.(series.SampleAppender).AppendSamples(nil)
		if err := it.Err(); err != nil {
			t.Fatalf("scan %s: %v", ls, err)
		}
		if len(ss) > 0 {
			out[ls.String()] = ss
		}
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func eqSamples(a, b []series.Sample) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].T != b[i].T || math.Float64bits(a[i].V) != math.Float64bits(b[i].V) {
			return false
		}
	}
	return true
}

func ms(t time.Time) int64 { return t.UnixMilli() }

var nameCPU = series.MustMatcher(series.MatchEqual, "__name__", "cpu")

func TestAppendQueryReopen(t *testing.T) {
	c := &clock{day0}
	dir := t.TempDir()
	db := openTest(t, dir, testOptions(c))
	ls := series.FromStrings("__name__", "cpu", "host", "a")
	var want []series.Sample
	for i := 0; i < 1000; i++ {
		want = append(want, series.Sample{T: ms(day0) - 3600_000 + int64(i)*10_000, V: float64(i % 17)})
	}
	mustAppend(t, db, ls, want...)
	check := func(when string) {
		got := query(t, db, 0, MaxTime, nameCPU)[ls.String()]
		if !eqSamples(got, want) {
			t.Fatalf("%s: got %d samples, want %d (first diff hidden)", when, len(got), len(want))
		}
	}
	check("head")
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	check("after checkpoint")
	// Reopen without Close: the log replays (Close would checkpoint).
	mustAppend(t, db, ls, series.Sample{T: want[len(want)-1].T + 10_000, V: 99})
	want = append(want, series.Sample{T: want[len(want)-1].T + 10_000, V: 99})
	db.CloseNoCheckpoint()
	db = openTest(t, dir, testOptions(c))
	check("after replay")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, dir, testOptions(c))
	defer db.Close()
	check("after close and reopen")
}

func TestOverwriteAndLateSamples(t *testing.T) {
	c := &clock{day0}
	dir := t.TempDir()
	db := openTest(t, dir, testOptions(c))
	ls := series.FromStrings("__name__", "cpu", "host", "a")
	base := ms(day0) - 2*86400_000 // two days ago
	model := map[int64]float64{}
	put := func(ts int64, v float64) {
		mustAppend(t, db, ls, series.Sample{T: ts, V: v})
		model[ts] = v
	}
	for i := int64(0); i < 500; i++ {
		put(base+i*60_000, float64(i))
	}
	check := func(when string) {
		t.Helper()
		var want []series.Sample
		for ts, v := range model {
			want = append(want, series.Sample{T: ts, V: v})
		}
		slices.SortFunc(want, func(a, b series.Sample) int { return int(a.T - b.T) })
		got := query(t, db, 0, MaxTime, nameCPU)[ls.String()]
		if !eqSamples(got, want) {
			t.Fatalf("%s: got %v\nwant %v", when, got, want)
		}
	}
	put(base+499*60_000, -1)  // overwrite the newest (head)
	put(base+10*60_000, -2)   // overwrite a sealed one
	put(base+10*60_000+1, -3) // late, between two samples
	put(base-86400_000, -4)   // a day older than everything
	put(base+100*60_000, -5)  // overwrite in a sealed chunk
	check("head")
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	check("after checkpoint")
	put(base+100*60_000, -6) // overwrite a stored chunk
	put(base+5, -7)
	check("late after checkpoint")
	db.Checkpoint()
	check("merged")
	db.CloseNoCheckpoint()
	db = openTest(t, dir, testOptions(c))
	defer db.Close()
	check("after reopen")
	put(base+100*60_000, -8) // overwrite after restart: the head must know what is stored
	put(base+499*60_000, -9)
	check("overwrite after restart")
	db.Checkpoint()
	check("overwrite after restart, merged")
}

// TestRandomAgainstModel drives the engine with random in-order, late and
// repeated writes, checkpoints and restarts, and compares every query with
// a map.
func TestRandomAgainstModel(t *testing.T) {
	r := rand.New(rand.NewPCG(testSeed(t), 7))
	c := &clock{day0}
	dir := t.TempDir()
	opts := testOptions(c)
	opts.ChunkSamples = 1 + r.IntN(40)
	db := openTest(t, dir, opts)
	defer func() { db.Close() }()
	nSeries := 6
	lsets := make([]series.Labels, nSeries)
	for i := range lsets {
		lsets[i] = series.FromStrings("__name__", "cpu", "host", fmt.Sprint("h", i%3), "core", fmt.Sprint(i))
	}
	model := make([]map[int64]float64, nSeries)
	next := make([]int64, nSeries)
	for i := range model {
		model[i] = map[int64]float64{}
		next[i] = ms(day0) - 3*86400_000
	}
	for step := 0; step < 300; step++ {
		a := db.Appender()
		n := 1 + r.IntN(30)
		for k := 0; k < n; k++ {
			i := r.IntN(nSeries)
			var ts int64
			switch r.IntN(5) {
			case 0: // late or overwrite
				ts = ms(day0) - 3*86400_000 + r.Int64N(next[i]-ms(day0)+3*86400_000+1)
			default:
				next[i] += 1 + r.Int64N(3600_000)
				ts = next[i]
			}
			v := float64(r.IntN(100))
			if r.IntN(20) == 0 {
				v = series.StaleNaN
			}
			if err := a.Append(lsets[i], ts, v); err != nil {
				t.Fatal(err)
			}
			model[i][ts] = v
		}
		if err := a.Commit(); err != nil {
			t.Fatal(err)
		}
		switch r.IntN(20) {
		case 0:
			if err := db.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		case 1: // crash: no checkpoint
			db.CloseNoCheckpoint()
			db = openTest(t, dir, opts)
		}
		if step%10 == 0 || step == 299 {
			mint := ms(day0) - 3*86400_000 + r.Int64N(4*86400_000)
			maxt := mint + r.Int64N(2*86400_000)
			got := query(t, db, mint, maxt, nameCPU)
			scanned := queryScan(t, db, mint, maxt, nameCPU)
			for i, m := range model {
				var want []series.Sample
				for ts, v := range m {
					if ts >= mint && ts <= maxt {
						want = append(want, series.Sample{T: ts, V: v})
					}
				}
				slices.SortFunc(want, func(a, b series.Sample) int { return int(a.T - b.T) })
				if g := got[lsets[i].String()]; !eqSamples(g, want) {
					t.Fatalf("step %d series %d range [%d,%d]: got %d samples, want %d\ngot  %v\nwant %v", step, i, mint, maxt, len(g), len(want), g, want)
				}
				if g := scanned[lsets[i].String()]; !eqSamples(g, want) {
					t.Fatalf("step %d series %d range [%d,%d]: scan got %d samples, want %d", step, i, mint, maxt, len(g), len(want))
				}
			}
		}
	}
}

func TestMatchers(t *testing.T) {
	c := &clock{day0}
	db := openTest(t, t.TempDir(), testOptions(c))
	defer db.Close()
	now := ms(day0) - 1000
	for _, ls := range []series.Labels{
		series.FromStrings("__name__", "cpu", "host", "web-1", "env", "prod"),
		series.FromStrings("__name__", "cpu", "host", "web-2", "env", "dev"),
		series.FromStrings("__name__", "cpu", "host", "db-1"),
		series.FromStrings("__name__", "mem", "host", "web-1", "env", "prod"),
	} {
		mustAppend(t, db, ls, series.Sample{T: now, V: 1})
	}
	f := func(want []string, m ...*series.Matcher) {
		t.Helper()
		got := query(t, db, now-1, now+1, m...)
		var hosts []string
		for k := range got {
			hosts = append(hosts, k)
		}
		slices.Sort(hosts)
		slices.Sort(want)
		if !slices.Equal(hosts, want) {
			t.Errorf("Select(%v) = %v, want %v", m, hosts, want)
		}
	}
	mm := series.MustMatcher
	s := func(nv ...string) string { return series.FromStrings(nv...).String() }
	web1 := s("__name__", "cpu", "host", "web-1", "env", "prod")
	web2 := s("__name__", "cpu", "host", "web-2", "env", "dev")
	db1 := s("__name__", "cpu", "host", "db-1")
	mem := s("__name__", "mem", "host", "web-1", "env", "prod")
	f([]string{web1, web2, db1}, nameCPU)
	f([]string{web1, mem}, mm(series.MatchEqual, "host", "web-1"))
	f([]string{web2, db1}, nameCPU, mm(series.MatchNotEqual, "env", "prod"))
	f([]string{web1, web2}, mm(series.MatchRegexp, "host", "web-.*"), nameCPU)
	f(nil, mm(series.MatchRegexp, "host", "web")) // anchored: no partial match
	f([]string{db1}, nameCPU, mm(series.MatchNotRegexp, "host", "web-.*"))
	f([]string{db1}, nameCPU, mm(series.MatchEqual, "env", "")) // missing label is ""
	f([]string{web1, web2, mem}, mm(series.MatchRegexp, "env", ".+"))
	f([]string{web1, web2, db1}, mm(series.MatchRegexp, "__name__", "cpu|disk"))

	q, _ := db.Querier(now-1, now+1)
	defer q.Close()
	if _, err := q.Select(mm(series.MatchRegexp, "host", ".*")); !errors.Is(err, series.ErrInvalid) {
		t.Errorf("Select(all-empty matcher) = %v, want ErrInvalid", err)
	}
	names, err := q.LabelNames()
	if err != nil || !slices.Equal(names, []string{"__name__", "env", "host"}) {
		t.Errorf("LabelNames = %v, %v", names, err)
	}
	vals, err := q.LabelValues("host")
	if err != nil || !slices.Equal(vals, []string{"db-1", "web-1", "web-2"}) {
		t.Errorf("LabelValues(host) = %v, %v", vals, err)
	}
	// With matchers, only the selected series count.
	vals, err = q.LabelValues("host", mm(series.MatchEqual, "__name__", "mem"))
	if err != nil || !slices.Equal(vals, []string{"web-1"}) {
		t.Errorf("LabelValues(host, {__name__=mem}) = %v, %v", vals, err)
	}
	names, err = q.LabelNames(nameCPU, mm(series.MatchRegexp, "host", "db.*"))
	if err != nil || !slices.Equal(names, []string{"__name__", "host"}) {
		t.Errorf("LabelNames({cpu, host=~db.*}) = %v, %v", names, err)
	}
	if _, err := q.LabelNames(mm(series.MatchEqual, "env", "")); !errors.Is(err, series.ErrInvalid) {
		t.Errorf("LabelNames with only an empty-matching matcher = %v, want ErrInvalid", err)
	}
}

// A query over a recent window must not touch series that stopped earlier:
// postings are per day.
func TestPostingsPartitionedByDay(t *testing.T) {
	c := &clock{day0}
	db := openTest(t, t.TempDir(), testOptions(c))
	defer db.Close()
	old := series.FromStrings("__name__", "cpu", "pod", "old")
	cur := series.FromStrings("__name__", "cpu", "pod", "new")
	mustAppend(t, db, old, series.Sample{T: ms(day0) - 10*86400_000, V: 1})
	mustAppend(t, db, cur, series.Sample{T: ms(day0) - 1000, V: 2})
	q, _ := db.Querier(ms(day0)-3600_000, ms(day0))
	defer q.Close()
	set, err := q.Select(nameCPU)
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 1 {
		t.Errorf("candidates for the last hour = %d, want 1 (the old pod's day must not be read)", set.Len())
	}
	vals, _ := q.LabelValues("pod")
	if !slices.Equal(vals, []string{"new"}) {
		t.Errorf("LabelValues(pod) in the last hour = %v, want [new]", vals)
	}
}

func TestRetention(t *testing.T) {
	c := &clock{day0}
	o := testOptions(c)
	o.Retention = 3 * 24 * time.Hour
	db := openTest(t, t.TempDir(), o)
	defer db.Close()
	ls := series.FromStrings("__name__", "cpu")
	for d := int64(0); d < 3; d++ {
		mustAppend(t, db, ls, series.Sample{T: ms(day0) - d*86400_000 - 1000, V: float64(d)})
	}
	a := db.Appender()
	err := a.Append(ls, ms(day0)-4*86400_000, 1)
	if !errors.Is(err, series.ErrOutOfRetention) {
		t.Fatalf("Append older than retention = %v, want ErrOutOfRetention", err)
	}
	db.Checkpoint()
	c.now = day0.Add(2 * 24 * time.Hour) // cutoff now lies in day0-1
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	got := query(t, db, 0, MaxTime, nameCPU)[ls.String()]
	// Days day0-3 and day0-2 hold the samples at d=2 and d=1 -> dropped;
	// day0-1 holds d=0 and is the cutoff day, so it is kept.
	if len(got) != 1 || got[0].V != 0 {
		t.Fatalf("after retention got %v, want only the newest sample", got)
	}
}

func TestInvalidInput(t *testing.T) {
	c := &clock{day0}
	db := openTest(t, t.TempDir(), testOptions(c))
	defer db.Close()
	now := ms(day0)
	f := func(ls series.Labels, ts int64, want string) {
		t.Helper()
		a := db.Appender()
		err := a.Append(ls, ts, 1)
		if err == nil {
			t.Fatalf("Append(%v, %d) accepted, want error %q", ls, ts, want)
		}
		if !errors.Is(err, series.ErrInvalid) {
			t.Errorf("Append(%v) = %v, want ErrInvalid", ls, err)
		}
		if !containsStr(err.Error(), want) {
			t.Errorf("Append(%v) = %q, want it to mention %q", ls, err, want)
		}
		if a.Len() != 0 {
			t.Errorf("a refused Append left %d samples in the appender", a.Len())
		}
	}
	f(nil, now, "empty label set")
	f(series.Labels{{Name: "__name__", Value: "a"}, {Name: "x", Value: "1"}, {Name: "x", Value: "2"}}, now, `duplicate label name "x"`)
	f(series.Labels{{Name: "__name__", Value: "a"}, {Name: "a\x01b", Value: "1"}}, now, `invalid label name "a\x01b"`)
	f(series.Labels{{Name: "__name__", Value: "a"}, {Name: "a\nb", Value: "1"}}, now, `invalid label name "a\nb"`)
	f(series.Labels{{Name: "host", Value: "a"}}, now, "missing metric name")
	f(series.Labels{{Name: "__name__", Value: ""}}, now, "empty metric name")
	f(series.Labels{{Name: "__name__", Value: "a"}, {Name: "x", Value: "\xff\xfe"}}, now, "not valid UTF-8")
	f(series.Labels{{Name: "__name__", Value: "a"}, {Name: "x", Value: "a\x00b"}}, now, "NUL")
	f(series.FromStrings("__name__", "a"), -1, "outside the range")
	f(series.FromStrings("__name__", "a"), math.MaxInt64, "outside the range")
	// Nothing was stored.
	q, _ := db.Querier(0, MaxTime)
	defer q.Close()
	if names, _ := q.LabelNames(); len(names) != 0 {
		t.Errorf("label names after refused appends = %v, want none", names)
	}
}

func containsStr(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// A series that stops receiving samples leaves the head after
// HeadIdleTimeout; its data stays queryable, and a later sample brings it
// back in order, overwrites included.
func TestIdleSeriesEvicted(t *testing.T) {
	c := &clock{day0}
	o := testOptions(c)
	o.CheckpointInterval = time.Minute
	o.HeadIdleTimeout = 2 * time.Minute
	dir := t.TempDir()
	db := openTest(t, dir, o)
	busy := series.FromStrings("__name__", "cpu", "host", "busy")
	idle := series.FromStrings("__name__", "cpu", "host", "idle")
	base := ms(day0) - 3600_000
	var idleWant []series.Sample
	for i := 0; i < 50; i++ {
		idleWant = append(idleWant, series.Sample{T: base + int64(i)*10_000, V: float64(i)})
	}
	mustAppend(t, db, idle, idleWant...)
	for cp := 0; cp < 5; cp++ {
		mustAppend(t, db, busy, series.Sample{T: base + int64(cp)*10_000, V: 1})
		if err := db.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	if got := db.ActiveSeries(); got != 1 {
		t.Fatalf("ActiveSeries = %d after the idle series' timeout, want 1", got)
	}
	if db.Stats().SeriesEvicted.Load() != 1 {
		t.Fatalf("SeriesEvicted = %d, want 1", db.Stats().SeriesEvicted.Load())
	}
	if got := query(t, db, 0, MaxTime, nameCPU)[idle.String()]; !eqSamples(got, idleWant) {
		t.Fatalf("evicted series reads %d samples, want %d", len(got), len(idleWant))
	}
	q, err := db.Querier(0, MaxTime)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := q.LabelValues("host", nameCPU) // labels of an evicted series come from Pebble
	q.Close()
	if err != nil || !slices.Equal(hosts, []string{"busy", "idle"}) {
		t.Fatalf("LabelValues(host, {cpu}) = %v, %v", hosts, err)
	}
	// It comes back: an in-order sample, and an overwrite of a stored one.
	more := []series.Sample{{T: base + 50*10_000, V: 50}, {T: base + 10*10_000, V: -10}}
	mustAppend(t, db, idle, more...)
	idleWant = append(idleWant, more[0])
	idleWant[10].V = -10
	check := func(when string) {
		t.Helper()
		if got := query(t, db, 0, MaxTime, nameCPU)[idle.String()]; !eqSamples(got, idleWant) {
			t.Fatalf("%s: got %v\nwant %v", when, got, idleWant)
		}
	}
	check("back in the head")
	db.Checkpoint()
	check("after checkpoint")
	db.CloseNoCheckpoint()
	db = openTest(t, dir, o)
	defer db.Close()
	check("after restart")
}

// When all of a series' days have expired and it is not in the head,
// retention deletes its index keys too; the same labels later make a new
// series that holds only the new samples.
func TestRetentionCollectsSeries(t *testing.T) {
	c := &clock{day0}
	o := testOptions(c)
	o.Retention = 3 * 24 * time.Hour
	o.HeadIdleTimeout = time.Nanosecond // evict at the first idle checkpoint
	db := openTest(t, t.TempDir(), o)
	defer db.Close()
	gone := series.FromStrings("__name__", "cpu", "pod", "gone")
	kept := series.FromStrings("__name__", "cpu", "pod", "kept")
	mustAppend(t, db, gone, series.Sample{T: ms(day0) - 1000, V: 1})
	db.Checkpoint()
	db.Checkpoint()
	db.Checkpoint()
	if db.ActiveSeries() != 0 {
		t.Fatalf("ActiveSeries = %d, want the idle series evicted", db.ActiveSeries())
	}
	c.now = day0.Add(5 * 24 * time.Hour)
	mustAppend(t, db, kept, series.Sample{T: ms(c.now) - 1000, V: 2})
	db.Checkpoint()
	if err := db.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if n := db.Stats().SeriesCollected.Load(); n != 1 {
		t.Fatalf("SeriesCollected = %d, want 1", n)
	}
	if id, err := db.lookupStored(gone.Hash(), gone); err != nil || id != 0 {
		t.Fatalf("the expired series is still in the index: id %d, %v", id, err)
	}
	mustAppend(t, db, gone, series.Sample{T: ms(c.now) - 500, V: 3})
	got := query(t, db, 0, MaxTime, nameCPU)
	if s := got[gone.String()]; len(s) != 1 || s[0].V != 3 {
		t.Errorf("revived series = %v, want only the new sample", s)
	}
	if s := got[kept.String()]; len(s) != 1 || s[0].V != 2 {
		t.Errorf("kept series = %v", s)
	}
}

// Pebble reserves its memtables in the block cache: the cache must still
// keep blocks once the memtables have grown to full size, or every query
// decompresses its blocks again (it once kept none: with memtables as
// large as the cache, the reservation took all of it).
func TestBlockCacheKeepsBlocks(t *testing.T) {
	c := &clock{day0}
	opts := testOptions(c)
	opts.CacheSize, opts.MemTableSize = 1<<20, 1<<20
	db := openTest(t, t.TempDir(), opts)
	defer db.Close()
	// Enough writes for the memtables to reach their full size, as on a
	// server that has ingested for a while.
	for round := 0; round < 8; round++ {
		a := db.Appender()
		for s := 0; s < 20; s++ {
			ls := series.FromStrings("__name__", "cpu", "host", fmt.Sprint(s))
			for i := 0; i < 400; i++ {
				if err := a.Append(ls, ms(day0)-int64(8-round)*4_000_000+int64(i)*10_000, float64(i%7)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := a.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := db.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Compact(); err != nil { // no compaction may evict blocks between the reads
		t.Fatal(err)
	}
	var misses [2]int64
	for i := range misses {
		if got := query(t, db, ms(day0)-40_000_000, ms(day0), nameCPU); len(got) != 20 {
			t.Fatalf("read %d series, want 20", len(got))
		}
		misses[i] = db.Metrics().BlockCache.Misses
	}
	if misses[1] != misses[0] {
		t.Fatalf("the second read missed the cache %d times: %+v", misses[1]-misses[0], db.Metrics().BlockCache)
	}
}

// Samples of one series a little out of order (as concurrent writers
// deliver them) go through the reorder window: every query, checkpoint
// and restart sees each sample once, in order, last write winning.
func TestReorderWindow(t *testing.T) {
	r := rand.New(rand.NewPCG(testSeed(t), 5))
	c := &clock{day0}
	dir := t.TempDir()
	o := testOptions(c)
	o.ChunkSamples = 50
	db := openTest(t, dir, o)
	defer func() { db.Close() }()
	ls := series.FromStrings("__name__", "cpu", "host", "a")
	model := map[int64]float64{}
	ts := ms(day0) - 86400_000
	for round := 0; round < 60; round++ {
		// A run of samples, shuffled within windows of up to 6.
		var run []series.Sample
		for i := 0; i < 40; i++ {
			ts += 10_000
			run = append(run, series.Sample{T: ts, V: float64(r.IntN(100))})
		}
		for i := 0; i < len(run); i += 6 {
			w := run[i:min(i+6, len(run))]
			r.Shuffle(len(w), func(a, b int) { w[a], w[b] = w[b], w[a] })
		}
		if r.IntN(4) == 0 { // a retry with another value
			k := r.IntN(len(run))
			run = append(run, series.Sample{T: run[k].T, V: run[k].V + 1000})
		}
		for _, s := range run {
			mustAppend(t, db, ls, s)
			model[s.T] = s.V
		}
		switch r.IntN(6) {
		case 0:
			if err := db.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		case 1:
			if err := db.CloseNoCheckpoint(); err != nil {
				t.Fatal(err)
			}
			db = openTest(t, dir, o)
		}
		want := sortedModel(model)
		if got := query(t, db, MinTime, MaxTime, nameCPU)[ls.String()]; !eqSamples(got, want) {
			t.Fatalf("round %d: %d samples, want %d", round, len(got), len(want))
		}
		if got := queryScan(t, db, MinTime, MaxTime, nameCPU)[ls.String()]; !eqSamples(got, want) {
			t.Fatalf("round %d, scan: %d samples, want %d", round, len(got), len(want))
		}
	}
	// Only a sample older than a chunk the window was just emptied into
	// (a checkpoint) goes out of order.
	if n := db.stats.SamplesOOO.Load(); n > 10 {
		t.Errorf("%d samples went out of order: the window should have taken them", n)
	}
}

// A clean stop leaves a compact directory: the head checkpointed, the log
// empty, Pebble's memtables flushed and no old log of Pebble's kept for
// reuse; the next start replays nothing.
func TestCleanStopIsCompact(t *testing.T) {
	c := &clock{day0}
	dir := t.TempDir()
	o := testOptions(c)
	db := openTest(t, dir, o)
	for h := 0; h < 50; h++ {
		ls := series.FromStrings("__name__", "cpu", "host", fmt.Sprint(h))
		var ss []series.Sample
		for ts := ms(day0) - 6*3600_000; ts < ms(day0); ts += 10_000 {
			ss = append(ss, series.Sample{T: ts, V: float64(ts / 10_000 % 100)})
		}
		mustAppend(t, db, ls, ss...)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var logs, tables int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, _ := e.Info()
		switch {
		case strings.HasSuffix(e.Name(), ".log"):
			logs += fi.Size()
		case strings.HasSuffix(e.Name(), ".sst"):
			tables += fi.Size()
		}
	}
	segs, _ := os.ReadDir(dir + "/wal")
	if len(segs) != 0 || logs > 4096 || tables == 0 {
		t.Fatalf("after a clean stop: %d log segments, %d bytes of Pebble logs, %d of tables", len(segs), logs, tables)
	}
	db = openTest(t, dir, o)
	defer db.Close()
	if n := db.Stats().ReplayedSamples.Load(); n != 0 {
		t.Fatalf("replayed %d samples after a clean stop", n)
	}
	if got := query(t, db, MinTime, MaxTime, nameCPU); len(got) != 50 {
		t.Fatalf("%d series after reopening", len(got))
	}
}
