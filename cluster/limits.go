package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	gproto "google.golang.org/protobuf/proto"

	clusterv1 "github.com/headroomdb/headroom/proto/headroom/cluster/v1"
	"github.com/headroomdb/headroom/storage/series"
)

// Active-series limits. A single node refuses, before acknowledging, a
// write that would bring its store past --max-active-series*. In a
// cluster the stores are the owners': so before publishing, a node asks
// the owners of the partitions of a write's new series (CheckSeries)
// whether their stores would take them, and refuses the write whole when
// one says no. Owners then apply what was acknowledged past their limits
// rather than lose it. "New" is what the node has not published, or
// checked, lately (seenSeries): a steady write costs a hash lookup a
// series, and the checks follow the churn of series. The limits are
// soft by what concurrent writers let through between two checks.

// checkTimeout bounds an owner's answer to CheckSeries. An owner that
// does not answer in time is left out: a write is not refused because a
// replica is gone (the other owner's answer stands, and without any the
// write goes unchecked, logged and counted).
const checkTimeout = 2 * time.Second

// seenStripes spreads the seen-series cache over locks, as the storage
// head does its series map.
const seenStripes = 64

// seenSeries remembers the label hashes of series a node published and
// found to pass the owners' limits. Two generations per stripe: a
// generation is retired when it is full or at each epoch (Node.loop),
// and a hash found in the retired one moves to the current. So a series
// written steadily stays known, and one not written for two epochs is
// checked again (its owners may have evicted it from their heads).
type seenSeries struct {
	perStripe int
	epoch     atomic.Uint64
	stripes   [seenStripes]seenStripe
}

type seenStripe struct {
	mu       sync.Mutex
	epoch    uint64
	cur, old map[uint64]struct{}
}

func newSeenSeries(capacity int) *seenSeries {
	s := &seenSeries{perStripe: max(capacity/seenStripes, 1)}
	for i := range s.stripes {
		s.stripes[i].cur = map[uint64]struct{}{}
	}
	return s
}

// stripe locks the stripe of h, first retiring its generation when an
// epoch has passed or it is full.
func (s *seenSeries) stripe(h uint64) *seenStripe {
	// The partition is the hash modulo the partition count: the stripe
	// takes the top bits, so that one partition's series spread too.
	st := &s.stripes[h>>58]
	st.mu.Lock()
	if e := s.epoch.Load(); st.epoch != e || len(st.cur) >= s.perStripe {
		st.old, st.cur = st.cur, make(map[uint64]struct{}, len(st.cur))
		if e-st.epoch >= 2 {
			st.old = nil // untouched for two epochs: all of it is stale
		}
		st.epoch = e
	}
	return st
}

func (s *seenSeries) has(h uint64) bool {
	st := s.stripe(h)
	defer st.mu.Unlock()
	if _, ok := st.cur[h]; ok {
		return true
	}
	if _, ok := st.old[h]; ok {
		st.cur[h] = struct{}{}
		return true
	}
	return false
}

func (s *seenSeries) add(h uint64) {
	st := s.stripe(h)
	st.cur[h] = struct{}{}
	st.mu.Unlock()
}

// newSeries is a write's series that the node has not seen lately, by
// partition.
type newSeries struct {
	byPart map[int][]series.Labels
	hashes map[int][]uint64
}

func (ns *newSeries) add(p int, h uint64, ls series.Labels) {
	if ns.byPart == nil {
		ns.byPart, ns.hashes = map[int][]series.Labels{}, map[int][]uint64{}
	}
	ns.byPart[p] = append(ns.byPart[p], ls)
	ns.hashes[p] = append(ns.hashes[p], h)
}

// checkSeries asks every owner of the partitions of ns whether its store
// would take their series. It returns the label hashes of the series
// some owner refused, and the first refusal (naming the series, the
// limit and the node): a write is refused whole for it, or (OTLP) taken
// without those series. Series of a partition that at least one owner
// answered for, and none refused, are remembered; those no owner
// answered for are let through unchecked, and asked again next time.
func (n *Node) checkSeries(ns *newSeries) (refused map[uint64]bool, refusal error) {
	n.mu.Lock()
	ask := map[string][]series.Labels{}
	hashes := map[string][]uint64{}
	parts := map[string][]int{}
	for p, lss := range ns.byPart {
		for _, o := range n.owners[p] {
			if o != "" {
				ask[o] = append(ask[o], lss...)
				hashes[o] = append(hashes[o], ns.hashes[p]...)
				parts[o] = append(parts[o], p)
			}
		}
	}
	n.mu.Unlock()
	type answer struct {
		node    string
		refused []int // indexes into ask[node]
		err     error // the node's first refusal (ErrTooManySeries) or its failure
	}
	answers := make(chan answer, len(ask))
	for node, lss := range ask {
		go func() {
			var a answer
			if node == n.cfg.Node {
				a.refused, _, a.err = n.local.CheckNewSeries(lss, 0)
			} else {
				a.refused, a.err = n.askCheck(node, lss)
			}
			a.node = node
			answers <- a
		}()
	}
	answered := map[int]bool{}
	refused = map[uint64]bool{}
	for range ask {
		a := <-answers
		switch {
		case a.err == nil || errors.Is(a.err, series.ErrTooManySeries):
			for _, p := range parts[a.node] {
				answered[p] = true
			}
			for _, k := range a.refused {
				refused[hashes[a.node][k]] = true
			}
			if a.err != nil && refusal == nil {
				refusal = fmt.Errorf("%w (node %s's store)", a.err, a.node)
			}
		default:
			n.log.Debug("cluster: an owner did not answer a series check", "node", a.node, "err", a.err)
		}
	}
	for p, hs := range ns.hashes {
		if !answered[p] {
			n.unchecked.Add(int64(len(hs)))
			if now, last := time.Now().UnixNano(), n.uncheckedLogged.Load(); now-last >= int64(time.Minute) && n.uncheckedLogged.CompareAndSwap(last, now) {
				n.log.Warn("cluster: no owner answered whether new series pass its limits; written unchecked (status: uncheckedSeries)", "partition", p, "series", len(hs))
			}
			continue
		}
		for _, h := range hs {
			if !refused[h] {
				n.seen.add(h)
			}
		}
	}
	return refused, refusal
}

// checkPartBytes bounds one CheckSeries request: a write of many new
// series (a first backfill) is asked in parts, well under the gRPC
// message limit of the node asked (--max-request-bytes, 10 MiB).
const checkPartBytes = 1 << 20

// askCheck asks one node about lss, in parts of about checkPartBytes,
// each counting the earlier ones' new series. It returns the indexes of
// lss the node refused, and its first refusal wrapping
// series.ErrTooManySeries.
func (n *Node) askCheck(node string, lss []series.Labels) (refused []int, err error) {
	c, err := n.conn(node)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	var prior uint64
	var first error
	for off := 0; off < len(lss); {
		req := &clusterv1.CheckSeriesRequest{Prior: prior}
		size := 0
		for size < checkPartBytes && off+len(req.Series) < len(lss) {
			s := &clusterv1.Series{Labels: labelsToProto(lss[off+len(req.Series)])}
			req.Series = append(req.Series, s)
			size += gproto.Size(s) + 4
		}
		resp, err := clusterv1.NewClusterClient(c).CheckSeries(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, k := range resp.RefusedSeries {
			if int(k) >= len(req.Series) {
				return nil, fmt.Errorf("node %s refused series %d of a request of %d", node, k, len(req.Series))
			}
			refused = append(refused, off+int(k))
		}
		if resp.Refused != "" && first == nil {
			first = fmt.Errorf("%w: %s", series.ErrTooManySeries, resp.Refused)
		}
		prior += resp.Counted
		off += len(req.Series)
	}
	return refused, first
}

// CheckSeries answers whether this node's store would take the series
// (new to the asking node) within its limits.
func (s selectServer) CheckSeries(_ context.Context, req *clusterv1.CheckSeriesRequest) (*clusterv1.CheckSeriesResponse, error) {
	lss := make([]series.Labels, len(req.Series))
	for i, ps := range req.Series {
		lss[i] = labelsFromProto(ps.Labels)
	}
	refused, counted, err := s.n.local.CheckNewSeries(lss, int(min(req.Prior, math.MaxInt32)))
	resp := &clusterv1.CheckSeriesResponse{Counted: uint64(counted)}
	for _, k := range refused {
		resp.RefusedSeries = append(resp.RefusedSeries, uint32(k))
	}
	switch {
	case err == nil:
		return resp, nil
	case errors.Is(err, series.ErrTooManySeries):
		// The refusal's own words, without the sentinel's, which the
		// asking node wraps again.
		msg := err.Error()
		if p := series.ErrTooManySeries.Error() + ": "; len(msg) > len(p) && msg[:len(p)] == p {
			msg = msg[len(p):]
		}
		resp.Refused = msg
		return resp, nil
	default:
		return nil, err
	}
}
