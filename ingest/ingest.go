// Package ingest owns the write front end: it decodes what agents send
// (Headroom's gRPC Ingest API, OTLP metrics, Prometheus remote-write),
// checks it against the limits, maps OTLP to Prometheus series, and hands
// requests to an Appendable. A request is appended whole or not at all:
// any invalid series makes the request fail with an error naming the
// series and the problem, and nothing of it is committed (OTLP, whose
// specification asks for partial success, stores the points it can and
// reports the others). The hot paths decode the wire themselves
// (wire.go, otlp_wire.go) so that a sample costs no allocation.
//
// It must not touch the storage engine: it sees storage only through the
// Appendable interface declared here, over storage/series types.
package ingest

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/headroomdb/headroom/storage/series"
)

// Appender is what ingest needs of the database for one request.
// Append refuses bad input with an error wrapping series.ErrInvalid or
// series.ErrOutOfRetention; Commit returns once the samples are durable.
type Appender interface {
	Append(ls series.Labels, t int64, v float64) error
	Commit() error
	Rollback()
}

// PartialCommitter is an Appender whose Commit may take a request in
// part: a cluster node learns only at the commit, from the owners, which
// new series their limits refuse. OTLP (partial success) commits with it
// and reports the rejected points; other protocols refuse whole, as a
// single node does.
type PartialCommitter interface {
	// CommitPartial commits all but the series refused over a limit:
	// refused holds their label hashes (series.Labels.Hash), for what the
	// request carries beside samples (exemplars); rejected counts their
	// samples; err is their first refusal (series.ErrTooManySeries) or
	// the failure of the whole.
	CommitPartial() (refused map[uint64]bool, rejected int, err error)
}

// Appendable hands out appenders; it is safe for concurrent use.
type Appendable interface {
	Appender() Appender
}

// Limits bound what one request may hold, so that memory is bounded by
// configuration, not by input. Zero means the default.
type Limits struct {
	SeriesPerRequest  int // default 100,000
	SamplesPerRequest int // default 1,000,000
	LabelsPerSeries   int // default 64
	LabelNameLength   int // default 256 bytes
	LabelValueLength  int // default 4,096 bytes
	// LabelBytes bounds a series' labels together, names and values:
	// the other limits alone let one series hold 64 values of 4 KiB.
	LabelBytes int // default 16,384 bytes
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.SeriesPerRequest, 100_000)
	def(&l.SamplesPerRequest, 1_000_000)
	def(&l.LabelsPerSeries, 64)
	def(&l.LabelNameLength, 256)
	def(&l.LabelValueLength, 4096)
	def(&l.LabelBytes, 16384)
	return l
}

// Errors that front ends map to status codes.
var (
	// ErrLimit marks a request over a configured limit of its size (gRPC
	// ResourceExhausted, HTTP 413).
	ErrLimit = errors.New("over limit")
	// ErrSeriesLimit marks a series over a per-series limit (labels, name
	// and value lengths): the request is refused as invalid (gRPC
	// InvalidArgument, HTTP 400), not as over a limit, since sending it
	// again can never pass, and a 429 would make a Prometheus
	// remote-write queue retry it forever.
	ErrSeriesLimit = fmt.Errorf("%w: over a per-series limit", series.ErrInvalid)
)

// checkLabels applies the per-series limits before the label set reaches
// storage (which checks names, UTF-8 and __name__).
func (l Limits) checkLabels(ls series.Labels) error {
	if len(ls) > l.LabelsPerSeries {
		return fmt.Errorf("%w: series %s has %d labels, the limit is %d", ErrSeriesLimit, ls, len(ls), l.LabelsPerSeries)
	}
	total := 0
	for _, lb := range ls {
		total += len(lb.Name) + len(lb.Value)
		if len(lb.Name) > l.LabelNameLength {
			return fmt.Errorf("%w: series %s: label name of %d bytes, the limit is %d", ErrSeriesLimit, ls, len(lb.Name), l.LabelNameLength)
		}
		if len(lb.Value) > l.LabelValueLength {
			return fmt.Errorf("%w: label %q of series %s has a value of %d bytes, the limit is %d", ErrSeriesLimit, lb.Name, truncatedName(ls), len(lb.Value), l.LabelValueLength)
		}
	}
	if total > l.LabelBytes {
		return fmt.Errorf("%w: the labels of series %s take %d bytes (names and values), the limit is %d", ErrSeriesLimit, truncatedName(ls), total, l.LabelBytes)
	}
	return nil
}

// truncatedName names a series by its metric name, for messages about a
// label value too long to print.
func truncatedName(ls series.Labels) string {
	n := ls.Get(series.MetricName)
	if len(n) > 128 {
		n = n[:128]
		for !utf8.ValidString(n) {
			n = n[:len(n)-1]
		}
	}
	return fmt.Sprintf("{__name__=%q, ...}", n)
}
