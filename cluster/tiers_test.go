package cluster

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	gproto "google.golang.org/protobuf/proto"

	"github.com/headroomdb/headroom/internal/natstest"
	clusterv1 "github.com/headroomdb/headroom/proto/headroom/cluster/v1"
	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

const day = 24 * time.Hour / time.Millisecond

// appender is what both a node and a single store write with.
type appender interface {
	Append(ls series.Labels, t int64, v float64) error
	AppendHistogram(ls series.Labels, t int64, h *series.Histogram) error
	Commit() error
}

// writeHistory writes three days of gauges, counters with resets and
// native histograms before end, a commit per day and the days out of
// order (the last first: a backfill), each sample every two minutes.
func writeHistory(t *testing.T, newApp func() appender, end int64) {
	t.Helper()
	for _, d := range []int64{1, 3, 2} {
		a := newApp()
		from := end - d*int64(day)
		for i := int64(0); i < int64(day)/120_000; i++ {
			ts := from + i*120_000
			k := float64((3-d)*720 + i) // the sample's rank in time
			for s := 0; s < 6; s++ {
				g := series.FromStrings("__name__", "g", "s", fmt.Sprint(s))
				c := series.FromStrings("__name__", "c", "s", fmt.Sprint(s))
				if err := a.Append(g, ts, math.Sin(k/50+float64(s))*100+float64(s)); err != nil {
					t.Fatal(err)
				}
				// A counter that resets every 500 samples.
				if err := a.Append(c, ts, math.Mod(k, 500)*float64(s+1)); err != nil {
					t.Fatal(err)
				}
			}
			h := &series.Histogram{Schema: 0, Count: 10 * (k + 1), Sum: 5 * (k + 1),
				PositiveSpans: []series.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []float64{4 * (k + 1), 6 * (k + 1)}}
			if err := a.AppendHistogram(series.FromStrings("__name__", "h"), ts, h); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// tierQueries are answered by the 1h tier at a 1h step.
var tierQueries = []string{
	`sum by (s) (rate(c[1h]))`,
	`avg_over_time(g[1h])`,
	`max_over_time(g[2h])`,
	`quantile_over_time(0.9, g[1h])`,
	`increase(c[3h])`,
	`rate(h[1h])`,
}

// render prints an answer with its values to 12 significant digits:
// equal answers print the same.
func render(res *query.Result) string {
	var b strings.Builder
	for _, s := range res.Series {
		fmt.Fprintf(&b, "%s:", s.Labels)
		for _, p := range s.Points {
			fmt.Fprintf(&b, " %d=%.12g", p.T, p.V)
		}
		for _, p := range s.Histograms {
			fmt.Fprintf(&b, " %d=h(%.12g,%.12g)", p.T, p.H.Count, p.H.Sum)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestClusterTiersThroughFanOut: a cluster answers range functions from
// its owners' rollup tiers, with the answers a single node holding the
// same samples gives, after a backfill; when an owner is gone the other
// serves its partitions' buckets, and when both are, the answer says
// which partitions it lacks.
func TestClusterTiersThroughFanOut(t *testing.T) {
	nats := natstest.Start(t, 3)
	const partitions = 8
	// A short quiet time: the downsampler rolls the days up as soon as
	// the test asks.
	sopts := storage.Options{Retention: 30 * 24 * time.Hour, RollupQuiet: time.Millisecond}
	var nodes []*testNode
	for i := 0; i < 3; i++ {
		// A long lease: stopped owners keep their partitions to the end.
		nodes = append(nodes, startNodeStore(t, nats, fmt.Sprintf("h%d", i), t.TempDir(), partitions, sopts, func(c *Config) { c.Lease = time.Minute }))
	}
	waitOwners(t, nodes, partitions)
	single, err := storage.Open(t.TempDir(), sopts)
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()

	// Three whole days that the tiers have settled.
	end := (time.Now().UnixMilli() - int64(time.Hour/time.Millisecond)) / int64(day) * int64(day)
	writeHistory(t, func() appender { return nodes[0].Appender() }, end)
	writeHistory(t, func() appender { return single.Appender() }, end)

	reader := nodes[1]
	ctx := context.Background()
	raw := query.WithTier(ctx, "raw")
	eng := &query.Engine{}
	const all = `sum(count_over_time({__name__=~"g|c|h"}[4d]))`
	want, err := eng.Instant(raw, store{single}, all, end)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "every sample applied", func() error {
		got, err := eng.Instant(raw, reader.Node, all, end)
		if err == nil && render(got) != render(want) {
			err = fmt.Errorf("the cluster counts %s, the single node %s", render(got), render(want))
		}
		return err
	})
	reader.tick() // the histogram flags of the owners
	if !reader.HasHistograms() {
		t.Fatal("the cluster does not know it holds native histograms")
	}

	start := end - 3*int64(day) + int64(3*time.Hour/time.Millisecond)
	step := int64(time.Hour / time.Millisecond)
	// rolled: every day is rolled up, and the tier alone answers;
	// otherwise the days marked for the downsampler are read from raw
	// samples, as on the single node.
	check := func(what string, src query.Source, wantWarning, rolled bool) {
		t.Helper()
		for _, q := range tierQueries {
			one, err := eng.Range(ctx, store{single}, q, start, end, step)
			if err != nil {
				t.Fatalf("%s: single node: %v", q, err)
			}
			got, err := eng.Range(ctx, src, q, start, end, step)
			if err != nil {
				t.Fatalf("%s: %s: %v", what, q, err)
			}
			switch {
			case rolled && !slices.Equal(got.Tiers, []string{"1h"}):
				t.Errorf("%s: %s read tiers %v, want the 1h tier alone", what, q, got.Tiers)
			case !rolled && (!slices.Contains(got.Tiers, "1h") || !slices.Equal(got.Tiers, one.Tiers)):
				t.Errorf("%s: %s read tiers %v, want the 1h tier as the single node reads %v", what, q, got.Tiers, one.Tiers)
			}
			if wantWarning {
				if len(got.Warnings) == 0 || !strings.Contains(got.Warnings[0], "no owner answered for") {
					t.Errorf("%s: %s: warnings %q, want the partitions left out", what, q, got.Warnings)
				}
				if len(got.Series) == 0 && q != `rate(h[1h])` {
					t.Errorf("%s: %s: nothing from the partitions that answered", what, q)
				}
				continue
			}
			if len(got.Warnings) > 0 {
				t.Errorf("%s: %s: warnings %q", what, q, got.Warnings)
			}
			if g, w := render(got), render(one); g != w {
				t.Errorf("%s: %s differs from the single node's:\n%s\nwant\n%s", what, q, g, w)
			}
			if len(got.Series) == 0 {
				t.Errorf("%s: %s: empty", what, q)
			}
		}
	}
	rollUp := func() {
		t.Helper()
		// Every owner first: a read goes to one owner of a partition,
		// and the other may still be applying what it showed.
		waitApplied(t, nodes)
		for _, db := range []*storage.DB{nodes[0].db, nodes[1].db, nodes[2].db, single} {
			if err := db.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
			if err := db.RunRollups(); err != nil {
				t.Fatal(err)
			}
		}
	}
	check("before the downsampler", reader.Node, false, false)
	rollUp()
	check("every owner", reader.Node, false, true)

	// The tier answers as the raw samples do (quantiles aside: sketches).
	for _, q := range tierQueries {
		if strings.HasPrefix(q, "quantile") {
			continue
		}
		a, err := eng.Range(ctx, reader.Node, q, start, end, step)
		if err != nil {
			t.Fatal(err)
		}
		r, err := eng.Range(raw, reader.Node, q, start, end, step)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(r.Tiers, []string{"raw"}) {
			t.Errorf("%s with tier raw read %v", q, r.Tiers)
		}
		if g, w := render(a), render(r); g != w {
			t.Errorf("%s from the tier differs from raw:\n%s\nwant\n%s", q, g, w)
		}
	}

	// Late samples for a day the tiers hold already: the owners' tiers
	// take them in as the single node's do.
	late := func(a appender) {
		for i := int64(0); i < 100; i++ {
			ts := end - 2*int64(day) + i*600_000 + 60_000
			for s := 0; s < 6; s++ {
				a.Append(series.FromStrings("__name__", "g", "s", fmt.Sprint(s)), ts, 1000+float64(i))
			}
		}
		if err := a.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	late(nodes[2].Appender())
	late(single.Appender())
	if want, err = eng.Instant(raw, store{single}, all, end); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the late samples applied", func() error {
		got, err := eng.Instant(raw, reader.Node, all, end)
		if err == nil && render(got) != render(want) {
			err = fmt.Errorf("the cluster counts %s, the single node %s", render(got), render(want))
		}
		return err
	})
	check("late samples", reader.Node, false, false)
	rollUp()
	check("late samples rolled up", reader.Node, false, true)

	// One node gone: the other owners serve its partitions.
	nodes[0].stop()
	check("one node stopped", reader.Node, false, true)
	// Two gone: the partitions both owned are missing, and said to be.
	nodes[2].stop()
	check("two nodes stopped", reader.Node, true, true)
}

// rollupResponseOf encodes buckets of a few series as SelectRollups
// sends them: float columns with sketches, and histogram buckets.
func rollupResponseOf(t testing.TB, r *rand.Rand) *clusterv1.RollupResponse {
	resp := &clusterv1.RollupResponse{RawDays: 3}
	for i := range 1 + r.IntN(4) {
		var bs []rollup.Bucket
		start := int64(r.IntN(1000)) * 3_600_000
		for k := range 1 + r.IntN(60) {
			var b rollup.Bucket
			b.Start = start + int64(k)*3_600_000
			for j := range 1 + r.IntN(5) {
				b.Add(b.Start+1+int64(j)*60_000, r.NormFloat64()*100)
			}
			bs = append(bs, b)
		}
		var c rollup.Columns
		c.SetBuckets(bs, rollup.ColAll)
		s := &clusterv1.RollupSeries{Labels: labelsToProto(series.FromStrings("__name__", "m", "i", fmt.Sprint(i)))}
		if _, err := encodeColumns(s, &c, rollup.ColAll, nil); err != nil {
			t.Fatal(err)
		}
		var hb rollup.HistBucket
		hb.Start = start
		for j := range 1 + r.IntN(4) {
			n := float64(j + 1)
			hb.Add(start+int64(j)*60_000, &series.Histogram{Count: 10 * n, Sum: n, PositiveSpans: []series.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []float64{4 * n, 6 * n}}, func(cur, prev *series.Histogram) bool { return cur.Count < prev.Count })
		}
		if err := encodeHistBlocks(s, []rollup.HistBucket{hb}); err != nil {
			t.Fatal(err)
		}
		resp.Series = append(resp.Series, s)
	}
	return resp
}

// TestRollupBlocksRoundTrip: what an owner encodes of a tier's buckets,
// the asking node decodes to the same buckets, in the columns asked
// for, across the cut between blocks.
func TestRollupBlocksRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var bs []rollup.Bucket
	for k := range rollup.MaxBlockBuckets + 100 {
		var b rollup.Bucket
		b.Start = int64(k) * 300_000
		for j := range 1 + r.IntN(5) {
			b.Add(b.Start+int64(j)*60_000, r.NormFloat64())
		}
		bs = append(bs, b)
	}
	for _, cols := range []uint{rollup.ColSum, rollup.ColSum | rollup.ColCount, rollup.ColMax, rollup.ColSketch,
		rollup.ColCount | rollup.ColFirst | rollup.ColLast | rollup.ColIncrease | rollup.ColFirstT | rollup.ColLastT} {
		var c rollup.Columns
		c.SetBuckets(bs, cols)
		s := &clusterv1.RollupSeries{}
		if _, err := encodeColumns(s, &c, cols, nil); err != nil {
			t.Fatal(err)
		}
		if len(s.ColumnBlocks) != 2 {
			t.Errorf("%d buckets in %d blocks, want 2", len(bs), len(s.ColumnBlocks))
		}
		var got rollup.Columns
		if err := decodeColumns(&got, s, cols); err != nil {
			t.Fatal(err)
		}
		if cols&rollup.ColSketch != 0 {
			// Sketches compare by what they answer.
			for i := range bs {
				w, _ := c.Sketches[i].Quantile(0.5)
				g, _ := got.Sketches[i].Quantile(0.5)
				if g != w {
					t.Fatalf("bucket %d: median %v, want %v", i, g, w)
				}
			}
			got.Sketches, c.Sketches = nil, nil
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("columns %b: decoded buckets differ from those encoded", cols)
		}
	}
}

// FuzzRollupResponse: a peer's tier answer, however damaged, decodes or
// fails with an error; it never panics the asking node.
func FuzzRollupResponse(f *testing.F) {
	r := rand.New(rand.NewPCG(9, 10))
	for range 3 {
		data, err := gproto.Marshal(rollupResponseOf(f, r))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp clusterv1.RollupResponse
		if gproto.Unmarshal(data, &resp) != nil {
			return
		}
		for _, s := range resp.Series {
			var c rollup.Columns
			decodeColumns(&c, s, rollup.ColAll)
			decodeHistBlocks(s)
			if st, err := storedSeries(nil, s); err == nil {
				for _, b := range st.Blocks {
					rollup.BlockLen(b.Columns)
					rollup.SketchBlockLen(b.Sketches)
				}
			}
		}
	})
}

// historyOwners starts two nodes (on three NATS servers) whose stores
// keep two days of raw samples, the tiers the rest: a node that joins
// after expireStream copies their partitions. startLate starts that
// node.
func historyOwners(tb testing.TB, partitions int, rules ...storage.RetentionRule) (nodes []*testNode, startLate func() *testNode) {
	nats := natstest.Start(tb, 3)
	sopts := storage.Options{Retention: 2 * 24 * time.Hour, RollupQuiet: time.Millisecond, RetentionRules: rules}
	for i := 0; i < 2; i++ {
		nodes = append(nodes, startNodeStore(tb, nats, fmt.Sprintf("h%d", i), tb.TempDir(), partitions, sopts))
	}
	waitOwners(tb, nodes, partitions)
	return nodes, func() *testNode { return startNodeStore(tb, nats, "h2", tb.TempDir(), partitions, sopts) }
}

// TestClusterCopyKeepsTiers: a node that copies a partition (the stream
// dropped what it needs) gets the other owner's rollup buckets older
// than its raw floor, floats and histograms, as well as the raw samples
// after it: its own store then answers the partition's tier reads as the
// other owner's does, months of history included.
func TestClusterCopyKeepsTiers(t *testing.T) {
	t.Run("store floor", func(t *testing.T) { testCopyKeepsTiers(t) })
	// A raw rule longer than the store's retention keeps g's oldest day:
	// the store's floor stays before it, and c and h get floors of
	// their own, which the copy must honour.
	t.Run("series floors", func(t *testing.T) {
		testCopyKeepsTiers(t, storage.RetentionRule{Matchers: []*series.Matcher{series.MustMatcher(series.MatchEqual, "__name__", "g")}, Tier: -1, Retention: 5 * 24 * time.Hour})
	})
}

func testCopyKeepsTiers(t *testing.T, rules ...storage.RetentionRule) {
	const partitions = 4
	nodes, startLate := historyOwners(t, partitions, rules...)
	end := (time.Now().UnixMilli() - int64(time.Hour/time.Millisecond)) / int64(day) * int64(day)
	writeHistory(t, func() appender { return nodes[0].Appender() }, end)
	count := func(db *storage.DB) int {
		q, err := db.Querier(end-4*int64(day), end)
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		set, err := q.Select(series.MustMatcher(series.MatchRegexp, "__name__", "g|c|h"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for set.Next() {
			s := set.At()
			it := s.Iterator()
			for it.Next() {
				n++
			}
			n += len(s.Hists)
		}
		return n
	}
	waitFor(t, time.Minute, "both owners applied every sample", func() error {
		a, b := count(nodes[0].db), count(nodes[1].db)
		if want := 3 * 720 * 13; a != want || b != want {
			return fmt.Errorf("the owners hold %d and %d samples, want %d", a, b, want)
		}
		return nil
	})
	for _, n := range nodes {
		for _, f := range []func() error{n.db.Checkpoint, n.db.RunRollups, n.db.ApplyRetention} {
			if err := f(); err != nil {
				t.Fatal(err)
			}
		}
		c0 := series.FromStrings("__name__", "c", "s", "0")
		floor, err := n.db.SeriesRawFloor(c0)
		if err != nil || floor <= end-3*int64(day) {
			t.Fatalf("%s's raw floor of %s %d (%v): the oldest day was not dropped", n.cfg.Node, c0, floor, err)
		}
		if len(rules) > 0 && n.db.RawOldest() > end-3*int64(day) {
			t.Fatalf("%s's raw floor %d: the rule's oldest day was dropped", n.cfg.Node, n.db.RawOldest())
		}
	}
	expireStream(t, nodes[0])
	late := startLate()
	var served []int
	waitFor(t, time.Minute, "the late node copies and serves partitions", func() error {
		late.tick()
		served = served[:0]
		for _, p := range late.Status().Partition {
			if p.Serving != nil && *p.Serving && !p.Incomplete {
				served = append(served, p.Partition)
			}
		}
		if len(served) == 0 {
			return fmt.Errorf("serves no partition yet")
		}
		return nil
	})
	mine := func(ls series.Labels) bool { return slices.Contains(served, PartitionOf(ls, partitions)) }
	all := []*series.Matcher{series.MustMatcher(series.MatchRegexp, "__name__", "g|c|h")}
	read := func(db *storage.DB, tier int) (string, int) {
		var b strings.Builder
		n := 0
		cols := uint(rollup.ColAll)
		if !db.Tiers()[tier].Sketches {
			cols &^= rollup.ColSketch
		}
		if _, err := db.EachRollup(tier, 0, end, cols, 0, 1, all, func(ls series.Labels, c *rollup.Columns) error {
			if mine(ls) {
				for i := range c.Start {
					fmt.Fprintf(&b, "%s %+v\n", ls, c.Bucket(i))
					n++
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := db.EachHistRollup(tier, 0, end, 0, 1, all, func(ls series.Labels, bs []rollup.HistBucket) error {
			if mine(ls) {
				for _, x := range bs {
					fmt.Fprintf(&b, "%s %d %d %d %d", ls, x.Start, x.Count, x.Rest, x.MinSchema)
					for _, k := range x.Kept {
						// The counter reset hint aside, as a reset or not:
						// a chunk keeps its first sample's, and the copy's
						// raw samples fill chunks of their own.
						h := *k.H
						if h.CounterReset != 1 {
							h.CounterReset = 0
						}
						fmt.Fprintf(&b, " %d %d %+v", k.T, k.Role, h)
					}
					b.WriteString("\n")
					n++
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// Series come in each store's ID order.
		lines := strings.Split(b.String(), "\n")
		slices.Sort(lines)
		return strings.Join(lines, "\n"), n
	}
	for tier := range nodes[0].db.Tiers() {
		want, n := read(nodes[0].db, tier)
		got, _ := read(late.db, tier)
		if n == 0 {
			t.Fatalf("tier %d: no buckets of partitions %v to compare", tier, served)
		}
		if got != want {
			gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
			for i := range min(len(gl), len(wl)) {
				if gl[i] != wl[i] {
					t.Errorf("tier %d: the late node's buckets of partitions %v differ from the other owner's at line %d of %d:\n%s\nwant\n%s", tier, served, i, n, gl[i], wl[i])
					break
				}
			}
		}
	}
}
