package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/headroomdb/headroom/internal/natstest"
	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

// BenchmarkOwnerApply is an owner's work on one message: decode the batch
// of 1,000 series x 10 samples, append it to the store and commit it.
func BenchmarkOwnerApply(b *testing.B) {
	db, err := storage.Open(b.TempDir(), storage.Options{Retention: 30 * 24 * time.Hour, Tiers: []storage.Tier{}, DisableBackground: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	n := &Node{log: slog.New(slog.DiscardHandler)}
	base := time.Now().Add(-time.Hour).UnixMilli()
	msg := func(k int) []byte {
		bt := &Batch{}
		for s := 0; s < 1000; s++ {
			bs := BatchSeries{Labels: series.FromStrings("__name__", "bench", "instance", "host-"+strconv.Itoa(s), "job", "node")}
			for i := 0; i < 10; i++ {
				bs.Samples = append(bs.Samples, series.Sample{T: base + int64(k*10+i)*1000, V: float64(i)})
			}
			bt.Series = append(bt.Series, bs)
		}
		return AppendBatch(nil, bt)
	}
	msgs := make([][]byte, b.N)
	for i := range msgs {
		msgs[i] = msg(i)
	}
	app := db.Appender()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bt, err := DecodeBatch(msgs[i])
		if err != nil {
			b.Fatal(err)
		}
		n.apply(app, 0, uint64(i), bt)
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10_000, "ns/sample")
}

// BenchmarkPartitionCopy: a node that joins after the stream dropped the
// messages it needs copies its partitions from the other owners (two
// nodes, 4 partitions, 2,000 series x 480 samples written before): the
// time from its start until it serves every partition it took, per
// million samples of those partitions. One copy an iteration.
func BenchmarkPartitionCopy(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		nats := natstest.Start(b, 3)
		const partitions, seriesN, perSeries = 4, 2000, 480
		var nodes []*testNode
		for k := 0; k < 2; k++ {
			nodes = append(nodes, startNode(b, nats, fmt.Sprintf("h%d", k), b.TempDir(), partitions))
		}
		base := time.Now().Add(-2 * time.Hour).UnixMilli()
		for s := 0; s < seriesN; s += 50 {
			a := nodes[0].Appender()
			for j := s; j < s+50; j++ {
				ls := series.FromStrings("__name__", "copy", "s", strconv.Itoa(j))
				for k := 0; k < perSeries; k++ {
					a.Append(ls, base+int64(k)*15_000, float64(k%97))
				}
			}
			if err := a.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		waitApplied(b, nodes)
		expireStream(b, nodes[0])
		waitOwners(b, nodes, partitions) // the two hold every partition
		b.StartTimer()
		start := time.Now()
		late := startNode(b, nats, "h2", b.TempDir(), partitions)
		var served []int
		for {
			late.tick()
			served = served[:0]
			ready := true
			for _, p := range late.Status().Partition {
				if p.Serving != nil {
					served = append(served, p.Partition)
					ready = ready && *p.Serving && !p.Incomplete
				}
			}
			if len(served) > 0 && ready {
				break
			}
			if time.Since(start) > 5*time.Minute {
				b.Fatal("the late node did not copy its partitions in 5 minutes")
			}
			time.Sleep(20 * time.Millisecond)
		}
		took := time.Since(start)
		b.StopTimer()
		copied := 0
		for s := 0; s < seriesN; s++ {
			if slices.Contains(served, PartitionOf(series.FromStrings("__name__", "copy", "s", strconv.Itoa(s)), partitions)) {
				copied += perSeries
			}
		}
		b.ReportMetric(took.Seconds()*1e6/float64(copied), "s/Msample")
		b.ReportMetric(float64(copied), "samples")
		for _, n := range append(nodes, late) {
			n.stop()
		}
		b.StartTimer()
	}
}

// BenchmarkSeriesCheck is the price of the active-series limits on the
// write path (limits.go). seen: a request of 1,000 series this node
// published before, split by partition and looked up in the seen-series
// cache (the steady state), against split alone. memory: the heap a
// cache of 1,048,576 takes full, a series (two generations). new: 1,000 series new to
// the node, checked with every owner (one of the three nodes locally,
// two over gRPC on loopback) before a publish.
func BenchmarkSeriesCheck(b *testing.B) {
	const perRequest = 1000
	batch := func(prefix string) *Batch {
		bt := &Batch{}
		for s := 0; s < perRequest; s++ {
			bt.Series = append(bt.Series, BatchSeries{Labels: series.FromStrings("__name__", "bench", "instance", prefix+strconv.Itoa(s), "job", "node")})
		}
		return bt
	}
	b.Run("split", func(b *testing.B) {
		bt := batch("host-")
		b.ReportAllocs()
		for b.Loop() {
			split(bt, 64, nil)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/perRequest, "ns/series")
	})
	b.Run("seen", func(b *testing.B) {
		bt := batch("host-")
		seen := newSeenSeries(1 << 20)
		split(bt, 64, func(_ int, h uint64, _ series.Labels) { seen.add(h) })
		b.ReportAllocs()
		for b.Loop() {
			split(bt, 64, func(_ int, h uint64, _ series.Labels) {
				if !seen.has(h) {
					b.Fatal("a published series forgotten")
				}
			})
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/perRequest, "ns/series")
	})
	b.Run("memory", func(b *testing.B) {
		for b.Loop() {
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		full := newSeenSeries(1 << 20)
		r := rand.New(rand.NewPCG(1, 2))
		for range 1 << 20 {
			full.add(r.Uint64())
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-B/series")
		runtime.KeepAlive(full)
	})
	b.Run("new", func(b *testing.B) {
		nats := natstest.Start(b, 3)
		var nodes []*testNode
		for i := 0; i < 3; i++ {
			nodes = append(nodes, startNode(b, nats, fmt.Sprintf("h%d", i), b.TempDir(), 64))
		}
		waitOwners(b, nodes, 64)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			var fresh newSeries
			split(batch("new-"+strconv.Itoa(i)+"-"), 64, func(p int, h uint64, ls series.Labels) { fresh.add(p, h, ls) })
			if _, err := nodes[0].checkSeries(&fresh); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/perRequest, "ns/series")
	})
}

// BenchmarkFanOutSelect is a raw read through the fan-out: three nodes,
// 16 partitions, 1,000 series x 480 samples (a day at 3 min), every
// sample of the day read through one node (its own partitions locally,
// the others from an owner over loopback gRPC), against the same read
// of a single store.
func BenchmarkFanOutSelect(b *testing.B) {
	nats := natstest.Start(b, 3)
	const partitions, nSeries, perSeries = 16, 1000, 480
	var nodes []*testNode
	for i := 0; i < 3; i++ {
		nodes = append(nodes, startNode(b, nats, fmt.Sprintf("h%d", i), b.TempDir(), partitions))
	}
	waitOwners(b, nodes, partitions)
	single, err := storage.Open(b.TempDir(), storage.Options{Retention: 30 * 24 * time.Hour, Tiers: []storage.Tier{}})
	if err != nil {
		b.Fatal(err)
	}
	defer single.Close()
	end := time.Now().UnixMilli()
	start := end - perSeries*180_000
	for k := 0; k < perSeries; k += 48 {
		a, sa := nodes[0].Appender(), single.Appender()
		for s := 0; s < nSeries; s++ {
			ls := series.FromStrings("__name__", "fan", "instance", "host-"+strconv.Itoa(s))
			for i := k; i < k+48; i++ {
				t, v := start+int64(i)*180_000, float64((s*i)%977)/8
				a.Append(ls, t, v)
				sa.Append(ls, t, v)
			}
		}
		if err := a.Commit(); err != nil {
			b.Fatal(err)
		}
		if err := sa.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	waitFor(b, time.Minute, "every sample applied", func() error {
		if got, err := countSamples(nodes[1].Node, "fan", start, end); err != nil || got != nSeries*perSeries {
			return fmt.Errorf("%d samples read, %v", got, err)
		}
		return nil
	})
	for _, n := range nodes {
		if err := n.db.Checkpoint(); err != nil {
			b.Fatal(err)
		}
	}
	read := func(b *testing.B, src interface {
		Querier(mint, maxt int64) (query.Querier, error)
	}) {
		for b.Loop() {
			q, err := src.Querier(start, end)
			if err != nil {
				b.Fatal(err)
			}
			set, err := q.Series(series.MustMatcher(series.MatchEqual, "__name__", "fan"))
			if err != nil {
				b.Fatal(err)
			}
			got := 0
			for set.Next() {
				_, it := set.At()
				for it.Next() {
					got++
				}
			}
			q.Close()
			if got != nSeries*perSeries {
				b.Fatalf("%d samples read", got)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(nSeries*perSeries), "ns/sample")
	}
	b.Run("fan-out", func(b *testing.B) { read(b, nodes[1].Node) })
	b.Run("single", func(b *testing.B) { read(b, store{single}) })
}

// BenchmarkPublisherAppend is a publishing node's work on a request
// before the publish: check each sample as the store would, gather them
// by series, split by partition and encode the messages (1,000 series x
// 10 samples).
func BenchmarkPublisherAppend(b *testing.B) {
	db, err := storage.Open(b.TempDir(), storage.Options{Retention: 30 * 24 * time.Hour, Tiers: []storage.Tier{}, DisableBackground: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	n := &Node{local: store{db}, cfg: Config{Partitions: 64}}
	base := time.Now().Add(-time.Hour).UnixMilli()
	var lss []series.Labels
	for s := 0; s < 1000; s++ {
		lss = append(lss, series.FromStrings("__name__", "node_cpu_seconds_total", "instance", "host-"+strconv.Itoa(s)+":9100", "job", "node", "mode", "idle"))
	}
	b.ReportAllocs()
	for b.Loop() {
		a := n.Appender()
		for _, ls := range lss {
			for i := 0; i < 10; i++ {
				if err := a.Append(ls, base+int64(i)*15_000, float64(i)); err != nil {
					b.Fatal(err)
				}
			}
		}
		a.closeLast()
		for _, part := range split(&a.b, n.cfg.Partitions, nil) {
			AppendBatch(nil, part)
		}
		a.Rollback()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10_000, "ns/sample")
}

// BenchmarkPartitionCopyTiers: the copy of a partition whose history is
// older than the raw retention (two days): 200 series x 30 days at 5
// minutes, written as a backfill, rolled up and dropped from raw on the
// two owners; a third node that joins after the stream dropped the
// messages copies its partitions, raw days and every tier. Time from
// its start until it serves them, per series-day of tier history
// imported (the 5m, 1h and 1d tiers' buckets of one series and day).
func BenchmarkPartitionCopyTiers(b *testing.B) {
	const partitions, seriesN, days = 4, 200, 30
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		nodes, startLate := historyOwners(b, partitions)
		end := time.Now().UnixMilli() / int64(day) * int64(day)
		for d := days; d > 0; d-- {
			a := nodes[0].Appender()
			for s := 0; s < seriesN; s++ {
				ls := series.FromStrings("__name__", "hist", "s", strconv.Itoa(s))
				from := end - int64(d)*int64(day)
				for t := from; t < from+int64(day); t += 300_000 {
					a.Append(ls, t, float64((t/300_000+int64(s))%113))
				}
			}
			if err := a.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		waitApplied(b, nodes)
		expireStream(b, nodes[0])
		for _, n := range nodes {
			for _, f := range []func() error{n.db.Checkpoint, n.db.RunRollups, n.db.ApplyRetention} {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
		}
		before := nodes[0].db.RawOldest()
		b.StartTimer()
		start := time.Now()
		late := startLate()
		var served []int
		waitFor(b, 5*time.Minute, "the late node copies its partitions", func() error {
			late.tick()
			served = served[:0]
			for _, p := range late.Status().Partition {
				if p.Serving != nil {
					if !*p.Serving || p.Incomplete {
						return fmt.Errorf("partition %d not served yet", p.Partition)
					}
					served = append(served, p.Partition)
				}
			}
			if len(served) == 0 {
				return errors.New("no partition taken yet")
			}
			return nil
		})
		took := time.Since(start)
		b.StopTimer()
		mine := 0
		for s := 0; s < seriesN; s++ {
			if slices.Contains(served, PartitionOf(series.FromStrings("__name__", "hist", "s", strconv.Itoa(s)), partitions)) {
				mine++
			}
		}
		tierDays := float64(mine) * float64(before-(end-days*int64(day))) / float64(day)
		b.ReportMetric(took.Seconds()*1000/tierDays*1000, "ms/1000-series-days")
		b.ReportMetric(tierDays, "series-days")
		b.ReportMetric(took.Seconds(), "s-to-serve")
		for _, n := range append(nodes, late) {
			n.stop()
		}
		b.StartTimer()
	}
}
