package cluster

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/headroomdb/headroom/proto/headroom/cluster/v1"
	"github.com/headroomdb/headroom/storage/series"
)

// Exemplars. A node keeps the exemplars of the writes it received, in
// memory (the exemplar package), not the owners of their series: so
// /api/v1/query_exemplars asks every live node for the exemplars it
// keeps and merges them. Exemplars are a hint for a dashboard: a node
// that does not answer is left out (and logged), not an error.

// ExemplarSource answers for this node's own exemplars.
type ExemplarSource func(start, end int64, sets [][]*series.Matcher) []series.SeriesExemplars

// SetExemplars sets where this node's own exemplars come from (nil:
// none kept).
func (n *Node) SetExemplars(f ExemplarSource) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.exemplars = f
}

func (n *Node) localExemplars(start, end int64, sets [][]*series.Matcher) []series.SeriesExemplars {
	n.mu.Lock()
	f := n.exemplars
	n.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(start, end, sets)
}

// Exemplars returns the exemplars every live node keeps of the series
// the sets select in [start, end], merged by series, oldest first.
func (n *Node) Exemplars(start, end int64, sets [][]*series.Matcher) []series.SeriesExemplars {
	n.mu.Lock()
	var peers []string
	for name := range n.peers {
		if name != n.cfg.Node {
			peers = append(peers, name)
		}
	}
	n.mu.Unlock()
	all := n.localExemplars(start, end, sets)
	req := &clusterv1.ExemplarsRequest{MinTimeMs: start, MaxTimeMs: end}
	for _, ms := range sets {
		req.Sets = append(req.Sets, &clusterv1.MatcherSet{Matchers: matchersToProto(ms)})
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, peer := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := n.askExemplars(peer, req)
			if err != nil {
				n.log.Warn("cluster: a node's exemplars left out", "node", peer, "err", err)
				return
			}
			mu.Lock()
			all = append(all, got...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return mergeExemplars(all)
}

func (n *Node) askExemplars(peer string, req *clusterv1.ExemplarsRequest) ([]series.SeriesExemplars, error) {
	c, err := n.conn(peer)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), selectTimeout)
	defer cancel()
	resp, err := clusterv1.NewClusterClient(c).Exemplars(ctx, req)
	if err != nil {
		return nil, err
	}
	return exemplarsFromProto(resp), nil
}

func exemplarsFromProto(resp *clusterv1.ExemplarsResponse) []series.SeriesExemplars {
	out := make([]series.SeriesExemplars, 0, len(resp.Series))
	for _, s := range resp.Series {
		se := series.SeriesExemplars{Labels: labelsFromProto(s.Labels)}
		for _, e := range s.Exemplars {
			se.Exemplars = append(se.Exemplars, series.Exemplar{Labels: labelsFromProto(e.Labels), Value: e.Value, T: e.TimestampMs})
		}
		out = append(out, se)
	}
	return out
}

// mergeExemplars joins the exemplars of each series from several nodes,
// in series order, each series' oldest first, once each.
func mergeExemplars(all []series.SeriesExemplars) []series.SeriesExemplars {
	slices.SortStableFunc(all, func(a, b series.SeriesExemplars) int { return series.Compare(a.Labels, b.Labels) })
	var out []series.SeriesExemplars
	for _, se := range all {
		if k := len(out) - 1; k >= 0 && series.Compare(out[k].Labels, se.Labels) == 0 {
			out[k].Exemplars = append(out[k].Exemplars, se.Exemplars...)
			continue
		}
		out = append(out, series.SeriesExemplars{Labels: se.Labels, Exemplars: slices.Clone(se.Exemplars)})
	}
	for i := range out {
		es := out[i].Exemplars
		slices.SortStableFunc(es, func(a, b series.Exemplar) int {
			if c := cmp.Compare(a.T, b.T); c != 0 {
				return c
			}
			return series.Compare(a.Labels, b.Labels)
		})
		out[i].Exemplars = slices.CompactFunc(es, func(a, b series.Exemplar) bool {
			return a.T == b.T && a.Value == b.Value && series.Compare(a.Labels, b.Labels) == 0
		})
	}
	return out
}

// Exemplars answers another node's question with this node's own.
func (s selectServer) Exemplars(_ context.Context, req *clusterv1.ExemplarsRequest) (*clusterv1.ExemplarsResponse, error) {
	var sets [][]*series.Matcher
	for i, set := range req.Sets {
		ms, err := matchersFromProto(set.Matchers)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("matcher set %d: %v", i, err))
		}
		sets = append(sets, ms)
	}
	resp := &clusterv1.ExemplarsResponse{}
	for _, se := range s.n.localExemplars(req.MinTimeMs, req.MaxTimeMs, sets) {
		ps := &clusterv1.SeriesExemplars{Labels: labelsToProto(se.Labels)}
		for _, e := range se.Exemplars {
			ps.Exemplars = append(ps.Exemplars, &clusterv1.Exemplar{Labels: labelsToProto(e.Labels), Value: e.Value, TimestampMs: e.T})
		}
		resp.Series = append(resp.Series, ps)
	}
	return resp, nil
}
