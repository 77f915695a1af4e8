package ingest

import (
	"errors"
	"fmt"
	"time"

	"github.com/headroomdb/headroom/storage/series"
)

// ErrUnavailable marks a request that was valid but could not be made
// durable (gRPC Unavailable, HTTP 503): the client should retry.
var ErrUnavailable = errors.New("unavailable")

// batch is a decoded request of any protocol, read without copying.
type batch interface {
	Len() int
	// Labels appends series i's labels to dst, unsorted.
	Labels(i int, dst series.Labels) series.Labels
	NumSamples(i int) int
	Sample(i, j int) (t int64, v float64)
}

// write appends a batch whole and commits it, or refuses it whole, and
// counts the outcome under protocol. It returns the samples in the batch.
// Errors wrap ErrLimit, ErrUnavailable, or storage's series.ErrInvalid /
// series.ErrOutOfRetention / series.ErrTooManySeries, and name the series.
func write(db Appendable, o *Options, protocol string, b batch) (int, error) {
	start := time.Now()
	total := 0
	for i := 0; i < b.Len(); i++ {
		total += b.NumSamples(i)
	}
	err := writeBatch(db, o.Limits, b, total)
	if err != nil {
		o.Metrics.observe(protocol, start, 0, 0, total, err)
		return 0, err
	}
	o.Metrics.observe(protocol, start, total, b.Len(), 0, nil)
	return total, nil
}

func writeBatch(db Appendable, l Limits, b batch, total int) error {
	if b.Len() > l.SeriesPerRequest {
		return fmt.Errorf("%w: request holds %d series, the limit is %d", ErrLimit, b.Len(), l.SeriesPerRequest)
	}
	if total > l.SamplesPerRequest {
		return fmt.Errorf("%w: request holds %d samples, the limit is %d", ErrLimit, total, l.SamplesPerRequest)
	}
	app := db.Appender()
	var ls series.Labels
	for i := 0; i < b.Len(); i++ {
		ls = b.Labels(i, ls[:0])
		ls.Sort()
		if err := l.checkLabels(ls); err != nil {
			app.Rollback()
			return &seriesError{i, err}
		}
		for j := 0; j < b.NumSamples(i); j++ {
			t, v := b.Sample(i, j)
			if err := app.Append(ls, t, v); err != nil {
				app.Rollback()
				return &seriesError{i, err}
			}
		}
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("%w: commit: %v", ErrUnavailable, err)
	}
	return nil
}
