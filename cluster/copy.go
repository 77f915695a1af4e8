package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/headroomdb/headroom/proto/headroom/cluster/v1"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// The copy of a partition between owners. An owner whose next stream
// sequence is older than the stream's first message (a node away longer
// than --cluster-stream-retention, or a node that joins a cluster older
// than it) cannot catch up from the stream. It asks a serving owner for
// the partition instead: that owner reads its mark first, then streams
// every series of the partition with all its raw samples; the new owner
// appends them and, in the last commit, sets its mark to the copied
// mark, then consumes the stream from the next message. Messages the old
// owner applied after reading its mark may be in the copy and are
// applied again from the stream: the same samples, so harmless.

// copyCommitSamples bounds a commit of copied samples.
const copyCommitSamples = 50_000

// copyTimeout bounds one copy: a partition's worth of raw samples.
const copyTimeout = 30 * time.Minute

// CopyPartition streams this node's copy of a partition it serves.
func (s selectServer) CopyPartition(req *clusterv1.CopyRequest, stream clusterv1.Cluster_CopyPartitionServer) error {
	n := s.n
	if req.MarkOnly {
		if int(req.PartitionCount) != n.cfg.Partitions {
			return status.Errorf(codes.FailedPrecondition, "asked with %d partitions, this node has %d", req.PartitionCount, n.cfg.Partitions)
		}
		n.mu.Lock()
		held := n.held[int(req.Partition)] != nil
		n.mu.Unlock()
		if !held {
			return status.Errorf(codes.FailedPrecondition, "node %s does not own partition %d", n.cfg.Node, req.Partition)
		}
		applied, _ := n.local.Mark(markName(int(req.Partition)))
		return stream.Send(&clusterv1.CopyResponse{Applied: applied})
	}
	if err := n.checkPartitions(req.PartitionCount, []uint32{req.Partition}); err != nil {
		return err
	}
	// The mark before the data: the data then holds at least that much.
	applied, _ := n.local.Mark(markName(int(req.Partition)))
	resp := &clusterv1.CopyResponse{Applied: applied, RawOldestMs: n.RawOldest()}
	var size responseSize
	err := n.selectLocal(math.MinInt64, math.MaxInt64, []*series.Matcher{everything}, partitionSet([]uint32{req.Partition}), false, func(s *clusterv1.Series) error {
		resp.Series = append(resp.Series, s)
		if !size.full(s.Chunks, s.HistogramChunks) {
			return nil
		}
		err := stream.Send(resp)
		resp = &clusterv1.CopyResponse{Applied: applied}
		return err
	})
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return stream.Send(resp)
}

// othersMark returns the highest mark of partition p among its other
// owners that answer, caught up or not; ok is false when none does.
func (n *Node) othersMark(ctx context.Context, p int) (mark uint64, ok bool) {
	for _, node := range n.plan()[p] {
		if node == n.cfg.Node {
			continue
		}
		c, err := n.conn(node)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, selectTimeout)
		stream, err := clusterv1.NewClusterClient(c).CopyPartition(ctx, &clusterv1.CopyRequest{Partition: uint32(p), PartitionCount: uint32(n.cfg.Partitions), MarkOnly: true})
		if err == nil {
			var resp *clusterv1.CopyResponse
			if resp, err = stream.Recv(); err == nil {
				mark, ok = max(mark, resp.Applied), true
			}
		}
		cancel()
	}
	return mark, ok
}

// copyPartition fills this node's store with partition p from another
// owner that serves it, and returns the stream sequence the copy holds
// everything up to.
func (n *Node) copyPartition(ctx context.Context, p int) (uint64, error) {
	var errs []error
	for _, node := range n.plan()[p] {
		if node == n.cfg.Node {
			continue
		}
		applied, samples, err := n.copyFrom(ctx, node, p)
		if err == nil {
			n.log.Info("cluster: partition copied from another owner", "partition", p, "from", node, "samples", samples, "applied", applied)
			return applied, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", node, err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return 0, fmt.Errorf("no other owner serves partition %d", p)
	}
	return 0, errors.Join(errs...)
}

func (n *Node) copyFrom(ctx context.Context, node string, p int) (applied uint64, samples int, err error) {
	c, err := n.conn(node)
	if err != nil {
		return 0, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, copyTimeout)
	defer cancel()
	stream, err := clusterv1.NewClusterClient(c).CopyPartition(ctx, &clusterv1.CopyRequest{Partition: uint32(p), PartitionCount: uint32(n.cfg.Partitions)})
	if err != nil {
		return 0, 0, err
	}
	app := n.local.NewAppender(true)
	defer app.Rollback()
	pending, refused := 0, 0
	first := true
	var rawOldest int64
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, 0, err
		}
		if first {
			applied, rawOldest, first = resp.Applied, resp.RawOldestMs, false
		}
		for _, s := range resp.Series {
			r, err := decodeSeries(s)
			if err != nil {
				return 0, 0, fmt.Errorf("series %v: %w", labelsFromProto(s.Labels), err)
			}
			// A sample the store refuses (past its retention at this
			// moment) is left out, as an apply would.
			for _, x := range r.ss {
				if app.Append(r.ls, x.T, x.V) != nil {
					refused++
				}
			}
			for _, x := range r.hists {
				if app.AppendHistogram(r.ls, x.T, x.H) != nil {
					refused++
				}
			}
			pending += len(r.ss) + len(r.hists)
			if pending >= copyCommitSamples {
				if err := app.Commit(); err != nil {
					return 0, 0, err
				}
				samples += pending
				pending = 0
			}
		}
	}
	if first {
		return 0, 0, fmt.Errorf("the copy of partition %d ended before its first message", p)
	}
	// The buckets only the other owner's tiers hold, before the mark:
	// a crash before it copies them again, which changes nothing.
	if err := n.copyTiers(ctx, c, p, rawOldest); err != nil {
		return 0, 0, fmt.Errorf("rollup tiers: %w", err)
	}
	// The mark last, with the last samples: a crash before it copies
	// again.
	if err := app.SetMark(markName(p), applied); err != nil {
		return 0, 0, err
	}
	if err := app.Commit(); err != nil {
		return 0, 0, err
	}
	if refused > 0 {
		n.refused.Add(int64(refused))
		n.log.Warn("cluster: the store refused copied samples", "partition", p, "refused", refused)
	}
	return applied, samples + pending, nil
}

// TierImporter is a Local that takes another store's rollup buckets
// (storage.DB has it): within each block, the buckets before `before`
// are replaced by those given.
type TierImporter interface {
	ImportRollups(tier int, ss []rollup.SeriesBuckets, before int64) error
	ImportHistRollups(tier int, ss []rollup.SeriesHistBuckets, before int64) error
	// ImportStoredRollups takes blocks as the other store keeps them
	// (StoredRollupSource): the whole blocks before `before` as they
	// are, the straddling one spliced.
	ImportStoredRollups(tier int, ss []rollup.StoredSeries, before int64) error
}

// copyTiers imports, tier by tier, the buckets of partition p that
// node's tiers hold before its raw floor `before`, or before a series'
// own raw floor where a retention rule gave it one (the owner says it,
// RollupSeries.raw_floor_ms): the copy's raw samples start there, and
// this store rolls them up itself. Without them a tier read served by
// this node would lack the partition's history older than the raw
// retention (months of it, for a report).
func (n *Node) copyTiers(ctx context.Context, c grpc.ClientConnInterface, p int, before int64) error {
	imp, ok := n.local.(TierImporter)
	if !ok {
		return nil
	}
	for i, t := range n.Tiers() {
		cols := uint(rollup.ColAll)
		if !t.Sketches {
			cols &^= rollup.ColSketch
		}
		for _, hist := range []bool{false, true} {
			stream, err := clusterv1.NewClusterClient(c).SelectRollups(ctx, &clusterv1.RollupRequest{
				Partitions: []uint32{uint32(p)}, PartitionCount: uint32(n.cfg.Partitions), MinTimeMs: 0, MaxTimeMs: before - 1,
				Matchers: matchersToProto([]*series.Matcher{everything}), ResolutionMs: t.Resolution.Milliseconds(), Columns: uint32(cols), Histograms: hist,
				StoredBlocks: !hist, ToRawFloor: true,
			})
			if err != nil {
				return err
			}
			// A response's series in one import: one synced batch, not
			// one a series.
			var col rollup.Columns
			var fs []rollup.SeriesBuckets
			var hs []rollup.SeriesHistBuckets
			var ss []rollup.StoredSeries
			for {
				resp, err := stream.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					return fmt.Errorf("tier %v: %w", t.Resolution, err)
				}
				fs, hs, ss = fs[:0], hs[:0], ss[:0]
				for _, s := range resp.Series {
					ls := labelsFromProto(s.Labels)
					if len(s.BlockStarts) > 0 {
						st, err := storedSeries(ls, s)
						if err != nil {
							return fmt.Errorf("tier %v: series %s: %w", t.Resolution, ls, err)
						}
						ss = append(ss, st)
						continue
					}
					if hist {
						hbs, err := decodeHistBlocks(s)
						if err != nil {
							return fmt.Errorf("tier %v: series %s: %w", t.Resolution, ls, err)
						}
						hs = append(hs, rollup.SeriesHistBuckets{Labels: ls, Buckets: hbs, Before: s.RawFloorMs})
						continue
					}
					col.Reset()
					if err := decodeColumns(&col, s, cols); err != nil {
						return fmt.Errorf("tier %v: series %s: %w", t.Resolution, ls, err)
					}
					bs := make([]rollup.Bucket, len(col.Start))
					for k := range col.Start {
						bs[k] = col.Bucket(k)
					}
					fs = append(fs, rollup.SeriesBuckets{Labels: ls, Buckets: bs, Before: s.RawFloorMs})
				}
				if hist {
					err = imp.ImportHistRollups(i, hs, before)
				} else if err = imp.ImportRollups(i, fs, before); err == nil {
					err = imp.ImportStoredRollups(i, ss, before)
				}
				if err != nil {
					return fmt.Errorf("tier %v: %w", t.Resolution, err)
				}
			}
		}
	}
	return nil
}

// storedSeries reads a series' blocks sent as the owner keeps them.
func storedSeries(ls series.Labels, s *clusterv1.RollupSeries) (rollup.StoredSeries, error) {
	n := len(s.BlockStarts)
	if len(s.ColumnBlocks) != n || (len(s.SketchBlocks) != 0 && len(s.SketchBlocks) != n) {
		return rollup.StoredSeries{}, fmt.Errorf("%d block starts, %d column and %d sketch blocks", n, len(s.ColumnBlocks), len(s.SketchBlocks))
	}
	out := rollup.StoredSeries{Labels: ls, Blocks: make([]rollup.StoredBlock, n), Before: s.RawFloorMs}
	for i, start := range s.BlockStarts {
		out.Blocks[i] = rollup.StoredBlock{Start: start, Columns: s.ColumnBlocks[i]}
		if len(s.SketchBlocks) > 0 {
			out.Blocks[i].Sketches = s.SketchBlocks[i]
		}
	}
	return out, nil
}
