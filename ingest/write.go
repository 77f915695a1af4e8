package ingest

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/headroomdb/headroom/storage/series"
)

// ErrUnavailable marks a request that was valid but could not be made
// durable (gRPC Unavailable, HTTP 503): the client should retry.
var ErrUnavailable = errors.New("unavailable")

// batch is a decoded request of any protocol, read without copying.
type batch interface {
	Len() int
	// Labels returns series i's labels, unsorted: appended to dst, or the
	// batch's own storage, which the caller may sort in place.
	Labels(i int, dst series.Labels) series.Labels
	NumSamples(i int) int
	Sample(i, j int) (t int64, v float64)
}

// histBatch is a batch whose series may hold native histograms.
type histBatch interface {
	NumHists(i int) int
	Hist(i, j int) (t int64, h *series.Histogram)
}

// HistogramAppender is an Appender that stores native histograms; it
// validates them (series.Histogram.Validate) and copies them.
type HistogramAppender interface {
	AppendHistogram(ls series.Labels, t int64, h *series.Histogram) error
}

// OwnedHistogramAppender is a HistogramAppender that can take a
// histogram without copying it: the front ends decode a new one for each
// sample, and change none after.
type OwnedHistogramAppender interface {
	AppendHistogramOwned(ls series.Labels, t int64, h *series.Histogram) error
}

// appendHistogram takes h through the owned path when there is one.
func appendHistogram(ha HistogramAppender, ls series.Labels, t int64, h *series.Histogram) error {
	if o, ok := ha.(OwnedHistogramAppender); ok {
		return o.AppendHistogramOwned(ls, t, h)
	}
	return ha.AppendHistogram(ls, t, h)
}

// write appends a batch whole and commits it, or refuses it whole, and
// counts the outcome under protocol. It returns the samples in the batch,
// native histograms included.
// Errors wrap ErrLimit, ErrUnavailable, or storage's series.ErrInvalid /
// series.ErrOutOfRetention / series.ErrTooManySeries, and name the series.
func write(db *appenderPool, o *Options, protocol string, b batch) (int, error) {
	start := time.Now()
	total := 0
	hb, _ := b.(histBatch)
	for i := 0; i < b.Len(); i++ {
		total += b.NumSamples(i)
		if hb != nil {
			total += hb.NumHists(i)
		}
	}
	err := writeBatch(db, o.Limits, b, total)
	if err != nil {
		o.Metrics.observe(protocol, start, 0, 0, total, err)
		return 0, err
	}
	o.Metrics.observe(protocol, start, total, b.Len(), 0, nil)
	return total, nil
}

func writeBatch(db *appenderPool, l Limits, b batch, total int) error {
	if b.Len() > l.SeriesPerRequest {
		return fmt.Errorf("%w: request holds %d series, the limit is %d", ErrLimit, b.Len(), l.SeriesPerRequest)
	}
	if total > l.SamplesPerRequest {
		return fmt.Errorf("%w: request holds %d samples, the limit is %d", ErrLimit, total, l.SamplesPerRequest)
	}
	app := db.get()
	defer db.put(app)
	ra, byRef := app.(RefAppender)
	rb, _ := b.(refBatch)
	byRef = byRef && rb != nil && db.cache != nil
	var learned []learnedRef
	var ls series.Labels
	hb, _ := b.(histBatch)
	for i := 0; i < b.Len(); i++ {
		j := 0
		if byRef && (hb == nil || hb.NumHists(i) == 0) {
			// A series the cache knew: by reference, as long as it stays
			// in the head.
			if ref, _, _ := rb.Ref(i); ref != 0 {
				for ; j < b.NumSamples(i); j++ {
					t, v := b.Sample(i, j)
					found, err := ra.AppendRef(ref, t, v)
					if err != nil {
						app.Rollback()
						return &seriesError{i, err}
					}
					if !found {
						break
					}
				}
				if j == b.NumSamples(i) {
					continue
				}
			}
		}
		ls = b.Labels(i, ls[:0])
		ls.Sort()
		if err := l.checkLabels(ls); err != nil {
			app.Rollback()
			return &seriesError{i, err}
		}
		for ; j < b.NumSamples(i); j++ {
			t, v := b.Sample(i, j)
			if !byRef {
				if err := app.Append(ls, t, v); err != nil {
					app.Rollback()
					return &seriesError{i, err}
				}
				continue
			}
			ref, err := ra.AppendLabels(ls, t, v)
			if err != nil {
				app.Rollback()
				return &seriesError{i, err}
			}
			if _, h, raw := rb.Ref(i); raw != nil {
				learned = append(learned, learnedRef{h, raw, ref})
			}
		}
		if hb == nil || hb.NumHists(i) == 0 {
			continue
		}
		ha, ok := app.(HistogramAppender)
		if !ok {
			app.Rollback()
			return &seriesError{i, fmt.Errorf("%w: series %s: this server does not store native histograms", series.ErrInvalid, ls)}
		}
		for j := range hb.NumHists(i) {
			t, h := hb.Hist(i, j)
			if err := appendHistogram(ha, ls, t, h); err != nil {
				app.Rollback()
				return &seriesError{i, err}
			}
		}
	}
	if err := app.Commit(); err != nil {
		return commitError(err)
	}
	// Only a committed series is remembered.
	for _, lr := range learned {
		db.cache.put(lr.hash, lr.raw, lr.ref)
	}
	return nil
}

// commitError is what a failed Commit tells the client: unavailable
// (retry later), except a cluster node's refusal of series past their
// owners' limits, which is the limit's answer, as Append's is on a
// single node.
func commitError(err error) error {
	if errors.Is(err, series.ErrTooManySeries) {
		return err
	}
	return fmt.Errorf("%w: commit: %v", ErrUnavailable, err)
}

// refBatch is a batch whose series carry their label bytes (and, when
// the cache knew them, their references).
type refBatch interface {
	Ref(i int) (ref, hash uint64, raw []byte)
}

type learnedRef struct {
	hash uint64
	raw  []byte
	ref  uint64
}

// appenderPool reuses appenders, which are reusable after Commit or
// Rollback: their buffers, grown to the size of a request, otherwise made
// a fresh appender's growth a visible share of the hot path.
type appenderPool struct {
	db    Appendable
	p     sync.Pool
	cache *refCache // for the front ends that decode label bytes (wire.go)
}

func newAppenderPool(db Appendable) *appenderPool {
	return &appenderPool{db: db, cache: newRefCache()}
}

func (p *appenderPool) get() Appender {
	if a, ok := p.p.Get().(Appender); ok {
		return a
	}
	return p.db.Appender()
}

func (p *appenderPool) put(a Appender) { p.p.Put(a) }
