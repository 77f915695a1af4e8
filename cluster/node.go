package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage/series"
)

// The names this cluster gives its JetStream objects (docs/cluster.md).
const (
	StreamName    = "HEADROOM_WRITES"
	BucketName    = "HEADROOM_OWNERS"
	subjectPrefix = "headroom.w."
)

// Config is a node's cluster configuration (headroom serve --cluster...).
type Config struct {
	// URLs are the NATS servers, comma-separated.
	URLs string
	// Node names this node, unique in the cluster.
	Node string
	// Advertise is the host:port of this node's gRPC port, where the
	// others ask it for the series it owns.
	Advertise string
	// Partitions is the number of partitions (default 64), fixed for the
	// cluster's life: the first node records it, the others must match.
	Partitions int
	// Replicas of the stream and the bucket (default 3; at most the
	// number of NATS servers).
	Replicas int
	// Owners is the number of nodes that store each partition (default 2).
	Owners int
	// Lease is how long a node keeps its partitions without renewing
	// them (default 15 s): the time to notice a node that is gone.
	Lease time.Duration
	// Retention is how long the stream keeps a message (default 72 h):
	// the longest a replacement owner may take to catch up from it.
	Retention time.Duration
	// PartialReads answers a read whose partitions' owners all failed
	// with the other partitions' series and a warning naming the
	// missing ones (query.Warner); false fails the read instead.
	PartialReads bool
	// SeriesCache is how many series this node remembers having
	// published within the owners' active-series limits (default
	// 1,048,576, about 55 MB): a series it does not remember is checked
	// with its owners before the write is published (limits.go).
	SeriesCache int
	// Logger gets the cluster's events (nil: discarded).
	Logger *slog.Logger
	// missCheck is how often an owner makes sure the stream did not drop
	// messages before its consumer got them (checkMissed): a minute, or
	// half the stream's retention when that is shorter; tests set less.
	missCheck time.Duration
}

func (c *Config) withDefaults() {
	if c.Partitions <= 0 {
		c.Partitions = 64
	}
	if c.Replicas <= 0 {
		c.Replicas = 3
	}
	if c.Owners <= 0 {
		c.Owners = 2
	}
	if c.Lease <= 0 {
		c.Lease = 15 * time.Second
	}
	if c.Retention <= 0 {
		c.Retention = 72 * time.Hour
	}
	if c.missCheck <= 0 {
		c.missCheck = min(time.Minute, c.Retention/2)
	}
	if c.SeriesCache <= 0 {
		c.SeriesCache = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Local is this node's own store, as the cluster needs it: an appender
// for the partitions it owns, the marks that say which stream messages
// the store holds, and a querier for the reads it answers.
type Local interface {
	// NewAppender returns an appender; pastLimits: one that applies
	// samples acknowledged already, which the active-series limits must
	// not refuse (the limits were checked before the publish, with
	// CheckNewSeries).
	NewAppender(pastLimits bool) LocalAppender
	// CheckNewSeries refuses (series.ErrTooManySeries, naming the
	// first) the label sets that would bring the store past its limits,
	// taken in order and counting prior new series of earlier parts of
	// the same write; it returns their indexes and what the others
	// counted (storage.DB.CheckNewSeries).
	CheckNewSeries(lss []series.Labels, prior int) (refused []int, counted int, err error)
	Mark(name string) (uint64, bool)
	Querier(mint, maxt int64) (query.Querier, error)
}

// LocalAppender is what an owner applies messages with (storage.Appender
// has it); CheckTime is what a writing node checks times with.
type LocalAppender interface {
	CheckTime(ls series.Labels, t int64) error
	Append(ls series.Labels, t int64, v float64) error
	AppendHistogram(ls series.Labels, t int64, h *series.Histogram) error
	SetMark(name string, v uint64) error
	Commit() error
	Rollback()
}

// refAppender is a LocalAppender that appends a series' later samples by
// the reference its first returned (storage.Appender is one).
type refAppender interface {
	AppendLabels(ls series.Labels, t int64, v float64) (uint64, error)
	AppendRef(ref uint64, t int64, v float64) (found bool, err error)
}

// Node is one Headroom server's membership of the cluster: it publishes
// writes, owns partitions (consuming and applying them) and answers and
// fans out reads. Safe for concurrent use.
type Node struct {
	cfg    Config
	local  Local
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue

	reqSeq atomic.Uint64 // for message IDs
	// refused counts the samples of applied messages the store refused
	// (its series limits): acknowledged, and not stored on this owner.
	refused       atomic.Int64
	refusedLogged atomic.Int64 // unix ns of the last warning about them
	// seen: the series this node published lately, known to pass the
	// owners' limits; unchecked counts new series written without an
	// answer from any owner (limits.go).
	seen            *seenSeries
	unchecked       atomic.Int64
	uncheckedLogged atomic.Int64
	anyHist         atomic.Bool // a live node said its store holds native histograms
	metaKV          jetstream.KeyValue
	meta            metaCache
	prefix          string // of message IDs: node name and start time
	// passOver, in tests, makes the consumer of partition passOver-1 pass
	// over its messages as if the stream had dropped them before
	// delivering them (checkMissed).
	passOver atomic.Int64

	tickMu sync.Mutex // one membership round at a time
	mu     sync.Mutex
	held   map[int]*owned    // partitions this node owns
	peers  map[string]string // live node -> gRPC address
	owners [][]string        // partition -> its owners' names, by slot
	// serving: the partitions each live node said it serves (caught up,
	// complete) at its last round, from its "serving.<node>" key.
	serving map[string]map[int]bool
	conns   map[string]*grpc.ClientConn // by address
	// exemplars answers for this node's own exemplars (SetExemplars).
	exemplars ExemplarSource
	dial      func(addr string) (*grpc.ClientConn, error)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// owned is a partition this node holds a slot of.
type owned struct {
	slot   int
	rev    uint64 // the slot key's revision, for the renewal's compare-and-set
	cancel context.CancelFunc
	done   chan struct{}
	ready  atomic.Bool // caught up with the stream once since taking it
	// incomplete: the stream had dropped messages this owner had not
	// applied when it took the partition.
	incomplete atomic.Bool
	lag        atomic.Uint64 // messages behind the stream at the last fetch
}

// copyError is a consume's failure to copy a partition the stream can
// no longer catch up.
type copyError struct{ error }

func markName(p int) string { return "cluster.p" + strconv.Itoa(p) }

func subject(p int) string { return subjectPrefix + strconv.Itoa(p) }

func slotKey(p, slot int) string { return fmt.Sprintf("p.%d.%d", p, slot) }

// Join connects to NATS, creates the stream and the bucket when they do
// not exist, checks the partition count, and starts renewing this node's
// membership and taking its share of partitions. dial connects to a peer
// for reads (the caller adds its credentials).
func Join(ctx context.Context, cfg Config, local Local, dial func(addr string) (*grpc.ClientConn, error)) (*Node, error) {
	cfg.withDefaults()
	if cfg.Node == "" || strings.ContainsAny(cfg.Node, ". *>") {
		return nil, fmt.Errorf("cluster node name %q: want a non-empty name without '.', ' ', '*' or '>'", cfg.Node)
	}
	if cfg.Owners > cfg.Replicas {
		return nil, fmt.Errorf("cluster: %d owners per partition, more than the %d replicas", cfg.Owners, cfg.Replicas)
	}
	nc, err := nats.Connect(cfg.URLs, nats.Name("headroom "+cfg.Node), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to NATS at %s: %w", cfg.URLs, err)
	}
	n := &Node{cfg: cfg, local: local, log: cfg.Logger.With("cluster_node", cfg.Node), nc: nc,
		held: map[int]*owned{}, peers: map[string]string{}, owners: make([][]string, cfg.Partitions),
		conns: map[string]*grpc.ClientConn{}, dial: dial, seen: newSeenSeries(cfg.SeriesCache),
		prefix: cfg.Node + "-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-"}
	if n.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, err
	}
	if err := n.setUp(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	// The first round before returning: the node knows its peers and
	// the owners when it starts serving.
	n.tick()
	n.wg.Add(2)
	go n.loop()
	go n.watchMetadata()
	return n, nil
}

// permanent is an error retry does not retry.
type permanent struct{ error }

// refused makes JetStream's refusal of a configuration permanent: only
// its "temporarily unavailable" (503) and the silence of an election are
// worth another attempt.
func refused(err error) error {
	var api *jetstream.APIError
	if errors.As(err, &api) && api.Code != 503 {
		return permanent{err}
	}
	return err
}

// retry runs f with a deadline per attempt until it succeeds or ctx
// ends: a request sent while JetStream elects a leader gets no answer.
func retry(ctx context.Context, f func(ctx context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		if p, ok := err.(permanent); ok {
			return p.error
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (n *Node) setUp(ctx context.Context) error {
	err := retry(ctx, func(ctx context.Context) (err error) {
		n.stream, err = n.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: StreamName, Subjects: []string{subjectPrefix + ">"}, Replicas: n.cfg.Replicas,
			MaxAge: n.cfg.Retention, Duplicates: min(2*time.Minute, n.cfg.Retention), Storage: jetstream.FileStorage,
		})
		return refused(err)
	})
	if err != nil {
		return fmt.Errorf("cluster: stream %s: %w", StreamName, err)
	}
	err = retry(ctx, func(ctx context.Context) (err error) {
		n.kv, err = n.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: BucketName, TTL: n.cfg.Lease, Replicas: n.cfg.Replicas, Storage: jetstream.FileStorage,
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("cluster: bucket %s: %w", BucketName, err)
	}
	err = retry(ctx, func(ctx context.Context) (err error) {
		n.metaKV, err = n.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: MetadataBucket, Replicas: n.cfg.Replicas, Storage: jetstream.FileStorage})
		return err
	})
	if err != nil {
		return fmt.Errorf("cluster: bucket %s: %w", MetadataBucket, err)
	}
	// The partition count lives in its own bucket without a TTL.
	var cfgKV jetstream.KeyValue
	err = retry(ctx, func(ctx context.Context) (err error) {
		cfgKV, err = n.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketName + "_CONFIG", Replicas: n.cfg.Replicas, Storage: jetstream.FileStorage})
		return err
	})
	if err != nil {
		return fmt.Errorf("cluster: config bucket: %w", err)
	}
	want := strconv.Itoa(n.cfg.Partitions)
	return retry(ctx, func(ctx context.Context) error {
		e, err := cfgKV.Get(ctx, "partitions")
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			_, err = cfgKV.Create(ctx, "partitions", []byte(want))
			if errors.Is(err, jetstream.ErrKeyExists) {
				return errors.New("raced: read again")
			}
			return err
		}
		if err != nil {
			return err
		}
		if got := string(e.Value()); got != want {
			return permanent{fmt.Errorf("cluster: the cluster has %s partitions, this node is configured with %s (--cluster-partitions is fixed for the cluster's life)", got, want)}
		}
		return nil
	})
}

// seenEpoch is how often the seen-series cache retires a generation: a
// series not written for 30 to 60 minutes is checked again, before an
// owner's head lets it go (storage's HeadIdleTimeout, an hour).
const seenEpoch = 30 * time.Minute

// loop renews the membership and the leases every third of a lease.
func (n *Node) loop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.Lease / 3)
	defer t.Stop()
	epoch := time.Now()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		n.tick()
		if time.Since(epoch) >= seenEpoch {
			epoch = time.Now()
			n.seen.epoch.Add(1)
		}
	}
}

// score ranks node for partition p (rendezvous hashing): each partition
// prefers its own order of nodes, so that a node's arrival or departure
// moves only the partitions it ranks high for.
func score(p int, node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(strconv.Itoa(p)))
	h.Write([]byte{0})
	h.Write([]byte(node))
	return h.Sum64()
}

// desired returns the Owners nodes of live that rank highest for p.
func (n *Node) desired(p int, live []string) []string {
	c := append([]string(nil), live...)
	sort.Slice(c, func(i, j int) bool { return score(p, c[i]) > score(p, c[j]) })
	return c[:min(len(c), n.cfg.Owners)]
}

// tick is one round of membership: renew this node's key and its slots,
// learn the live nodes and every partition's owners, take a free slot of
// a partition this node ranks among the first Owners for, and give back
// one it holds where a better-ranked live node has none (the partition
// keeps its other owner meanwhile).
func (n *Node) tick() {
	n.tickMu.Lock()
	defer n.tickMu.Unlock()
	// Half a lease: a round that ran that long, and the next a third of
	// a lease later, still renew within the lease.
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.Lease/2)
	defer cancel()
	if _, err := n.kv.Put(ctx, "node."+n.cfg.Node, []byte(n.cfg.Advertise)); err != nil {
		n.log.Warn("cluster: membership not renewed", "err", err)
		return
	}
	// What this node serves, for the others' handovers (better) and
	// their status.
	if _, err := n.kv.Put(ctx, "serving."+n.cfg.Node, []byte(n.servingList())); err != nil {
		n.log.Warn("cluster: membership not renewed", "err", err)
		return
	}
	if n.localHistograms() {
		if _, err := n.kv.Put(ctx, "hist."+n.cfg.Node, []byte("1")); err != nil {
			n.log.Warn("cluster: membership not renewed", "err", err)
			return
		}
	}
	// The whole bucket in one watch (its current values, then a nil):
	// a Get a key was a round trip each, and under load the round could
	// run past its time and leave the leases unrenewed.
	entries := map[string]jetstream.KeyValueEntry{}
	w, err := n.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		n.log.Warn("cluster: cannot read the owners bucket", "err", err)
		return
	}
	func() {
		defer w.Stop()
		for {
			select {
			case e := <-w.Updates():
				if e == nil {
					return
				}
				entries[e.Key()] = e
			case <-ctx.Done():
				return
			}
		}
	}()
	if ctx.Err() != nil {
		n.log.Warn("cluster: owners bucket read cut short", "err", ctx.Err())
		return
	}
	peers := map[string]string{}
	serving := map[string]map[int]bool{}
	var live []string
	hist := false
	for k, e := range entries {
		if name, ok := strings.CutPrefix(k, "node."); ok {
			peers[name] = string(e.Value())
			live = append(live, name)
		}
		if name, ok := strings.CutPrefix(k, "serving."); ok {
			serving[name] = parseServing(string(e.Value()))
		}
		hist = hist || strings.HasPrefix(k, "hist.")
	}
	n.anyHist.Store(hist)
	owners := make([][]string, n.cfg.Partitions)
	for p := range owners {
		owners[p] = make([]string, n.cfg.Owners)
		for s := range owners[p] {
			if e, ok := entries[slotKey(p, s)]; ok {
				owners[p][s] = string(e.Value())
			}
		}
	}
	for p := 0; p < n.cfg.Partitions; p++ {
		want := n.desired(p, live)
		mine := -1
		for s, o := range owners[p] {
			if o == n.cfg.Node {
				mine = s
			}
		}
		n.mu.Lock()
		h := n.held[p]
		n.mu.Unlock()
		switch {
		case mine >= 0 && h != nil:
			if !contains(want, n.cfg.Node) && n.better(p, want, owners[p], serving) {
				n.release(ctx, p, h)
				owners[p][mine] = ""
				continue
			}
			rev, err := n.kv.Update(ctx, slotKey(p, mine), []byte(n.cfg.Node), h.rev)
			if err != nil {
				n.log.Warn("cluster: lease lost", "partition", p, "err", err)
				n.stopOwning(p)
				owners[p][mine] = ""
				continue
			}
			h.rev = rev
		case mine >= 0 && h == nil:
			// A slot in this node's name that it does not know of: from
			// before a restart, within the lease. Take it over.
			e := entries[slotKey(p, mine)]
			rev, err := n.kv.Update(ctx, slotKey(p, mine), []byte(n.cfg.Node), e.Revision())
			if err == nil {
				n.startOwning(p, mine, rev)
			}
		case mine < 0 && h != nil:
			n.log.Warn("cluster: lease expired", "partition", p)
			n.stopOwning(p)
		case contains(want, n.cfg.Node):
			for s, o := range owners[p] {
				if o != "" {
					continue
				}
				rev, err := n.kv.Create(ctx, slotKey(p, s), []byte(n.cfg.Node))
				if err != nil {
					continue // taken meanwhile
				}
				owners[p][s] = n.cfg.Node
				n.startOwning(p, s, rev)
				break
			}
		}
	}
	n.mu.Lock()
	n.peers, n.owners, n.serving = peers, owners, serving
	n.mu.Unlock()
}

// better reports that a live node ranked among p's first owners holds no
// slot of p: this node, ranked lower, should make room for it, when
// another owner serves the partition meanwhile. Serving, not holding: an
// owner that took its slot lately may still be catching up, and giving
// way then would leave the partition served by nobody until it has.
func (n *Node) better(p int, want, slots []string, serving map[string]map[int]bool) bool {
	others := 0
	for _, o := range slots {
		if o != "" && o != n.cfg.Node && serving[o][p] {
			others++
		}
	}
	if others == 0 {
		return false
	}
	for _, w := range want {
		if !contains(slots, w) {
			return true
		}
	}
	return false
}

// servingList is the partitions this node serves, as its serving key
// holds them: decimal numbers, comma-separated; "-" for none.
func (n *Node) servingList() string {
	n.mu.Lock()
	var ps []int
	for p, h := range n.held {
		if h.ready.Load() && !h.incomplete.Load() {
			ps = append(ps, p)
		}
	}
	n.mu.Unlock()
	if len(ps) == 0 {
		return "-"
	}
	sort.Ints(ps)
	b := make([]byte, 0, 4*len(ps))
	for i, p := range ps {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(p), 10)
	}
	return string(b)
}

// parseServing reads a serving key; what does not parse is left out (a
// node that serves nothing is the safe reading).
func parseServing(v string) map[int]bool {
	out := map[int]bool{}
	for _, f := range strings.Split(v, ",") {
		if p, err := strconv.Atoi(f); err == nil {
			out[p] = true
		}
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func (n *Node) release(ctx context.Context, p int, h *owned) {
	n.stopOwning(p)
	if err := n.kv.Delete(ctx, slotKey(p, h.slot), jetstream.LastRevision(h.rev)); err != nil {
		n.log.Warn("cluster: partition not released (its lease will expire)", "partition", p, "err", err)
		return
	}
	n.log.Info("cluster: partition handed to a better-ranked node", "partition", p)
}

// startOwning starts consuming partition p from the message after the
// last one the store holds.
func (n *Node) startOwning(p, slot int, rev uint64) {
	ctx, cancel := context.WithCancel(n.ctx)
	h := &owned{slot: slot, rev: rev, cancel: cancel, done: make(chan struct{})}
	n.mu.Lock()
	n.held[p] = h
	n.mu.Unlock()
	n.log.Info("cluster: owning partition", "partition", p, "slot", slot)
	go n.consume(ctx, p, h)
}

func (n *Node) stopOwning(p int) {
	n.mu.Lock()
	h := n.held[p]
	delete(n.held, p)
	n.mu.Unlock()
	if h != nil {
		h.cancel()
		<-h.done
	}
}

// fetchBatch is how many messages an owner applies in one commit.
const fetchBatch = 256

// consume applies partition p's messages to the store, each fetch in one
// commit that also sets the partition's mark to the last message's
// stream sequence: after any crash the store says exactly where to
// resume, and nothing is applied twice.
func (n *Node) consume(ctx context.Context, p int, h *owned) {
	defer close(h.done)
	for ctx.Err() == nil {
		err := n.consumeFrom(ctx, p, h)
		if ctx.Err() != nil {
			return
		}
		wait := time.Second
		if errors.As(err, new(copyError)) {
			// Until another owner serves the partition: not a hot loop.
			wait = 10 * time.Second
			n.log.Error("cluster: partition not copied; trying again", "partition", p, "err", err, "in", wait)
		} else {
			n.log.Warn("cluster: consuming partition failed; starting again", "partition", p, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

func (n *Node) consumeFrom(ctx context.Context, p int, h *owned) error {
	next := uint64(1)
	if m, ok := n.local.Mark(markName(p)); ok {
		next = m + 1
	}
	// Messages the stream dropped (its retention) before this owner
	// applied them cannot be read from it: the owner copies the
	// partition from another owner first (copy.go), and neither consumes
	// nor serves it until it has.
	var info *jetstream.StreamInfo
	if err := retry(ctx, func(ctx context.Context) (err error) {
		info, err = n.stream.Info(ctx)
		return err
	}); err != nil {
		return err
	}
	// The stream's sequences are shared by the partitions: a first
	// sequence past this owner's mark may only have dropped other
	// partitions' messages. The other owners' marks say: when none holds
	// more of the partition than this store, there is nothing to copy
	// (an idle partition, or owners restarted together).
	if first := info.State.FirstSeq; first > next {
		if m, ok := n.othersMark(ctx, p); !ok || m >= next {
			h.incomplete.Store(true)
			n.log.Warn("cluster: the stream may no longer hold messages this owner needs: copying the partition from another owner",
				"partition", p, "applied", next-1, "stream_first", first)
			applied, err := n.copyPartition(ctx, p)
			if err != nil {
				return copyError{fmt.Errorf("the stream no longer holds messages %d to %d, which may hold some of partition %d, and no other owner gave a copy (the partition is not served here; see --cluster-stream-retention): %w", next, first-1, p, err)}
			}
			next = max(next, applied+1)
			h.incomplete.Store(false)
		}
	}
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject(p)}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: next}
	var cons jetstream.Consumer
	if err := retry(ctx, func(ctx context.Context) (err error) {
		cons, err = n.stream.OrderedConsumer(ctx, cc)
		return err
	}); err != nil {
		return err
	}
	// Heartbeats every second: an ordered consumer lives on one NATS
	// server, and when that server goes the missed heartbeats make the
	// iterator create it again elsewhere (from the last message seen)
	// within seconds instead of half a minute.
	it, err := cons.Messages(jetstream.PullMaxMessages(2*fetchBatch), jetstream.PullExpiry(4*time.Second), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return err
	}
	defer it.Stop()
	// Next takes a wait or a context, not both: a cancel stops the
	// iterator instead.
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			it.Stop()
		case <-stopped:
		}
	}()
	app := n.local.NewAppender(true)
	idle := 0
	caughtUp, sinceLook := false, 0 // the idle rounds' lookups
	lastMissCheck := time.Now()
	for ctx.Err() == nil {
		if time.Since(lastMissCheck) >= n.cfg.missCheck {
			lastMissCheck = time.Now()
			if err := n.checkMissed(ctx, p, next); err != nil {
				app.Rollback()
				return err
			}
		}
		// A batch: what arrives until fetchBatch messages or a pause.
		var last, pending uint64
		got := 0
		wait := time.Second
		for got < fetchBatch {
			m, err := it.Next(jetstream.NextMaxWait(wait))
			if err != nil {
				if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
					break
				}
				app.Rollback()
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return err
			}
			wait = 20 * time.Millisecond
			md, err := m.Metadata()
			if err != nil {
				app.Rollback()
				return err
			}
			if md.Sequence.Stream < next {
				continue // the mark already holds it
			}
			if n.passOver.Load() == int64(p)+1 {
				continue // a test's stand-in for a message dropped before delivery
			}
			if b, err := DecodeBatch(m.Data()); err != nil {
				// A message that does not decode cannot be applied by
				// any owner: skipped, loudly, rather than stopping the
				// partition.
				n.log.Error("cluster: message skipped", "partition", p, "seq", md.Sequence.Stream, "err", err)
			} else {
				n.apply(app, p, md.Sequence.Stream, b)
			}
			last, pending = md.Sequence.Stream, md.NumPending
			got++
		}
		if got > 0 {
			if err := app.SetMark(markName(p), last); err != nil {
				return err
			}
			if err := app.Commit(); err != nil {
				return fmt.Errorf("apply up to stream sequence %d: %w", last, err)
			}
			next = last + 1
		}
		h.lag.Store(pending)
		if got > 0 {
			idle, caughtUp = 0, pending == 0
			if pending == 0 && !h.ready.Swap(true) {
				n.log.Info("cluster: partition caught up", "partition", p, "seq", next-1)
			}
			continue
		}
		// Idle: caught up, or the consumer stalled. An ordered consumer
		// lives on one NATS server; when that server goes, it may wait
		// in silence. The stream's last message of the partition says
		// which: behind it three idle rounds in a row, the consumer is
		// made again from the mark.
		// Caught up at the last look: look again every fifth idle round
		// only, so that a silent stall shows within about eight seconds
		// and an idle partition costs a lookup every five.
		if caughtUp && sinceLook < 4 {
			sinceLook++
			continue
		}
		sinceLook = 0
		var lastSeq uint64
		err := retry(ctx, func(ctx context.Context) error {
			m, err := n.stream.GetLastMsgForSubject(ctx, subject(p))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return nil
			}
			if err == nil {
				lastSeq = m.Sequence
			}
			return err
		})
		if err != nil {
			return err
		}
		caughtUp = lastSeq < next
		if caughtUp {
			idle = 0
			h.lag.Store(0)
			if !h.ready.Swap(true) {
				n.log.Info("cluster: partition caught up", "partition", p, "seq", next-1)
			}
			continue
		}
		h.lag.Store(lastSeq - (next - 1))
		if idle++; idle >= 3 {
			return fmt.Errorf("the consumer stalled at stream sequence %d, the partition's last is %d", next-1, lastSeq)
		}
	}
	return ctx.Err()
}

// checkMissed returns an error, which makes the consume start again and
// copy the partition, when the stream no longer holds messages after
// this owner's mark (next-1) and another owner applied past it. An
// ordered consumer passes silently over what the stream dropped before
// delivering it: a consumer that lagged the stream's retention, or was
// made again after its NATS server went, while messages expired. The
// stall lookups cannot see it once the stream holds nothing of the
// partition after the mark, and this store would lack those samples for
// good while reads trust it.
//
// The other owner may have applied only messages the stream still holds
// (a partition idle for longer than the retention, then written): the
// copy is then needless, which costs time and loses nothing.
func (n *Node) checkMissed(ctx context.Context, p int, next uint64) error {
	var first uint64
	if err := retry(ctx, func(ctx context.Context) error {
		info, err := n.stream.Info(ctx)
		if err == nil {
			first = info.State.FirstSeq
		}
		return err
	}); err != nil {
		return err
	}
	if first <= next {
		return nil
	}
	if m, ok := n.othersMark(ctx, p); ok && m >= next {
		return fmt.Errorf("the stream dropped messages %d to %d before this owner applied them, and another owner applied up to %d: copying the partition", next, first-1, m)
	}
	return nil
}

// apply adds one message's samples to the appender, which takes series
// past the store's limits (they were checked before the publish). A
// sample the store refuses (past the retention by now) is left out: the
// message is in the stream for good, and every owner refuses the same
// samples.
func (n *Node) apply(app LocalAppender, p int, seq uint64, b *Batch) {
	ra, byRef := app.(refAppender)
	refused := func(err error) {
		// Acknowledged to the writer, refused here: counted, and said
		// at most once a minute, since every sample of an old message
		// would say it.
		n.refused.Add(1)
		if now, last := time.Now().UnixNano(), n.refusedLogged.Load(); now-last >= int64(time.Minute) && n.refusedLogged.CompareAndSwap(last, now) {
			n.log.Warn("cluster: the store refused acknowledged samples (status: refusedSamples)", "partition", p, "seq", seq, "err", err)
		}
	}
	for i := range b.Series {
		s := &b.Series[i]
		xs := s.Samples
		// The series by its labels once, then by its reference: a
		// label hash and a lookup a series, not a sample.
		for byRef && len(xs) > 0 {
			ref, err := ra.AppendLabels(s.Labels, xs[0].T, xs[0].V)
			xs = xs[1:]
			if err != nil {
				refused(err)
				continue
			}
			for len(xs) > 0 {
				found, err := ra.AppendRef(ref, xs[0].T, xs[0].V)
				if !found {
					break // left the head meanwhile: by labels again
				}
				if err != nil {
					refused(err)
				}
				xs = xs[1:]
			}
		}
		for _, x := range xs {
			if err := app.Append(s.Labels, x.T, x.V); err != nil {
				refused(err)
			}
		}
		for _, x := range s.Hists {
			if err := app.AppendHistogram(s.Labels, x.T, x.H); err != nil {
				refused(err)
			}
		}
	}
}

// heldPartitions lists the partitions this node holds a slot of.
func (n *Node) heldPartitions() []int {
	n.mu.Lock()
	defer n.mu.Unlock()
	ps := make([]int, 0, len(n.held))
	for p := range n.held {
		ps = append(ps, p)
	}
	return ps
}

// Close stops owning, leaves the membership to expire, and disconnects.
func (n *Node) Close() {
	n.cancel()
	n.wg.Wait()
	for _, p := range n.heldPartitions() {
		n.stopOwning(p)
	}
	n.mu.Lock()
	for _, c := range n.conns {
		c.Close()
	}
	n.mu.Unlock()
	n.nc.Close()
}

// Status is what /api/v1/status/cluster shows.
type Status struct {
	Node       string `json:"node"`
	Partitions int    `json:"partitions"`
	Owners     int    `json:"ownersPerPartition"`
	Lease      string `json:"lease"`
	// RefusedSamples: samples of applied messages this node's store
	// refused (past its retention by the time it applied them) since it
	// started.
	RefusedSamples int64 `json:"refusedSamples"`
	// UncheckedSeries: new series this node published without an
	// answer from any of their owners on the active-series limits.
	UncheckedSeries int64             `json:"uncheckedSeries"`
	Nodes           map[string]string `json:"nodes"` // live node -> gRPC address
	Partition       []PartitionStatus `json:"partitionOwners"`
}

// PartitionStatus is one partition's owners, and this node's standing
// when it is one of them.
type PartitionStatus struct {
	Partition int      `json:"partition"`
	Owners    []string `json:"owners"`
	// ServingOwners: the owners that said at their last round that they
	// serve the partition (caught up and complete).
	ServingOwners []string `json:"servingOwners"`
	// Of this node, when it owns the partition: caught up once since it
	// took it, messages behind at its last fetch, and the last stream
	// sequence its store holds.
	Serving *bool   `json:"serving,omitempty"`
	Lag     *uint64 `json:"lag,omitempty"`
	Applied *uint64 `json:"applied,omitempty"`
	// Incomplete: the stream had dropped messages this owner needed.
	Incomplete bool `json:"incomplete,omitempty"`
}

// Status returns the membership as this node last read it.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := Status{Node: n.cfg.Node, Partitions: n.cfg.Partitions, Owners: n.cfg.Owners, Lease: n.cfg.Lease.String(), Nodes: map[string]string{}, RefusedSamples: n.refused.Load(), UncheckedSeries: n.unchecked.Load()}
	for k, v := range n.peers {
		st.Nodes[k] = v
	}
	for p := 0; p < n.cfg.Partitions; p++ {
		ps := PartitionStatus{Partition: p, Owners: []string{}, ServingOwners: []string{}}
		for _, o := range n.owners[p] {
			if o != "" {
				ps.Owners = append(ps.Owners, o)
				if n.serving[o][p] {
					ps.ServingOwners = append(ps.ServingOwners, o)
				}
			}
		}
		if h := n.held[p]; h != nil {
			ready, lag := h.ready.Load() && !h.incomplete.Load(), h.lag.Load()
			applied, _ := n.local.Mark(markName(p))
			ps.Serving, ps.Lag, ps.Applied, ps.Incomplete = &ready, &lag, &applied, h.incomplete.Load()
		}
		st.Partition = append(st.Partition, ps)
	}
	return st
}
