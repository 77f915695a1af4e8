package cluster

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/headroomdb/headroom/storage/series"
)

// publishTimeout bounds the wait for JetStream's acknowledgement of a
// request's parts: past it the request is refused as unavailable, and
// the client's retry is harmless (message IDs, last write wins).
const publishTimeout = 10 * time.Second

// publishRetryWait is the pause between a publish's tries while the
// stream has no responders.
const publishRetryWait = 250 * time.Millisecond

// Appender is the write path of a cluster node: it checks each sample as
// the local store would (labels once a series, time, retention), gathers
// the request, and on Commit publishes one message per partition,
// returning only when JetStream has acknowledged every one (stored on a
// quorum of servers).
// It satisfies ingest.Appender and ingest.HistogramAppender.
type Appender struct {
	n     *Node
	check LocalAppender
	b     Batch
	last  series.Labels // the series of b's last entry
	// samples holds the request's float samples, series by series, in
	// one slab instead of a slice a series: the last entry's are
	// samples[from:] until the next series (or the commit) closes them.
	samples []series.Sample
	from    int
}

// closeLast gives the last entry its samples.
func (a *Appender) closeLast() {
	if k := len(a.b.Series); k > 0 && len(a.samples) > a.from {
		a.b.Series[k-1].Samples = a.samples[a.from:len(a.samples):len(a.samples)]
	}
	a.from = len(a.samples)
}

// Appender returns an appender for one request.
func (n *Node) Appender() *Appender { return &Appender{n: n, check: n.local.NewAppender(false)} }

// series returns the batch's entry of ls: the last one when ls is its
// series (a request's samples come series by series), else a new one,
// its labels validated (once a series, as the store does) and copied.
func (a *Appender) series(ls series.Labels) (*BatchSeries, error) {
	if k := len(a.b.Series); k > 0 && a.last.Equal(ls) {
		return &a.b.Series[k-1], nil
	}
	if err := ls.Validate(); err != nil {
		return nil, err
	}
	a.closeLast()
	// The front ends reuse their label buffers from series to series.
	ls = ls.Copy()
	a.b.Series = append(a.b.Series, BatchSeries{Labels: ls})
	a.last = ls
	return &a.b.Series[len(a.b.Series)-1], nil
}

// Append adds a float sample; a bad one is refused as the store would.
func (a *Appender) Append(ls series.Labels, t int64, v float64) error {
	if err := a.check.CheckTime(ls, t); err != nil {
		return err
	}
	if _, err := a.series(ls); err != nil {
		return err
	}
	a.samples = append(a.samples, series.Sample{T: t, V: v})
	return nil
}

// AppendHistogram adds a native histogram sample (copied).
func (a *Appender) AppendHistogram(ls series.Labels, t int64, h *series.Histogram) error {
	if err := a.check.CheckTime(ls, t); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return fmt.Errorf("%w: series %s at %d: %v", series.ErrInvalid, ls, t, err)
	}
	s, err := a.series(ls)
	if err != nil {
		return err
	}
	s.Hists = append(s.Hists, series.HistSample{T: t, H: h.Clone()})
	return nil
}

// Rollback drops what was appended.
func (a *Appender) Rollback() {
	a.b.Series = a.b.Series[:0]
	a.last = nil
	a.samples, a.from = a.samples[:0], 0
}

// Commit checks the request's new series against the owners' limits
// (limits.go), publishes the request's parts, each to its partition's
// subject with a message ID, and waits for every acknowledgement. A
// series over a limit refuses the request whole (series.ErrTooManySeries,
// naming it) before anything is published. A part refused
// or not acknowledged in time refuses the request (series.ErrUnavailable):
// the parts acknowledged stay, and the client's retry of the same
// samples changes nothing.
func (a *Appender) Commit() error {
	_, _, err := a.commit(false)
	return err
}

// CommitPartial is Commit for a protocol that takes a request in part
// (OTLP's partial success, as a single node rejects only the points of
// series past a limit): the series some owner's limits refuse are left
// out, and the rest published. refused holds their label hashes,
// rejected counts their samples; err is the first refusal when there
// were some (series.ErrTooManySeries), or the failure of the whole.
func (a *Appender) CommitPartial() (refused map[uint64]bool, rejected int, err error) {
	return a.commit(true)
}

func (a *Appender) commit(partial bool) (refused map[uint64]bool, rejected int, err error) {
	defer a.Rollback()
	if len(a.b.Series) == 0 {
		return nil, 0, nil
	}
	a.closeLast()
	var fresh newSeries
	parts := split(&a.b, a.n.cfg.Partitions, func(p int, h uint64, ls series.Labels) {
		if !a.n.seen.has(h) {
			fresh.add(p, h, ls)
		}
	})
	// Before anything is published: a refused write leaves nothing.
	var refusal error
	if fresh.byPart != nil {
		if refused, refusal = a.n.checkSeries(&fresh); refusal != nil {
			if !partial {
				return nil, 0, refusal
			}
			for p, part := range parts {
				kept := part.Series[:0]
				for _, s := range part.Series {
					if refused[s.Labels.Hash()] {
						rejected += len(s.Samples) + len(s.Hists)
						continue
					}
					kept = append(kept, s)
				}
				if part.Series = kept; len(kept) == 0 {
					delete(parts, p)
				}
			}
		}
	}
	if err := a.publish(parts); err != nil {
		return nil, 0, err
	}
	if refusal == nil {
		refused = nil // the owners' answer, with nothing refused
	}
	return refused, rejected, refusal
}

// publish sends each part to its partition's subject and waits for
// every acknowledgement.
func (a *Appender) publish(parts map[int]*Batch) error {
	id := a.n.prefix + strconv.FormatUint(a.n.reqSeq.Add(1), 36) + "-"
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	futures := make(map[int]jetstream.PubAckFuture, len(parts))
	for p, part := range parts {
		// A stream electing a leader (a NATS server gone) has no
		// responders for a few seconds: the publish tries again until
		// the timeout, its message ID keeping a retry from storing twice.
		f, err := a.n.js.PublishAsync(subject(p), AppendBatch(nil, part), jetstream.WithMsgID(id+strconv.Itoa(p)),
			jetstream.WithRetryWait(publishRetryWait), jetstream.WithRetryAttempts(int(publishTimeout/publishRetryWait)))
		if err != nil {
			return fmt.Errorf("%w: cluster: publish partition %d: %v", series.ErrUnavailable, p, err)
		}
		futures[p] = f
	}
	for p, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("%w: cluster: partition %d not stored: %v", series.ErrUnavailable, p, err)
		case <-ctx.Done():
			return fmt.Errorf("%w: cluster: partition %d not acknowledged within %v (NATS quorum lost?)", series.ErrUnavailable, p, publishTimeout)
		}
	}
	return nil
}
