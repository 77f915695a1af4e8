package ingest

import (
	"errors"
	"fmt"

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

// write appends a batch whole and commits it, or refuses it whole. Errors
// wrap ErrLimit, ErrUnavailable, or storage's series.ErrInvalid /
// series.ErrOutOfRetention, and name the series.
func write(db Appendable, l Limits, b batch) (int, error) {
	if b.Len() > l.SeriesPerRequest {
		return 0, fmt.Errorf("%w: request holds %d series, the limit is %d", ErrLimit, b.Len(), l.SeriesPerRequest)
	}
	total := 0
	for i := 0; i < b.Len(); i++ {
		total += b.NumSamples(i)
	}
	if total > l.SamplesPerRequest {
		return 0, fmt.Errorf("%w: request holds %d samples, the limit is %d", ErrLimit, total, l.SamplesPerRequest)
	}
	app := db.Appender()
	var ls series.Labels
	for i := 0; i < b.Len(); i++ {
		ls = b.Labels(i, ls[:0])
		ls.Sort()
		if err := l.checkLabels(ls); err != nil {
			app.Rollback()
			return 0, fmt.Errorf("series %d: %w", i, err)
		}
		for j := 0; j < b.NumSamples(i); j++ {
			t, v := b.Sample(i, j)
			if err := app.Append(ls, t, v); err != nil {
				app.Rollback()
				return 0, fmt.Errorf("series %d: %w", i, err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		return 0, fmt.Errorf("%w: commit: %v", ErrUnavailable, err)
	}
	return total, nil
}
