package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/headroomdb/headroom/exemplar"
	"github.com/headroomdb/headroom/ingest"
	"github.com/headroomdb/headroom/internal/natstest"
	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/query/api"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// testNode is a Node with its own Pebble directory and a real gRPC server
// on a loopback port.
type testNode struct {
	*Node
	db  *storage.DB
	srv *grpc.Server
}

func startNode(t testing.TB, nats *natstest.Cluster, name, dir string, partitions int, opts ...func(*Config)) *testNode {
	t.Helper()
	return startNodeStore(t, nats, name, dir, partitions, storage.Options{Retention: 30 * 24 * time.Hour, Tiers: []storage.Tier{}, MaxActiveSeries: testMaxSeries}, opts...)
}

// startNodeStore is startNode with the store's options.
func startNodeStore(t testing.TB, nats *natstest.Cluster, name, dir string, partitions int, sopts storage.Options, opts ...func(*Config)) *testNode {
	t.Helper()
	db, err := storage.Open(dir, sopts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := Config{URLs: nats.URLs(), Node: name, Advertise: lis.Addr().String(), Partitions: partitions, Lease: 3 * time.Second, PartialReads: true, Logger: testLogger}
	for _, o := range opts {
		o(&cfg)
	}
	n, err := Join(ctx, cfg, store{db}, func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	})
	if err != nil {
		t.Fatal(err)
	}
	n.RegisterServer(srv)
	go srv.Serve(lis)
	tn := &testNode{Node: n, db: db, srv: srv}
	t.Cleanup(tn.stop)
	return tn
}

func (tn *testNode) stop() {
	if tn.srv == nil {
		return
	}
	tn.srv.Stop()
	tn.Close()
	tn.db.Close()
	tn.srv = nil
}

// waitFor polls cond until it holds, or fails the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = cond(); err == nil {
			return
		}
	}
	t.Fatalf("%s: not within %v: %v", what, timeout, err)
}

// startCluster starts three NATS servers and three nodes, and waits
// until two owners serve every partition.
func startCluster(t *testing.T, partitions int) (*natstest.Cluster, []*testNode) {
	t.Helper()
	nats := natstest.Start(t, 3)
	var nodes []*testNode
	for i := 0; i < 3; i++ {
		nodes = append(nodes, startNode(t, nats, fmt.Sprintf("h%d", i), t.TempDir(), partitions))
	}
	waitOwners(t, nodes, partitions)
	return nats, nodes
}

// waitOwners waits until two owners serve every partition, each caught
// up; it runs the nodes' membership rounds itself, so that a long lease
// (a round every third of it) does not slow it down.
func waitOwners(t testing.TB, nodes []*testNode, partitions int) {
	t.Helper()
	waitFor(t, time.Minute, "two owners of every partition", func() error {
		for _, n := range nodes {
			n.tick()
		}
		for p := 0; p < partitions; p++ {
			k := 0
			for _, n := range nodes {
				if n.serves(p) {
					k++
				}
			}
			if k != 2 {
				return fmt.Errorf("partition %d has %d owners serving", p, k)
			}
		}
		return nil
	})
}

// waitApplied waits until every owner among nodes has applied each of
// its partitions' messages the stream holds.
func waitApplied(tb testing.TB, nodes []*testNode) {
	tb.Helper()
	waitFor(tb, 5*time.Minute, "every owner applied the stream", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, n := range nodes {
			for _, p := range n.heldPartitions() {
				m, err := n.stream.GetLastMsgForSubject(ctx, subject(p))
				if errors.Is(err, jetstream.ErrMsgNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				if applied, _ := n.local.Mark(markName(p)); applied < m.Sequence {
					return fmt.Errorf("%s applied partition %d up to %d of %d", n.cfg.Node, p, applied, m.Sequence)
				}
			}
		}
		return nil
	})
}

// expireStream makes the stream drop every message it holds, as its
// retention would, then gives it its configuration back: the tests of
// what a node does past the retention keep a long one otherwise, so
// that no owner misses a message because a loaded machine delayed it.
func expireStream(tb testing.TB, n *testNode) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := n.stream.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := info.Config
	short := cfg
	short.MaxAge, short.Duplicates = time.Second, time.Second
	if _, err := n.js.UpdateStream(ctx, short); err != nil {
		tb.Fatal(err)
	}
	waitFor(tb, time.Minute, "the stream drops its messages", func() error {
		info, err := n.stream.Info(context.Background())
		if err == nil && info.State.Msgs != 0 {
			err = fmt.Errorf("%d messages still", info.State.Msgs)
		}
		return err
	})
	if _, err := n.js.UpdateStream(ctx, cfg); err != nil {
		tb.Fatal(err)
	}
}

// writeSeries writes one sample, a second ago, of each of n series of
// metric m through node, and returns the time it wrote at.
func writeSeries(t *testing.T, node *testNode, n int) int64 {
	t.Helper()
	now := time.Now().UnixMilli()
	a := node.Appender()
	for s := 0; s < n; s++ {
		a.Append(series.FromStrings("__name__", "m", "s", fmt.Sprint(s)), now-1000, 1)
	}
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	return now
}

// countSamples reads every sample of metric m through n's fan-out.
func countSamples(n *Node, m string, mint, maxt int64) (int, error) {
	q, err := n.Querier(mint, maxt)
	if err != nil {
		return 0, err
	}
	defer q.Close()
	set, err := q.Series(series.MustMatcher(series.MatchEqual, "__name__", m))
	if err != nil {
		return 0, err
	}
	total := 0
	for set.Next() {
		_, it := set.At()
		for it.Next() {
			total++
		}
	}
	return total, set.Err()
}

// TestClusterWritesReadEverywhere: three Headroom nodes on a three-server
// JetStream cluster. Each partition gets two owners; a write to any node
// is acknowledged once stored in the stream, applied by the owners, and
// readable from every node through the fan-out, every sample once.
func TestClusterWritesReadEverywhere(t *testing.T) {
	const partitions = 8
	_, nodes := startCluster(t, partitions)
	now := time.Now().UnixMilli()
	const seriesN, samples = 50, 20
	for i, n := range nodes {
		a := n.Appender()
		for s := 0; s < seriesN; s++ {
			ls := series.FromStrings("__name__", "cpu", "node", fmt.Sprint(i), "s", fmt.Sprint(s))
			for k := 0; k < samples; k++ {
				if err := a.Append(ls, now-int64(samples-k)*1000, float64(k)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := a.Commit(); err != nil {
			t.Fatalf("write to node %d: %v", i, err)
		}
	}
	// A bad sample refuses the whole request before anything is published.
	a := nodes[0].Appender()
	if err := a.Append(series.FromStrings("__name__", "cpu", "bad", "x"), storage.MaxTime+1, 1); err == nil {
		t.Fatal("a sample past MaxTime is accepted")
	}
	a.Rollback()
	want := 3 * seriesN * samples
	for i, n := range nodes {
		waitFor(t, time.Minute, fmt.Sprintf("node %d reads every sample", i), func() error {
			got, err := countSamples(n.Node, "cpu", now-time.Hour.Milliseconds(), now)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("%d samples, want %d", got, want)
			}
			return nil
		})
	}
	// Each store holds only its partitions, and each sample is on two.
	stored := 0
	for _, n := range nodes {
		q, err := n.db.Querier(0, storage.MaxTime)
		if err != nil {
			t.Fatal(err)
		}
		set, err := q.Series(series.MustMatcher(series.MatchEqual, "__name__", "cpu"))
		if err != nil {
			t.Fatal(err)
		}
		for set.Next() {
			ls, it := set.At()
			if !n.serves(PartitionOf(ls, partitions)) {
				t.Errorf("node %s stores %s of partition %d, which it does not own", n.cfg.Node, ls, PartitionOf(ls, partitions))
			}
			for it.Next() {
				stored++
			}
		}
		q.Close()
	}
	if stored != 2*want {
		t.Errorf("%d samples stored over the nodes, want %d (two owners each)", stored, 2*want)
	}
	// Label lookups go through the fan-out too.
	q, _ := nodes[2].Querier(now-time.Hour.Milliseconds(), now)
	vals, err := q.LabelValues("node")
	if err != nil || strings.Join(vals, ",") != "0,1,2" {
		t.Errorf("label values of node: %v %v", vals, err)
	}
}

// storeCounts counts, per partition, the samples of metric m in each
// node's own store.
func storeCounts(t *testing.T, nodes []*testNode, m string, partitions int) map[string][]int {
	out := map[string][]int{}
	for _, n := range nodes {
		if n.srv == nil {
			continue
		}
		c := make([]int, partitions)
		q, err := n.db.Querier(0, storage.MaxTime)
		if err != nil {
			t.Fatal(err)
		}
		set, err := q.Series(series.MustMatcher(series.MatchEqual, "__name__", m))
		if err != nil {
			t.Fatal(err)
		}
		for set.Next() {
			ls, it := set.At()
			for it.Next() {
				c[PartitionOf(ls, partitions)]++
			}
		}
		q.Close()
		out[n.cfg.Node] = c
	}
	return out
}

// TestClusterNodeLeavesAndComesBack: writes go on while a node stops;
// its partitions move to the third node, which catches up from the
// stream; the node comes back on its directory and resumes from its
// marks. Every owner of a partition ends with the same samples.
func TestClusterNodeLeavesAndComesBack(t *testing.T) {
	nats := natstest.Start(t, 3)
	const partitions = 8
	var nodes []*testNode
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	for i := 0; i < 3; i++ {
		nodes = append(nodes, startNode(t, nats, fmt.Sprintf("h%d", i), dirs[i], partitions))
	}
	now := time.Now().UnixMilli()
	written := 0
	write := func(n *testNode, k int) {
		t.Helper()
		a := n.Appender()
		for s := 0; s < 30; s++ {
			a.Append(series.FromStrings("__name__", "w", "s", fmt.Sprint(s)), now-100_000+int64(k), float64(k))
		}
		if err := a.Commit(); err != nil {
			t.Fatal(err)
		}
		written += 30
	}
	k := 0
	for ; k < 50; k++ {
		write(nodes[k%3], k)
	}
	nodes[1].stop()
	for ; k < 100; k++ {
		write(nodes[[]int{0, 2}[k%2]], k)
	}
	waitFor(t, time.Minute, "the others take over", func() error {
		for p := 0; p < partitions; p++ {
			if !nodes[0].serves(p) && !nodes[2].serves(p) {
				return fmt.Errorf("partition %d unserved", p)
			}
		}
		return nil
	})
	nodes[1] = startNode(t, nats, "h1", dirs[1], partitions)
	for ; k < 150; k++ {
		write(nodes[k%3], k)
	}
	// A NATS server down and back during writes.
	nats.Servers[2].Shutdown()
	for ; k < 200; k++ {
		write(nodes[k%3], k)
	}
	nats.Restart(t, 2)
	for ; k < 250; k++ {
		write(nodes[k%3], k)
	}
	waitFor(t, time.Minute, "every owner holds every sample of its partitions", func() error {
		for _, n := range nodes {
			n.tick()
		}
		counts := storeCounts(t, nodes, "w", partitions)
		total := 0
		for p := 0; p < partitions; p++ {
			var owners []string
			for _, n := range nodes {
				if n.serves(p) {
					owners = append(owners, n.cfg.Node)
				}
			}
			if len(owners) != 2 {
				return fmt.Errorf("partition %d served by %v", p, owners)
			}
			a, b := counts[owners[0]][p], counts[owners[1]][p]
			if a != b {
				return fmt.Errorf("partition %d: %s holds %d samples, %s %d (all: %v)", p, owners[0], a, owners[1], b, counts)
			}
			total += a
		}
		if total != written {
			return fmt.Errorf("%d samples held, %d written (%v)", total, written, counts)
		}
		return nil
	})
}

var testLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

// store is a storage.DB as the cluster's Local (the server has its own).
type store struct{ db *storage.DB }

func (s store) NewAppender(pastLimits bool) LocalAppender {
	if pastLimits {
		return s.db.Appender().SkipSeriesLimits()
	}
	return s.db.Appender()
}
func (s store) CheckNewSeries(lss []series.Labels, prior int) ([]int, int, error) {
	return s.db.CheckNewSeries(lss, prior)
}
func (s store) ImportRollups(tier int, ss []rollup.SeriesBuckets, before int64) error {
	return s.db.ImportRollups(tier, ss, before)
}
func (s store) ImportHistRollups(tier int, ss []rollup.SeriesHistBuckets, before int64) error {
	return s.db.ImportHistRollups(tier, ss, before)
}

// The copy sends tier blocks as the owner keeps them.
var _ StoredRollupSource = store{}

func (s store) ImportStoredRollups(tier int, ss []rollup.StoredSeries, before int64) error {
	return s.db.ImportStoredRollups(tier, ss, before)
}
func (s store) EachStoredRollup(tier int, mint, maxt int64, sketches, toFloor bool, shard, shards int, ms []*series.Matcher, f func(series.Labels, int64, []rollup.StoredBlock) error) (query.TierRead, error) {
	rr, err := s.db.EachStoredRollup(tier, mint, maxt, sketches, toFloor, shard, shards, ms, f)
	return query.TierRead{RawDays: rr.RawDays}, err
}
func (s store) SeriesRawFloor(ls series.Labels) (int64, error) { return s.db.SeriesRawFloor(ls) }
func (s store) LatestRawFloor() int64                          { return s.db.LatestRawFloor() }
func (s store) Mark(name string) (uint64, bool)                { return s.db.Mark(name) }
func (s store) SetMetadata(metric string, md series.Metadata) error {
	return s.db.SetMetadata(metric, md)
}
func (s store) Querier(mint, maxt int64) (query.Querier, error) {
	return s.db.Querier(max(mint, storage.MinTime), min(maxt, storage.MaxTime))
}

// The store's tiers, as headroom serve gives them to the cluster.
func (s store) HasHistograms() bool { return s.db.HasHistograms() }
func (s store) RawOldest() int64    { return s.db.RawOldest() }
func (s store) Tiers() []query.Tier {
	var out []query.Tier
	for _, t := range s.db.Tiers() {
		out = append(out, query.Tier{Resolution: t.Resolution, Watermark: t.Watermark, Oldest: t.Oldest, Sketches: t.Sketches})
	}
	return out
}

func (s store) EachRollup(tier int, mint, maxt int64, cols uint, shard, shards int, ms []*series.Matcher, f func(series.Labels, *rollup.Columns) error) (query.TierRead, error) {
	rr, err := s.db.EachRollup(tier, mint, maxt, cols, shard, shards, ms, f)
	return query.TierRead{RawDays: rr.RawDays}, err
}

func (s store) EachHistRollup(tier int, mint, maxt int64, shard, shards int, ms []*series.Matcher, f func(series.Labels, []rollup.HistBucket) error) (query.TierRead, error) {
	rr, err := s.db.EachHistRollup(tier, mint, maxt, shard, shards, ms, f)
	return query.TierRead{RawDays: rr.RawDays}, err
}

// TestClusterPartialReads: with both owners of a partition gone (before
// their leases expire, nobody holds it), a read through the third node
// answers with the other partitions' series and a warning naming the
// missing partition, which the engine puts in the answer's warnings;
// with partial reads off, the read fails naming it.
func TestClusterPartialReads(t *testing.T) {
	nats := natstest.Start(t, 3)
	const partitions = 8
	var nodes []*testNode
	for i := 0; i < 3; i++ {
		// A long lease: the gone owners keep partition 0 to the end.
		nodes = append(nodes, startNode(t, nats, fmt.Sprintf("h%d", i), t.TempDir(), partitions, func(c *Config) { c.Lease = time.Minute }))
	}
	waitOwners(t, nodes, partitions)
	// Every node's status says which owners serve each partition (their
	// serving keys, read at its next round).
	waitFor(t, time.Minute, "the serving owners on every node's status", func() error {
		for _, n := range nodes {
			n.tick()
		}
		for _, n := range nodes {
			for _, ps := range n.Status().Partition {
				if len(ps.ServingOwners) != 2 || !slices.Equal(ps.ServingOwners, ps.Owners) {
					return fmt.Errorf("%s: partition %d owned by %v, served by %v", n.cfg.Node, ps.Partition, ps.Owners, ps.ServingOwners)
				}
			}
		}
		return nil
	})
	now := writeSeries(t, nodes[0], 40)
	waitFor(t, time.Minute, "every sample applied", func() error {
		for _, n := range nodes {
			got, err := countSamples(n.Node, "m", now-60_000, now)
			if err == nil && got != 40 {
				err = fmt.Errorf("%s reads %d of 40", n.cfg.Node, got)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	// The node that does not own partition 0 stays; its owners go.
	var reader *testNode
	for _, n := range nodes {
		if !n.serves(0) {
			reader = n
		}
	}
	for _, n := range nodes {
		if n != reader {
			n.stop()
		}
	}
	got, err := countSamples(reader.Node, "m", now-60_000, now)
	if err != nil || got == 0 || got >= 40 {
		t.Fatalf("partial read: %d samples, %v; want some of the 40 and no error", got, err)
	}
	res, err := (&query.Engine{}).Instant(context.Background(), reader.Node, "count(m)", now)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "no owner answered for") || !strings.Contains(res.Warnings[0], "0: ") {
		t.Errorf("warnings %q, want one naming partition 0", res.Warnings)
	}
	// The series and label endpoints carry it too.
	mux := http.NewServeMux()
	api.New(reader.Node, "test", nil).Register(mux, func(_ string, h http.Handler) http.Handler { return h })
	for _, path := range []string{"/api/v1/series?match[]=m", "/api/v1/labels", "/api/v1/label/s/values"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		var body struct {
			Status   string   `json:"status"`
			Warnings []string `json:"warnings"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Status != "success" {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		if len(body.Warnings) != 1 || !strings.Contains(body.Warnings[0], "no owner answered for") {
			t.Errorf("%s: warnings %q, want one naming partition 0", path, body.Warnings)
		}
	}
	reader.cfg.PartialReads = false
	if _, err := countSamples(reader.Node, "m", now-60_000, now); err == nil || !strings.Contains(err.Error(), "no owner answered for") {
		t.Errorf("strict read with partitions missing: %v, want an error naming them", err)
	}
	// A new series of the partition is still written (the stream has it
	// for the next owner), unchecked against limits, and counted so.
	var l series.Labels
	for i := 0; PartitionOf(l, partitions) != 0 || l == nil; i++ {
		l = series.FromStrings("__name__", "u", "s", fmt.Sprint(i))
	}
	a := reader.Appender()
	if err := a.Append(l, now, 1); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(); err != nil {
		t.Fatalf("a write to a partition whose owners are gone: %v", err)
	}
	if u := reader.Status().UncheckedSeries; u != 1 {
		t.Errorf("%d series counted unchecked, want 1", u)
	}
}

// TestClusterOwnerPastRetention: a node that joins after the stream has
// dropped messages (its retention) cannot catch up from it: it copies
// each partition it takes from the other owner, then serves it from its
// own store, which holds every series of those partitions.
func TestClusterOwnerPastRetention(t *testing.T) {
	nats := natstest.Start(t, 3)
	const partitions = 4
	var nodes []*testNode
	for i := 0; i < 2; i++ {
		nodes = append(nodes, startNode(t, nats, fmt.Sprintf("h%d", i), t.TempDir(), partitions))
	}
	waitOwners(t, nodes, partitions)
	now := writeSeries(t, nodes[0], 20)
	// Native histograms are copied too.
	ha := nodes[0].Appender()
	for s := 0; s < 20; s++ {
		h := &series.Histogram{Schema: 0, Count: 10, Sum: 3, PositiveSpans: []series.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []float64{4, 6}}
		ha.AppendHistogram(series.FromStrings("__name__", "hm", "s", fmt.Sprint(s)), now-1000, h)
	}
	if err := ha.Commit(); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, nodes)
	expireStream(t, nodes[0])
	late := startNode(t, nats, "h2", t.TempDir(), partitions)
	var served []int
	waitFor(t, time.Minute, "the late node takes partitions, copies and serves them", func() error {
		late.tick()
		served = served[:0]
		for _, p := range late.Status().Partition {
			if p.Serving == nil {
				continue
			}
			if p.Incomplete || !*p.Serving {
				return fmt.Errorf("partition %d: incomplete %v serving %v", p.Partition, p.Incomplete, *p.Serving)
			}
			served = append(served, p.Partition)
		}
		if len(served) == 0 {
			return fmt.Errorf("owns no partition yet")
		}
		return nil
	})
	// Its own store holds every series of its partitions.
	var want int
	for _, m := range []string{"m", "hm"} {
		want = 0
		for s := 0; s < 20; s++ {
			if slices.Contains(served, PartitionOf(series.FromStrings("__name__", m, "s", fmt.Sprint(s)), partitions)) {
				want++
			}
		}
		q, err := late.db.Querier(now-60_000, now)
		if err != nil {
			t.Fatal(err)
		}
		set, err := q.Series(series.MustMatcher(series.MatchEqual, "__name__", m))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for set.Next() {
			_, it := set.At()
			for it.Next() {
				got++
			}
			if hs, ok := set.(series.HistSet); ok {
				got += len(hs.Hists())
			}
		}
		q.Close()
		if got != want || want == 0 {
			t.Errorf("the late node's store holds %d samples of metric %s, want one of each of the %d series of its partitions %v", got, m, want, served)
		}
	}
	// Reads through it see every series.
	waitFor(t, time.Minute, "every series read through the late node", func() error {
		late.tick()
		got, err := countSamples(late.Node, "m", now-60_000, now)
		if err == nil && got != 20 {
			// What a failure needs to be understood (it happened once
			// in a CI run under load: 15 of 20 for a minute).
			q, _ := late.Node.Querier(now-60_000, now)
			set, _ := q.Series(series.MustMatcher(series.MatchEqual, "__name__", "m"))
			parts := map[int]int{}
			for set.Next() {
				ls, _ := set.At()
				parts[PartitionOf(ls, partitions)]++
			}
			var owners []string
			for _, ps := range late.Status().Partition {
				owners = append(owners, fmt.Sprintf("%d:%v/%v", ps.Partition, ps.Owners, ps.ServingOwners))
			}
			err = fmt.Errorf("%d of 20; series by partition %v; warnings %v; the late node's plan %v, served %v, owners/serving %v",
				got, parts, q.(*fanQuerier).Warnings(), late.plan(), served, owners)
		}
		return err
	})
	want = 0
	for s := 0; s < 20; s++ {
		if slices.Contains(served, PartitionOf(series.FromStrings("__name__", "m2", "s", fmt.Sprint(s)), partitions)) {
			want++
		}
	}
	// And what is written next reaches it through the stream.
	a := nodes[1].Appender()
	for s := 0; s < 20; s++ {
		a.Append(series.FromStrings("__name__", "m2", "s", fmt.Sprint(s)), now, 2)
	}
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the next write applied by the late node", func() error {
		q, err := late.db.Querier(now-60_000, now)
		if err != nil {
			return err
		}
		defer q.Close()
		lss, err := q.SelectLabels(series.MustMatcher(series.MatchEqual, "__name__", "m2"))
		if err == nil && len(lss) != want {
			err = fmt.Errorf("%d of %d series", len(lss), want)
		}
		return err
	})
}

// TestClusterOwnerMissedMessages: an owner whose consumer passed over
// messages the stream dropped before delivering them (it lagged the
// retention, or its consumer was made again while they expired) finds
// out from the other owner's mark and copies the partition, instead of
// taking itself for caught up and serving the partition without them.
func TestClusterOwnerMissedMessages(t *testing.T) {
	nats := natstest.Start(t, 3)
	const partitions = 4
	quick := func(c *Config) { c.missCheck = 500 * time.Millisecond }
	var nodes []*testNode
	for i := 0; i < 2; i++ {
		nodes = append(nodes, startNode(t, nats, fmt.Sprintf("h%d", i), t.TempDir(), partitions, quick))
	}
	waitOwners(t, nodes, partitions)
	// Something applied by both first: the owners' marks then differ
	// only by what h1 passes over.
	writeSeries(t, nodes[0], 8)
	waitApplied(t, nodes)
	l := series.FromStrings("__name__", "missed", "s", "1")
	p := PartitionOf(l, partitions)
	nodes[1].passOver.Store(int64(p) + 1)
	now := time.Now().UnixMilli()
	a := nodes[0].Appender()
	if err := a.Append(l, now, 7); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, nodes[:1])
	expireStream(t, nodes[0])
	nodes[1].passOver.Store(0)
	waitFor(t, time.Minute, "h1 copies what it passed over", func() error {
		q, err := nodes[1].db.Querier(now-1000, now+1000)
		if err != nil {
			return err
		}
		defer q.Close()
		lss, err := q.SelectLabels(series.MustMatcher(series.MatchEqual, "__name__", "missed"))
		if err == nil && len(lss) != 1 {
			err = fmt.Errorf("h1's store holds %d series of partition %d's message, want 1", len(lss), p)
		}
		return err
	})
	// And serves the partition again once it has.
	waitFor(t, time.Minute, "h1 serves the partition again", func() error {
		if !nodes[1].serves(p) {
			return fmt.Errorf("h1 does not serve partition %d", p)
		}
		return nil
	})
}

// testMaxSeries is the test stores' --max-active-series (0: default).
var testMaxSeries int

// publishRaw publishes a batch to partition p's subject as a publisher
// would after its checks, for what the checks cannot produce on demand
// (two writers passing one limit at once; a message applied after its
// samples aged past the retention).
func publishRaw(t *testing.T, n *testNode, p int, b *Batch) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := n.js.Publish(ctx, subject(p), AppendBatch(nil, b)); err != nil {
		t.Fatal(err)
	}
}

// TestClusterSeriesLimits: a write whose new series would take an
// owner's store past its active-series limit is refused whole before
// anything is published, naming the series, the limit and the node, as
// a single node refuses it; series already stored still take samples;
// and owners keep what was acknowledged even past their limit (two
// writers whose checks passed at once), refusing nothing after the
// acknowledgement.
func TestClusterSeriesLimits(t *testing.T) {
	testMaxSeries = 5
	defer func() { testMaxSeries = 0 }()
	const partitions = 4
	_, nodes := startCluster(t, partitions)
	now := time.Now().UnixMilli()
	ls := func(metric string, i int) series.Labels {
		return series.FromStrings("__name__", metric, "s", fmt.Sprint(i))
	}
	write := func(n *testNode, t0 int64, lss ...series.Labels) error {
		a := n.Appender()
		for _, l := range lss {
			if err := a.Append(l, t0, 1); err != nil {
				t.Fatal(err)
			}
		}
		return a.Commit()
	}
	streamMsgs := func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		info, err := nodes[0].stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	// The stores hold what they were sent by their owners' partitions.
	held := func() (map[string]int, int) {
		out, total := map[string]int{}, 0
		for _, n := range nodes {
			out[n.cfg.Node] = n.db.ActiveSeries()
			total += out[n.cfg.Node]
		}
		return out, total
	}

	before := streamMsgs()
	var big []series.Labels
	for i := 0; i < 40; i++ {
		big = append(big, ls("big", i))
	}
	err := write(nodes[0], now, big...)
	if !errors.Is(err, series.ErrTooManySeries) || !strings.Contains(err.Error(), `__name__="big"`) ||
		!strings.Contains(err.Error(), "the limit is 5") || !strings.Contains(err.Error(), "'s store") {
		t.Fatalf("40 new series: %v, want ErrTooManySeries naming a series, the limit and the node", err)
	}
	t.Log(err)
	// Through a front end (the Ingest gRPC API, on a loopback port):
	// refused whole as over a limit, naming the series, not as
	// unavailable (which a client retries).
	conn := serveFrontEnd(t, func(srv *grpc.Server) {
		ingest.NewGRPC(ingestNode{n: nodes[1].Node}, ingest.Options{}).Register(srv)
	})
	req := &headroomv1.WriteRequest{}
	for _, l := range big {
		req.Series = append(req.Series, &headroomv1.Series{
			Labels:  []*headroomv1.Label{{Name: "__name__", Value: l.Get("__name__")}, {Name: "s", Value: l.Get("s")}},
			Samples: []*headroomv1.Sample{{TimestampMs: now, Value: 1}},
		})
	}
	_, err = headroomv1.NewIngestClient(conn).Write(context.Background(), req)
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), `__name__="big"`) {
		t.Fatalf("40 new series over gRPC: %v, want ResourceExhausted naming a series", err)
	}
	if after := streamMsgs(); after != before {
		t.Fatalf("the refused writes published %d messages", after-before)
	}
	if after := streamMsgs(); after != before {
		t.Fatalf("the refused write published %d messages", after-before)
	}

	// One new series a write, through each node in turn, each applied
	// before the next (so the check sees it): the stores fill to the
	// limit and no further.
	accepted, refused := 0, 0
	for i := 0; i < 20; i++ {
		err := write(nodes[i%3], now, ls("one", i))
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, series.ErrTooManySeries):
			refused++
			continue
		default:
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "the accepted series on both owners", func() error {
			if got, total := held(); total != 2*accepted {
				return fmt.Errorf("the stores hold %v, want %d in all", got, 2*accepted)
			}
			return nil
		})
	}
	got, _ := held()
	for node, k := range got {
		if k > 5 {
			t.Errorf("%s holds %d series, past its limit of 5", node, k)
		}
	}
	t.Logf("%d series accepted, %d refused; stores %v", accepted, refused, got)
	if accepted < 3 || refused == 0 {
		t.Fatalf("%d series accepted, %d refused (stores %v): want the stores filled, then refusals", accepted, refused, got)
	}
	// Series stored already take samples at the limit, through any node.
	var stored []series.Labels
	for i := 0; i < 20; i++ {
		if n, err := countSeries(nodes[0].Node, ls("one", i)); err != nil {
			t.Fatal(err)
		} else if n > 0 {
			stored = append(stored, ls("one", i))
		}
	}
	if len(stored) != accepted {
		t.Fatalf("%d series readable, %d accepted", len(stored), accepted)
	}
	for _, n := range nodes {
		if err := write(n, now+2000, stored...); err != nil {
			t.Fatalf("samples of stored series at the limit, through %s: %v", n.cfg.Node, err)
		}
	}

	// Two writers' checks passed at once: what they published is
	// applied past the limit, on both owners, and nothing is refused.
	_, total := held()
	extra := map[int]*Batch{}
	for i := 0; i < 12; i++ {
		l := ls("past", i)
		p := PartitionOf(l, partitions)
		if extra[p] == nil {
			extra[p] = &Batch{}
		}
		extra[p].Series = append(extra[p].Series, BatchSeries{Labels: l, Samples: []series.Sample{{T: now, V: 1}}})
	}
	for p, b := range extra {
		publishRaw(t, nodes[1], p, b)
	}
	waitFor(t, time.Minute, "the series past the limit on both owners", func() error {
		if got, all := held(); all != total+2*12 {
			return fmt.Errorf("the stores hold %v (%d), want %d", got, all, total+2*12)
		}
		return nil
	})
	for _, n := range nodes {
		if r := n.Status().RefusedSamples; r != 0 {
			t.Errorf("%s refused %d acknowledged samples", n.cfg.Node, r)
		}
	}
}

// TestClusterSeriesCheckInParts: a write of more new series than one
// check request carries (1 MiB) is asked of an owner in parts, each
// counting the earlier ones' new series against the owner's limit.
func TestClusterSeriesCheckInParts(t *testing.T) {
	testMaxSeries = 5000
	defer func() { testMaxSeries = 0 }()
	_, nodes := startCluster(t, 4)
	long := strings.Repeat("x", 200)
	lss := func(n int) []series.Labels {
		var out []series.Labels
		for i := 0; i < n; i++ {
			out = append(out, series.FromStrings("__name__", "wide", "s", fmt.Sprint(i), "pad", long))
		}
		return out
	}
	// About 4,500 of these fill a part: 4,000 pass in one, 8,000 in two
	// only if the second forgets the first.
	if _, err := nodes[0].askCheck(nodes[1].cfg.Node, lss(4000)); err != nil {
		t.Fatalf("4,000 new series, limit 5,000: %v", err)
	}
	refused, err := nodes[0].askCheck(nodes[1].cfg.Node, lss(8000))
	if !errors.Is(err, series.ErrTooManySeries) || !strings.Contains(err.Error(), "the limit is 5000") {
		t.Fatalf("8,000 new series in two parts, limit 5,000: %v, want the limit's refusal", err)
	}
	// Those past the limit, counted across the parts.
	if len(refused) != 3000 || refused[0] != 5000 || refused[2999] != 7999 {
		t.Fatalf("%d refused (first %v), want the last 3,000", len(refused), refused[:min(len(refused), 3)])
	}
}

// TestClusterOTLPOverLimit: an OTLP request whose new series would take
// owners past their limits is taken in part, as a single node takes it:
// the points of the series refused are reported in partial_success, the
// others stored by both owners (not the whole request refused, which an
// OTLP exporter would drop).
func TestClusterOTLPOverLimit(t *testing.T) {
	testMaxSeries = 5
	defer func() { testMaxSeries = 0 }()
	_, nodes := startCluster(t, 4)
	front := ingestNode{n: nodes[0].Node, exemplars: &exemplarLog{}}
	conn := serveFrontEnd(t, func(srv *grpc.Server) {
		ingest.NewOTLP(front, ingest.Options{}).Register(srv)
	})
	now := uint64(time.Now().UnixNano())
	var points []*metricspb.NumberDataPoint
	for i := 0; i < 40; i++ {
		points = append(points, &metricspb.NumberDataPoint{
			Attributes:   []*commonpb.KeyValue{{Key: "i", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: fmt.Sprint(i)}}}},
			TimeUnixNano: now, Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: float64(i)},
			Exemplars: []*metricspb.Exemplar{{TimeUnixNano: now, Value: &metricspb.Exemplar_AsDouble{AsDouble: float64(i)},
				TraceId: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, byte(i + 1)}}},
		})
	}
	req := &colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{{
			Name: "burst", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: points}},
		}}}},
	}}}
	resp, err := colmetricspb.NewMetricsServiceClient(conn).Export(context.Background(), req)
	if err != nil {
		t.Fatalf("an OTLP request past the limits: %v, want a partial success", err)
	}
	ps := resp.GetPartialSuccess()
	rejected := int(ps.GetRejectedDataPoints())
	if rejected == 0 || rejected >= 40 || !strings.Contains(ps.GetErrorMessage(), "too many active series") {
		t.Fatalf("partial success %v: want some of the 40 points rejected, naming the limit", ps)
	}
	accepted := 40 - rejected
	t.Logf("%d points stored, %d rejected: %s", accepted, rejected, ps.GetErrorMessage())
	waitFor(t, time.Minute, "the accepted series on both owners, and read back", func() error {
		total := 0
		for _, n := range nodes {
			if k := n.db.ActiveSeries(); k > 5 {
				return fmt.Errorf("%s holds %d series, past its limit", n.cfg.Node, k)
			}
			total += n.db.ActiveSeries()
		}
		if total != 2*accepted {
			return fmt.Errorf("the stores hold %d series, want %d (2 x %d accepted)", total, 2*accepted, accepted)
		}
		got, err := countSamples(nodes[1].Node, "burst", time.Now().Add(-time.Minute).UnixMilli(), time.Now().Add(time.Minute).UnixMilli())
		if err == nil && got != accepted {
			err = fmt.Errorf("%d points read back, want the %d accepted", got, accepted)
		}
		return err
	})
	// The exemplars kept are those of the accepted points' series: a
	// rejected point's would point a dashboard at a series with no data.
	q, err := nodes[1].Node.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	lss, err := q.SelectLabels(series.MustMatcher(series.MatchEqual, "__name__", "burst"))
	q.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, ls := range lss {
		stored[ls.String()] = true
	}
	kept := front.exemplars.series()
	if len(kept) != accepted {
		t.Errorf("%d exemplars kept, want one for each of the %d accepted points", len(kept), accepted)
	}
	for _, ls := range kept {
		if !stored[ls.String()] {
			t.Errorf("an exemplar kept for %v, whose point was rejected", ls)
		}
	}
}

// exemplarLog records the series of the exemplars a front end kept.
type exemplarLog struct {
	mu  sync.Mutex
	lss []series.Labels
}

func (l *exemplarLog) series() []series.Labels {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lss)
}

// serveFrontEnd serves what register adds (a protocol's front end) on a
// loopback port until the test ends, and returns a client of it.
func serveFrontEnd(t *testing.T, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ingest.ServerOptions()...)
	register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// ingestNode is a node as the front ends' Appendable (the server has
// its own).
type ingestNode struct {
	n         *Node
	exemplars *exemplarLog // nil: exemplars not kept
}

func (a ingestNode) Appender() ingest.Appender { return a.n.Appender() }

// AddExemplar keeps the series of an exemplar (ingest.ExemplarAdder).
func (a ingestNode) AddExemplar(ls series.Labels, _ series.Exemplar) error {
	if a.exemplars != nil {
		a.exemplars.mu.Lock()
		a.exemplars.lss = append(a.exemplars.lss, ls.Copy())
		a.exemplars.mu.Unlock()
	}
	return nil
}

// countSeries counts the series of labels ls that n reads.
func countSeries(n *Node, ls series.Labels) (int, error) {
	var ms []*series.Matcher
	for _, l := range ls {
		ms = append(ms, series.MustMatcher(series.MatchEqual, l.Name, l.Value))
	}
	q, err := n.Querier(0, time.Now().UnixMilli()+time.Hour.Milliseconds())
	if err != nil {
		return 0, err
	}
	defer q.Close()
	set, err := q.Series(ms...)
	if err != nil {
		return 0, err
	}
	k := 0
	for set.Next() {
		k++
	}
	return k, set.Err()
}

// TestClusterRefusedSamplesCounted: a message whose samples the owners'
// stores refuse when they apply it (past the retention by then, as after
// a long catch-up) is not silent: the status counts them.
func TestClusterRefusedSamplesCounted(t *testing.T) {
	const partitions = 4
	_, nodes := startCluster(t, partitions)
	old := time.Now().Add(-60 * 24 * time.Hour).UnixMilli() // the stores keep 30 days
	l := series.FromStrings("__name__", "old", "s", "0")
	publishRaw(t, nodes[0], PartitionOf(l, partitions), &Batch{Series: []BatchSeries{{Labels: l, Samples: []series.Sample{{T: old, V: 1}, {T: old + 1000, V: 2}}}}})
	waitFor(t, time.Minute, "both owners count the refused samples", func() error {
		var refused int64
		for _, n := range nodes {
			refused += n.Status().RefusedSamples
		}
		if refused != 2*2 {
			return fmt.Errorf("%d refused, want 2 samples on 2 owners", refused)
		}
		return nil
	})
}

// TestClusterMetadataEverywhere: a metric's metadata given to one node
// reaches every node's store (where /api/v1/metadata reads it), a change
// too, and a node that joins later gets all of it.
func TestClusterMetadataEverywhere(t *testing.T) {
	nats, nodes := startCluster(t, 4)
	first := series.Metadata{Type: "counter", Unit: "seconds", Help: "CPU time."}
	if err := nodes[0].SetMetadata("node_cpu:seconds_total", first); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].SetMetadata("up", series.Metadata{Type: "gauge", Help: "1 if the target answered."}); err != nil {
		t.Fatal(err)
	}
	changed := series.Metadata{Type: "counter", Unit: "seconds", Help: "CPU time spent, by mode."}
	if err := nodes[2].SetMetadata("node_cpu:seconds_total", changed); err != nil {
		t.Fatal(err)
	}
	late := startNode(t, nats, "h3", t.TempDir(), 4)
	for _, n := range append(nodes, late) {
		waitFor(t, time.Minute, n.cfg.Node+"'s store has every metric's metadata", func() error {
			got := n.db.Metadata("", 0)
			if got["node_cpu:seconds_total"] != changed || got["up"].Type != "gauge" {
				return fmt.Errorf("%v", got)
			}
			return nil
		})
	}
}

// TestClusterExemplarsEverywhere: each node keeps the exemplars of the
// writes it received; any node answers with all of them, merged by
// series in time order, once each, and without a node that is gone.
func TestClusterExemplarsEverywhere(t *testing.T) {
	_, nodes := startCluster(t, 4)
	ls := series.FromStrings("__name__", "req", "path", "/a")
	trace := func(id string) series.Labels { return series.FromStrings("trace_id", id) }
	var stores []*exemplar.Store
	for _, n := range nodes {
		st := exemplar.New(10, 100)
		stores = append(stores, st)
		n.SetExemplars(func(start, end int64, sets [][]*series.Matcher) []series.SeriesExemplars {
			return st.Select(start, end, sets...)
		})
	}
	for i, e := range []struct {
		node int
		x    series.Exemplar
	}{
		{0, series.Exemplar{Labels: trace("a"), Value: 1, T: 1000}},
		{1, series.Exemplar{Labels: trace("b"), Value: 2, T: 2000}},
		{0, series.Exemplar{Labels: trace("c"), Value: 3, T: 3000}},
		{2, series.Exemplar{Labels: trace("a"), Value: 1, T: 1000}}, // the same, received twice
	} {
		if err := stores[e.node].Add(ls, e.x); err != nil {
			t.Fatalf("exemplar %d: %v", i, err)
		}
	}
	sel := [][]*series.Matcher{{series.MustMatcher(series.MatchEqual, "__name__", "req")}}
	check := func(n *testNode, want ...string) {
		t.Helper()
		got := n.Exemplars(0, 10_000, sel)
		var ids []string
		for _, se := range got {
			if series.Compare(se.Labels, ls) != 0 {
				t.Errorf("series %s, want %s", se.Labels, ls)
			}
			for _, e := range se.Exemplars {
				ids = append(ids, e.Labels.Get("trace_id"))
			}
		}
		if len(got) != 1 || !slices.Equal(ids, want) {
			t.Errorf("%s: %d series, exemplars %v, want one series with %v", n.cfg.Node, len(got), ids, want)
		}
	}
	for _, n := range nodes {
		check(n, "a", "b", "c")
	}
	// Node 0 gone: its "c" with it; node 2 kept its own copy of "a".
	nodes[0].stop()
	check(nodes[2], "a", "b")
}
