package cluster

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/headroomdb/headroom/proto/headroom/cluster/v1"
	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/series"
)

// responseBytes is about how much one Select response carries.
const responseBytes = 1 << 20

// responseSize counts what a streamed response holds so far.
type responseSize int

// full adds a series of the given blocks and reports that the response
// reached responseBytes (and starts counting the next).
func (r *responseSize) full(blocks ...[][]byte) bool {
	n := 64 // labels and framing, about
	for _, bs := range blocks {
		for _, b := range bs {
			n += len(b)
		}
	}
	if *r += responseSize(n); *r < responseBytes {
		return false
	}
	*r = 0
	return true
}

// chunkSamples cuts the chunks Select sends: small enough to stream,
// large enough that a chunk's header is noise.
const chunkSamples = 480

// selectTimeout bounds one owner's answer: past it the next owner is asked.
const selectTimeout = 30 * time.Second

// RegisterServer adds the internal Cluster service (Select) to s.
func (n *Node) RegisterServer(s *grpc.Server) {
	clusterv1.RegisterClusterServer(s, selectServer{n: n})
}

type selectServer struct {
	clusterv1.UnimplementedClusterServer
	n *Node
}

func (s selectServer) Select(req *clusterv1.SelectRequest, stream grpc.ServerStreamingServer[clusterv1.SelectResponse]) error {
	n := s.n
	if err := n.checkPartitions(req.PartitionCount, req.Partitions); err != nil {
		return err
	}
	ms, err := matchersFromProto(req.Matchers)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	resp := &clusterv1.SelectResponse{}
	var size responseSize
	err = n.selectLocal(req.MinTimeMs, req.MaxTimeMs, ms, partitionSet(req.Partitions), req.LabelsOnly, func(s *clusterv1.Series) error {
		resp.Series = append(resp.Series, s)
		if !size.full(s.Chunks, s.HistogramChunks) {
			return nil
		}
		err := stream.Send(resp)
		resp = &clusterv1.SelectResponse{}
		return err
	})
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if len(resp.Series) > 0 {
		return stream.Send(resp)
	}
	return nil
}

// checkPartitions refuses a read asked with another partition count, or
// of partitions this node does not serve.
func (n *Node) checkPartitions(count uint32, ps []uint32) error {
	if int(count) != n.cfg.Partitions {
		return status.Errorf(codes.FailedPrecondition, "asked with %d partitions, this node has %d", count, n.cfg.Partitions)
	}
	var missing []string
	for _, p := range ps {
		if !n.serves(int(p)) {
			missing = append(missing, fmt.Sprint(p))
		}
	}
	if len(missing) > 0 {
		return status.Errorf(codes.FailedPrecondition, "node %s does not serve partitions %s (not an owner, or not caught up)", n.cfg.Node, strings.Join(missing, ", "))
	}
	return nil
}

// serves reports that this node owns p and has caught up on it once.
func (n *Node) serves(p int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.held[p]
	return h != nil && h.ready.Load() && !h.incomplete.Load()
}

func partitionSet(ps []uint32) map[int]bool {
	m := make(map[int]bool, len(ps))
	for _, p := range ps {
		m[int(p)] = true
	}
	return m
}

// eachLocal calls f with each series of the local store in the
// partitions ps that the matchers select, its iterator and histograms
// (nil with labelsOnly), valid until f returns.
func (n *Node) eachLocal(mint, maxt int64, ms []*series.Matcher, ps map[int]bool, labelsOnly bool, f func(ls series.Labels, it series.Iterator, hists []series.HistSample) error) error {
	q, err := n.local.Querier(mint, maxt)
	if err != nil {
		return err
	}
	defer q.Close()
	if labelsOnly {
		lss, err := q.SelectLabels(ms...)
		if err != nil {
			return err
		}
		for _, ls := range lss {
			if ps[PartitionOf(ls, n.cfg.Partitions)] {
				if err := f(ls, nil, nil); err != nil {
					return err
				}
			}
		}
		return nil
	}
	set, err := q.Series(ms...)
	if err != nil {
		return err
	}
	hset, _ := set.(series.HistSet)
	for set.Next() {
		ls, it := set.At()
		if !ps[PartitionOf(ls, n.cfg.Partitions)] {
			continue
		}
		var hists []series.HistSample
		if hset != nil {
			hists = hset.Hists()
		}
		if err := f(ls, it, hists); err != nil {
			return err
		}
	}
	return set.Err()
}

// selectLocal reads the local store's series of the partitions in ps,
// encoded as Select sends them: a series read from one chain of stored
// chunks (the usual case) as its chunks, copied; others decoded and
// encoded again.
func (n *Node) selectLocal(mint, maxt int64, ms []*series.Matcher, ps map[int]bool, labelsOnly bool, f func(*clusterv1.Series) error) error {
	var buf []series.Sample
	return n.eachLocal(mint, maxt, ms, ps, labelsOnly, func(ls series.Labels, it series.Iterator, hists []series.HistSample) error {
		s := &clusterv1.Series{Labels: labelsToProto(ls)}
		if labelsOnly {
			return f(s)
		}
		if cs, ok := it.(series.ChunkSource); ok {
			if chunks, ok := cs.Chunks(); ok {
				for _, c := range chunks {
					s.Chunks = append(s.Chunks, bytes.Clone(c))
				}
			}
		}
		if s.Chunks == nil {
			buf = buf[:0]
			for it.Next() {
				t, v := it.At()
				buf = append(buf, series.Sample{T: t, V: v})
			}
			if err := it.Err(); err != nil {
				return err
			}
			s.Chunks = encodeFloats(buf)
		}
		var err error
		if s.HistogramChunks, err = encodeHists(hists); err != nil {
			return fmt.Errorf("series %s: %w", ls, err)
		}
		if len(s.Chunks) == 0 && len(s.HistogramChunks) == 0 {
			return nil
		}
		return f(s)
	})
}

func encodeFloats(ss []series.Sample) [][]byte {
	var out [][]byte
	for len(ss) > 0 {
		a := chunk.NewAppender()
		k := 0
		for ; k < len(ss) && k < chunkSamples; k++ {
			if err := a.Append(ss[k].T, ss[k].V); err != nil {
				break // out of order or full: the next chunk
			}
		}
		if k == 0 {
			k = 1 // a repeated timestamp: dropped, as the merge would
		} else {
			out = append(out, append([]byte(nil), a.Bytes()...))
		}
		ss = ss[k:]
	}
	return out
}

func encodeHists(hs []series.HistSample) ([][]byte, error) {
	var out [][]byte
	a := chunk.NewHistogramAppender()
	for i := 0; i < len(hs); {
		err := a.Append(hs[i].T, hs[i].H)
		switch {
		case err == nil:
			i++
		case a.Count() > 0 && (errors.Is(err, chunk.ErrLayout) || errors.Is(err, chunk.ErrFull) || errors.Is(err, chunk.ErrOutOfOrder)):
			out = append(out, append([]byte(nil), a.Bytes()...))
			a = chunk.NewHistogramAppender()
		case errors.Is(err, chunk.ErrOutOfOrder):
			i++
		default:
			return nil, err
		}
	}
	if a.Count() > 0 {
		out = append(out, append([]byte(nil), a.Bytes()...))
	}
	return out, nil
}

func labelsToProto(ls series.Labels) []*clusterv1.Label {
	out := make([]*clusterv1.Label, len(ls))
	for i, l := range ls {
		out[i] = &clusterv1.Label{Name: l.Name, Value: l.Value}
	}
	return out
}

func labelsFromProto(pl []*clusterv1.Label) series.Labels {
	ls := make(series.Labels, len(pl))
	for i, l := range pl {
		ls[i] = series.Label{Name: l.Name, Value: l.Value}
	}
	return ls
}

func matchersToProto(ms []*series.Matcher) []*clusterv1.Matcher {
	out := make([]*clusterv1.Matcher, len(ms))
	for i, m := range ms {
		out[i] = &clusterv1.Matcher{Type: int32(m.Type), Name: m.Name, Value: m.Value}
	}
	return out
}

func matchersFromProto(pm []*clusterv1.Matcher) ([]*series.Matcher, error) {
	out := make([]*series.Matcher, len(pm))
	for i, m := range pm {
		if m.Type < int32(series.MatchEqual) || m.Type > int32(series.MatchNotRegexp) {
			return nil, fmt.Errorf("matcher %d: unknown type %d", i, m.Type)
		}
		var err error
		if out[i], err = series.NewMatcher(series.MatchType(m.Type), m.Name, m.Value); err != nil {
			return nil, fmt.Errorf("matcher %d: %w", i, err)
		}
	}
	return out, nil
}

// Querier returns a querier over the whole cluster: the node asks one
// owner of each partition for its series (itself first when it owns
// one), in parallel, and merges the answers. Partitions whose owners all
// fail are left out with a warning naming them (Config.PartialReads), or
// make the selection fail.
func (n *Node) Querier(mint, maxt int64) (query.Querier, error) {
	return &fanQuerier{n: n, mint: mint, maxt: maxt}, nil
}

type fanQuerier struct {
	n          *Node
	mint, maxt int64
	mu         sync.Mutex
	warnings   []string // partitions left out (Config.PartialReads)
}

// Warnings names the partitions the selections so far had to leave out
// (query.Warner).
func (q *fanQuerier) Warnings() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.warnings...)
}

// remote is one series as an owner sent it, decoded.
type remote struct {
	ls    series.Labels
	ss    []series.Sample
	hists []series.HistSample
}

// plan orders each partition's owners: this node first when it serves the
// partition, then the others by slot.
func (n *Node) plan() [][]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([][]string, n.cfg.Partitions)
	for p := range out {
		if h := n.held[p]; h != nil && h.ready.Load() && !h.incomplete.Load() {
			out[p] = append(out[p], n.cfg.Node)
		}
		for _, o := range n.owners[p] {
			if o != "" && o != n.cfg.Node && n.peers[o] != "" {
				out[p] = append(out[p], o)
			}
		}
	}
	return out
}

func (n *Node) conn(node string) (*grpc.ClientConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	addr := n.peers[node]
	if addr == "" {
		return nil, fmt.Errorf("node %s is not live", node)
	}
	// By address: a node that restarts may come back on another port.
	if c := n.conns[addr]; c != nil {
		return c, nil
	}
	c, err := n.dial(addr)
	if err != nil {
		return nil, err
	}
	n.conns[addr] = c
	return c, nil
}

// fanOut asks the owners of the partitions in parts, one owner at a time
// per partition, in rounds: a round calls ask with each node and the
// partitions it is the next choice for, in parallel, and the partitions
// whose node failed go to their next owner. ask must deliver nothing of
// a call that fails; an error wrapped in abort ends the read instead
// (something was delivered, or retrying cannot help). Partitions no
// owner answered make the warnings (Config.PartialReads) or the error.
func (n *Node) fanOut(parts []int, ask func(node string, ps []uint32) error) (warnings []string, err error) {
	plan := n.plan()
	todo := slices.Clone(parts)
	failures := map[int][]string{}
	for round := 0; len(todo) > 0; round++ {
		byNode := map[string][]uint32{}
		var lost []int
		for _, p := range todo {
			if round >= len(plan[p]) {
				lost = append(lost, p)
				continue
			}
			byNode[plan[p][round]] = append(byNode[plan[p][round]], uint32(p))
		}
		if len(lost) > 0 {
			sort.Ints(lost)
			var why []string
			for _, p := range lost {
				if len(failures[p]) == 0 {
					why = append(why, fmt.Sprintf("%d: no live owner", p))
				} else {
					why = append(why, fmt.Sprintf("%d: %s", p, strings.Join(failures[p], "; ")))
				}
			}
			err := fmt.Errorf("cluster: no owner answered for %d of %d partitions (%s)", len(lost), n.cfg.Partitions, strings.Join(why, ", "))
			if !n.cfg.PartialReads {
				return nil, err
			}
			warnings = append(warnings, err.Error()+": the answer lacks their series")
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		var fatal error
		todo = todo[:0]
		for node, ps := range byNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := ask(node, ps)
				mu.Lock()
				defer mu.Unlock()
				var a abort
				switch {
				case err == nil:
				case errors.As(err, &a):
					if fatal == nil {
						fatal = a.err
					}
				default:
					for _, p := range ps {
						todo = append(todo, int(p))
						failures[int(p)] = append(failures[int(p)], node+": "+err.Error())
					}
				}
			}()
		}
		wg.Wait()
		if fatal != nil {
			return nil, fatal
		}
	}
	return warnings, nil
}

// abort is an ask's error that ends a fan-out instead of moving on to
// the partitions' next owners.
type abort struct{ err error }

func (a abort) Error() string { return a.err.Error() }

// allPartitions lists 0 to n-1.
func allPartitions(n int) []int {
	out := make([]int, n)
	for p := range out {
		out[p] = p
	}
	return out
}

// fetch reads the series ms selects from one owner of each partition.
func (q *fanQuerier) fetch(ms []*series.Matcher, labelsOnly bool) ([]remote, error) {
	var mu sync.Mutex
	var out []remote
	warnings, err := q.n.fanOut(allPartitions(q.n.cfg.Partitions), func(node string, ps []uint32) error {
		got, err := q.ask(node, ps, ms, labelsOnly)
		if err != nil {
			return err
		}
		mu.Lock()
		out = append(out, got...)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(warnings) > 0 {
		q.mu.Lock()
		q.warnings = append(q.warnings, warnings...)
		q.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return series.Compare(out[i].ls, out[j].ls) < 0 })
	return out, nil
}

// ask gets partitions ps from node: from the local store when it is this
// node, over the internal API otherwise.
func (q *fanQuerier) ask(node string, ps []uint32, ms []*series.Matcher, labelsOnly bool) ([]remote, error) {
	n := q.n
	var out []remote
	if node == n.cfg.Node {
		// This node's own partitions: their samples, not encoded.
		err := n.eachLocal(q.mint, q.maxt, ms, partitionSet(ps), labelsOnly, func(ls series.Labels, it series.Iterator, hists []series.HistSample) error {
			r := remote{ls: ls.Copy(), hists: hists}
			if !labelsOnly {
				if sa, ok := it.(series.SampleAppender); ok {
					r.ss = sa.AppendSamples(nil)
				} else {
					for it.Next() {
						t, v := it.At()
						r.ss = append(r.ss, series.Sample{T: t, V: v})
					}
				}
				if err := it.Err(); err != nil {
					return fmt.Errorf("series %s: %w", ls, err)
				}
				if len(r.ss) == 0 && len(r.hists) == 0 {
					return nil
				}
			}
			out = append(out, r)
			return nil
		})
		return out, err
	}
	add := func(s *clusterv1.Series) error {
		r, err := decodeSeries(s)
		if err != nil {
			return fmt.Errorf("series %v: %w", labelsFromProto(s.Labels), err)
		}
		if labelsOnly {
			out = append(out, r)
			return nil
		}
		// An owner sends whole chunks: the samples outside the range
		// go, and a series left with none.
		r.ss = clip(r.ss, q.mint, q.maxt)
		if len(r.ss) > 0 || len(r.hists) > 0 {
			out = append(out, r)
		}
		return nil
	}
	c, err := n.conn(node)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), selectTimeout)
	defer cancel()
	stream, err := clusterv1.NewClusterClient(c).Select(ctx, &clusterv1.SelectRequest{
		Partitions: ps, PartitionCount: uint32(n.cfg.Partitions), MinTimeMs: q.mint, MaxTimeMs: q.maxt,
		Matchers: matchersToProto(ms), LabelsOnly: labelsOnly,
	})
	if err != nil {
		return nil, err
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		for _, s := range resp.Series {
			if err := add(s); err != nil {
				return nil, err
			}
		}
	}
}

// clip keeps the samples of ss (sorted) in [mint, maxt].
func clip(ss []series.Sample, mint, maxt int64) []series.Sample {
	i, _ := slices.BinarySearchFunc(ss, mint, func(s series.Sample, t int64) int { return cmp.Compare(s.T, t) })
	j, _ := slices.BinarySearchFunc(ss, maxt+1, func(s series.Sample, t int64) int { return cmp.Compare(s.T, t) })
	if maxt == math.MaxInt64 {
		j = len(ss)
	}
	return ss[i:max(i, j)]
}

func decodeSeries(s *clusterv1.Series) (remote, error) {
	r := remote{ls: labelsFromProto(s.Labels)}
	var it chunk.Iterator
	for _, c := range s.Chunks {
		it.Reset(c)
		for it.Next() {
			t, v := it.At()
			r.ss = append(r.ss, series.Sample{T: t, V: v})
		}
		if err := it.Err(); err != nil {
			return r, err
		}
	}
	for _, c := range s.HistogramChunks {
		var err error
		if r.hists, err = chunk.AppendHistograms(r.hists, c); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (q *fanQuerier) SelectLabels(ms ...*series.Matcher) ([]series.Labels, error) {
	rs, err := q.fetch(ms, true)
	if err != nil {
		return nil, err
	}
	out := make([]series.Labels, len(rs))
	for i, r := range rs {
		out[i] = r.ls
	}
	return out, nil
}

// everything selects every series that has a name.
var everything = series.MustMatcher(series.MatchRegexp, "__name__", ".+")

func (q *fanQuerier) LabelNames(ms ...*series.Matcher) ([]string, error) {
	return q.collect(ms, func(ls series.Labels, seen map[string]bool) {
		for _, l := range ls {
			seen[l.Name] = true
		}
	})
}

func (q *fanQuerier) LabelValues(name string, ms ...*series.Matcher) ([]string, error) {
	return q.collect(ms, func(ls series.Labels, seen map[string]bool) {
		if v := ls.Get(name); v != "" {
			seen[v] = true
		}
	})
}

// collect gathers strings from the label sets ms selects (every series
// when none), sorted: the owners answer label lookups as selections.
func (q *fanQuerier) collect(ms []*series.Matcher, each func(series.Labels, map[string]bool)) ([]string, error) {
	if len(ms) == 0 {
		ms = []*series.Matcher{everything}
	}
	lss, err := q.SelectLabels(ms...)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, ls := range lss {
		each(ls, seen)
	}
	return sortedKeys(seen), nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (q *fanQuerier) Series(ms ...*series.Matcher) (series.Set, error) {
	rs, err := q.fetch(ms, false)
	if err != nil {
		return nil, err
	}
	return &remoteSet{rs: rs, i: -1}, nil
}

func (q *fanQuerier) Close() error { return nil }

// remoteSet is the merged answer as the engine reads it.
type remoteSet struct {
	rs []remote
	i  int
}

func (s *remoteSet) Next() bool { s.i++; return s.i < len(s.rs) }
func (s *remoteSet) At() (series.Labels, series.Iterator) {
	return s.rs[s.i].ls, series.SliceIterator(s.rs[s.i].ss)
}
func (s *remoteSet) Err() error                 { return nil }
func (s *remoteSet) Hists() []series.HistSample { return s.rs[s.i].hists }
