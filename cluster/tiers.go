package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/headroomdb/headroom/proto/headroom/cluster/v1"
	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// Rollup tiers through the fan-out. Each owner downsamples its own
// partitions in its own store, late samples included, and answers a
// tier read exactly (days not rolled up yet computed from raw samples,
// as a single node does). So the asking node plans a query's tiers as a
// single node would, from its own tier configuration (every node must
// configure the same tiers: an owner refuses a resolution it lacks), and
// asks one owner of each partition for the tier's buckets: a long range
// costs its buckets, not its samples, across the cluster too.

// Tiers returns the local store's tiers (query.RollupSource): the
// cluster's, since every node must configure the same.
func (n *Node) Tiers() []query.Tier {
	if rs, ok := n.local.(query.RollupSource); ok {
		return rs.Tiers()
	}
	return nil
}

// RawOldest is the local store's raw floor (query.RawKeeper): the
// owners keep raw samples as long as this node does, by the same
// configuration.
func (n *Node) RawOldest() int64 {
	if rk, ok := n.local.(query.RawKeeper); ok {
		return rk.RawOldest()
	}
	return math.MinInt64
}

// HasHistograms reports whether any node stores native histograms
// (query.HistogramSource): each says so in the owners bucket every
// membership round, so a cluster's first histogram is seen everywhere
// within a third of a lease.
func (n *Node) HasHistograms() bool {
	return n.localHistograms() || n.anyHist.Load()
}

func (n *Node) localHistograms() bool {
	hs, ok := n.local.(query.HistogramSource)
	return ok && hs.HasHistograms()
}

// tierOf returns the local store's tier source and the resolution of
// tier i.
func (n *Node) tierOf(i int) (query.RollupSource, int64, error) {
	rs, ok := n.local.(query.RollupSource)
	if !ok {
		return nil, 0, fmt.Errorf("%w: this node keeps no rollup tiers", series.ErrInvalid)
	}
	ts := rs.Tiers()
	if i < 0 || i >= len(ts) {
		return nil, 0, fmt.Errorf("%w: no rollup tier %d (%d configured)", series.ErrInvalid, i, len(ts))
	}
	return rs, ts[i].Resolution.Milliseconds(), nil
}

// tierByResolution finds the local tier of resolution res (ms).
// StoredRollupSource is a Local that gives a tier's blocks as it keeps
// them (storage.DB.EachStoredRollup), for a copy of a partition: an
// owner that has it sends them without decoding or encoding them.
type StoredRollupSource interface {
	EachStoredRollup(tier int, mint, maxt int64, sketches, toFloor bool, shard, shards int, ms []*series.Matcher, f func(ls series.Labels, floor int64, blocks []rollup.StoredBlock) error) (query.TierRead, error)
	// SeriesRawFloor is the time before which series ls keeps no raw
	// samples here (its own, under a retention rule).
	SeriesRawFloor(ls series.Labels) (int64, error)
	// LatestRawFloor is the latest such floor a series can have now.
	LatestRawFloor() int64
}

func (n *Node) tierByResolution(res int64) (query.RollupSource, int, error) {
	rs, ok := n.local.(query.RollupSource)
	if ok {
		for i, t := range rs.Tiers() {
			if t.Resolution.Milliseconds() == res {
				return rs, i, nil
			}
		}
	}
	return nil, 0, status.Errorf(codes.FailedPrecondition, "node %s keeps no rollup tier of %d ms (every node must configure the same tiers)", n.cfg.Node, res)
}

// EachRollup reads tier's buckets of the selected series from one owner
// of each partition (query.RollupSource). The whole read is shard 0's:
// the other shards return nothing, so that no store decodes a series
// twice; the owners read in parallel, each with all its cores.
func (n *Node) EachRollup(tier int, mint, maxt int64, cols uint, shard, shards int, ms []*series.Matcher, f func(series.Labels, *rollup.Columns) error) (query.TierRead, error) {
	if shard != 0 {
		return query.TierRead{}, nil
	}
	rs, res, err := n.tierOf(tier)
	if err != nil {
		return query.TierRead{}, err
	}
	req := &clusterv1.RollupRequest{PartitionCount: uint32(n.cfg.Partitions), MinTimeMs: mint, MaxTimeMs: maxt,
		Matchers: matchersToProto(ms), ResolutionMs: res, Columns: uint32(cols)}
	var c rollup.Columns
	return n.tierFanOut(req, func(set map[int]bool, mu *sync.Mutex) (int, error) {
		return parallelShards(func(k, shards int) (query.TierRead, error) {
			return rs.EachRollup(tier, mint, maxt, cols, k, shards, ms, func(ls series.Labels, c *rollup.Columns) error {
				if !set[PartitionOf(ls, n.cfg.Partitions)] {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				return f(ls, c)
			})
		})
	}, func(s *clusterv1.RollupSeries) error {
		c.Reset()
		ls := labelsFromProto(s.Labels)
		if err := decodeColumns(&c, s, cols); err != nil {
			return fmt.Errorf("series %s: %w", ls, err)
		}
		return f(ls, &c)
	})
}

// EachHistRollup is EachRollup for the tier's native histogram buckets
// (query.HistRollupSource).
func (n *Node) EachHistRollup(tier int, mint, maxt int64, shard, shards int, ms []*series.Matcher, f func(series.Labels, []rollup.HistBucket) error) (query.TierRead, error) {
	if shard != 0 || !n.HasHistograms() {
		return query.TierRead{}, nil
	}
	rs, res, err := n.tierOf(tier)
	if err != nil {
		return query.TierRead{}, err
	}
	hs, ok := rs.(query.HistRollupSource)
	if !ok {
		return query.TierRead{}, fmt.Errorf("%w: this node's tiers keep no histograms", series.ErrInvalid)
	}
	req := &clusterv1.RollupRequest{PartitionCount: uint32(n.cfg.Partitions), MinTimeMs: mint, MaxTimeMs: maxt,
		Matchers: matchersToProto(ms), ResolutionMs: res, Histograms: true}
	return n.tierFanOut(req, func(set map[int]bool, mu *sync.Mutex) (int, error) {
		return parallelShards(func(k, shards int) (query.TierRead, error) {
			return hs.EachHistRollup(tier, mint, maxt, k, shards, ms, func(ls series.Labels, bs []rollup.HistBucket) error {
				if !set[PartitionOf(ls, n.cfg.Partitions)] {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				return f(ls, bs)
			})
		})
	}, func(s *clusterv1.RollupSeries) error {
		ls := labelsFromProto(s.Labels)
		bs, err := decodeHistBlocks(s)
		if err != nil {
			return fmt.Errorf("series %s: %w", ls, err)
		}
		return f(ls, bs)
	})
}

// tierFanOut reads a tier through the fan-out: local reads this node's
// partitions of set, calling the query's function under mu; the other
// owners' answers are kept whole, then given to deliver one series at a
// time under mu. An error once something was delivered ends the read.
func (n *Node) tierFanOut(req *clusterv1.RollupRequest, local func(set map[int]bool, mu *sync.Mutex) (rawDays int, err error), deliver func(*clusterv1.RollupSeries) error) (query.TierRead, error) {
	var tr query.TierRead
	var mu sync.Mutex
	var err error
	tr.Warnings, err = n.fanOut(allPartitions(n.cfg.Partitions), func(node string, ps []uint32) error {
		if node == n.cfg.Node {
			rd, err := local(partitionSet(ps), &mu)
			mu.Lock()
			tr.RawDays += rd
			mu.Unlock()
			if err != nil {
				return abort{err}
			}
			return nil
		}
		got, rd, err := n.askRollups(node, ps, req)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		tr.RawDays += rd
		for _, s := range got {
			if err := deliver(s); err != nil {
				return abort{err}
			}
		}
		return nil
	})
	return tr, err
}

// parallelShards runs read over shards of a local selection, one per
// core, and sums their raw days.
func parallelShards(read func(k, shards int) (query.TierRead, error)) (int, error) {
	shards := runtime.GOMAXPROCS(0)
	rds := make([]int, shards)
	errs := make([]error, shards)
	var wg sync.WaitGroup
	for k := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, err := read(k, shards)
			rds[k], errs[k] = tr.RawDays, err
		}()
	}
	wg.Wait()
	sum := 0
	for _, rd := range rds {
		sum += rd
	}
	return sum, errors.Join(errs...)
}

// askRollups asks node for the partitions ps of req, and returns its
// series as they came (blocks decode when delivered) and its raw days.
func (n *Node) askRollups(node string, ps []uint32, req *clusterv1.RollupRequest) ([]*clusterv1.RollupSeries, int, error) {
	c, err := n.conn(node)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), selectTimeout)
	defer cancel()
	// The asks share req: each sends its own copy with its partitions.
	stream, err := clusterv1.NewClusterClient(c).SelectRollups(ctx, &clusterv1.RollupRequest{
		Partitions: ps, PartitionCount: req.PartitionCount, MinTimeMs: req.MinTimeMs, MaxTimeMs: req.MaxTimeMs,
		Matchers: req.Matchers, ResolutionMs: req.ResolutionMs, Columns: req.Columns, Histograms: req.Histograms,
	})
	if err != nil {
		return nil, 0, err
	}
	var out []*clusterv1.RollupSeries
	rawDays := 0
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out, rawDays, nil
		}
		if err != nil {
			return nil, 0, err
		}
		rawDays += int(resp.RawDays)
		out = append(out, resp.Series...)
	}
}

// decodeColumns decodes a series' column blocks (and sketch blocks) into
// c, the columns in cols only.
func decodeColumns(c *rollup.Columns, s *clusterv1.RollupSeries, cols uint) error {
	sketches := cols&rollup.ColSketch != 0
	if sketches && len(s.SketchBlocks) != len(s.ColumnBlocks) {
		return fmt.Errorf("%w: %d sketch blocks for %d column blocks", rollup.ErrCorrupt, len(s.SketchBlocks), len(s.ColumnBlocks))
	}
	for i, b := range s.ColumnBlocks {
		if err := rollup.DecodeColumns(c, b, cols); err != nil {
			return err
		}
		if sketches {
			if err := rollup.DecodeSketches(c, s.SketchBlocks[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

func decodeHistBlocks(s *clusterv1.RollupSeries) ([]rollup.HistBucket, error) {
	var bs []rollup.HistBucket
	for _, b := range s.HistogramBlocks {
		var err error
		if bs, err = rollup.DecodeHistBlock(bs, b); err != nil {
			return nil, err
		}
	}
	return bs, nil
}

// encodeColumns encodes the buckets of c (the columns in cols) as column
// blocks, and sketch blocks when cols has the sketches. A column not
// asked for is sent as zeros (a constant: a byte or two), the count as
// ones, since a block holds no empty bucket.
func encodeColumns(s *clusterv1.RollupSeries, c *rollup.Columns, cols uint, bs []rollup.Bucket) ([]rollup.Bucket, error) {
	for lo := 0; lo < c.Len(); lo += rollup.MaxBlockBuckets {
		hi := min(lo+rollup.MaxBlockBuckets, c.Len())
		bs = bs[:0]
		for i := lo; i < hi; i++ {
			b := c.Bucket(i)
			if cols&rollup.ColCount == 0 {
				b.Count = 1
			}
			bs = append(bs, b)
		}
		blk, err := rollup.AppendBlock(nil, bs)
		if err != nil {
			return bs, err
		}
		s.ColumnBlocks = append(s.ColumnBlocks, blk)
		if cols&rollup.ColSketch != 0 {
			s.SketchBlocks = append(s.SketchBlocks, rollup.AppendSketches(nil, bs))
		}
	}
	return bs, nil
}

func encodeHistBlocks(s *clusterv1.RollupSeries, bs []rollup.HistBucket) error {
	for lo := 0; lo < len(bs); lo += rollup.MaxBlockBuckets {
		blk, err := rollup.AppendHistBlock(nil, bs[lo:min(lo+rollup.MaxBlockBuckets, len(bs))])
		if err != nil {
			return err
		}
		s.HistogramBlocks = append(s.HistogramBlocks, blk)
	}
	return nil
}

// SelectRollups answers another node's tier read of the partitions it
// asks for, from this node's store, with all its cores.
func (s selectServer) SelectRollups(req *clusterv1.RollupRequest, stream clusterv1.Cluster_SelectRollupsServer) error {
	n := s.n
	if err := n.checkPartitions(req.PartitionCount, req.Partitions); err != nil {
		return err
	}
	ms, err := matchersFromProto(req.Matchers)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	rs, tier, err := n.tierByResolution(req.ResolutionMs)
	if err != nil {
		return err
	}
	hs, hist := rs.(query.HistRollupSource)
	if req.Histograms && !hist {
		return status.Errorf(codes.FailedPrecondition, "node %s's tiers keep no histograms", n.cfg.Node)
	}
	set := partitionSet(req.Partitions)
	cols := uint(req.Columns)
	var mu sync.Mutex // the stream and resp
	resp := &clusterv1.RollupResponse{}
	var size responseSize
	add := func(rs *clusterv1.RollupSeries) error {
		mu.Lock()
		defer mu.Unlock()
		resp.Series = append(resp.Series, rs)
		if !size.full(rs.ColumnBlocks, rs.SketchBlocks, rs.HistogramBlocks) {
			return nil
		}
		err := stream.Send(resp)
		resp = &clusterv1.RollupResponse{}
		return err
	}
	rawDays, err := parallelShards(func(k, shards int) (query.TierRead, error) {
		if req.Histograms {
			maxt := req.MaxTimeMs
			fl, toFloor := rs.(StoredRollupSource)
			toFloor = toFloor && req.ToRawFloor
			if toFloor {
				maxt = max(maxt, fl.LatestRawFloor()-1)
			}
			return hs.EachHistRollup(tier, req.MinTimeMs, maxt, k, shards, ms, func(ls series.Labels, bs []rollup.HistBucket) error {
				if !set[PartitionOf(ls, n.cfg.Partitions)] || len(bs) == 0 {
					return nil
				}
				out := &clusterv1.RollupSeries{Labels: labelsToProto(ls)}
				if toFloor {
					floor, err := fl.SeriesRawFloor(ls)
					if err != nil {
						return fmt.Errorf("series %s: %w", ls, err)
					}
					out.RawFloorMs = floor
				}
				if err := encodeHistBlocks(out, bs); err != nil {
					return fmt.Errorf("series %s: %w", ls, err)
				}
				return add(out)
			})
		}
		if sr, ok := rs.(StoredRollupSource); ok && req.StoredBlocks {
			return sr.EachStoredRollup(tier, req.MinTimeMs, req.MaxTimeMs, cols&rollup.ColSketch != 0, req.ToRawFloor, k, shards, ms, func(ls series.Labels, floor int64, bs []rollup.StoredBlock) error {
				if !set[PartitionOf(ls, n.cfg.Partitions)] || len(bs) == 0 {
					return nil
				}
				// Copied: the blocks' memory is the store's only during
				// the call, and the response outlives it.
				out := &clusterv1.RollupSeries{Labels: labelsToProto(ls)}
				if req.ToRawFloor {
					out.RawFloorMs = floor
				}
				for _, b := range bs {
					out.BlockStarts = append(out.BlockStarts, b.Start)
					out.ColumnBlocks = append(out.ColumnBlocks, slices.Clone(b.Columns))
					if len(b.Sketches) > 0 {
						out.SketchBlocks = append(out.SketchBlocks, slices.Clone(b.Sketches))
					}
				}
				return add(out)
			})
		}
		var bs []rollup.Bucket
		return rs.EachRollup(tier, req.MinTimeMs, req.MaxTimeMs, cols, k, shards, ms, func(ls series.Labels, c *rollup.Columns) error {
			if !set[PartitionOf(ls, n.cfg.Partitions)] || c.Len() == 0 {
				return nil
			}
			out := &clusterv1.RollupSeries{Labels: labelsToProto(ls)}
			var err error
			if bs, err = encodeColumns(out, c, cols, bs); err != nil {
				return fmt.Errorf("series %s: %w", ls, err)
			}
			return add(out)
		})
	})
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	resp.RawDays = int64(rawDays)
	if len(resp.Series) > 0 || rawDays > 0 {
		return stream.Send(resp)
	}
	return nil
}
