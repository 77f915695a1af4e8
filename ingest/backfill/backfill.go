// Package backfill reads samples from the files operators backfill
// history from: CSV with a header row naming the columns, and the
// Prometheus text exposition format. Readers stream: memory does not grow
// with the file. Every error names the line.
//
// It must not send anything anywhere or touch storage: it turns bytes
// into series.Labels, timestamps and values, and the caller batches them.
package backfill

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/headroomdb/headroom/storage/series"
)

// Sample is one parsed sample and the line it came from. Labels are
// sorted; the reader reuses nothing the caller holds.
type Sample struct {
	Labels series.Labels
	T      int64 // milliseconds since the Unix epoch
	V      float64
	Line   int
}

// Reader yields samples in file order.
type Reader interface {
	// Next advances to the next sample; false at the end or on an error.
	Next() bool
	At() Sample
	// Err returns the error that stopped Next, naming the line.
	Err() error
	// Skipped counts rows without a value (gaps in the source).
	Skipped() int
}

// LineError is a problem with one line of the input.
type LineError struct {
	Line int
	Msg  string
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

func lineErr(line int, format string, args ...any) error {
	return &LineError{Line: line, Msg: fmt.Sprintf(format, args...)}
}

// TimeOptions say how to read timestamps.
type TimeOptions struct {
	// Location is the zone of timestamps written without one. Default UTC.
	// In a zone with daylight saving, the repeated hour's times are
	// ambiguous: both occurrences read as the same instant, so the
	// repeated hour's samples collide and the later line wins (the
	// database overwrites).
	Location *time.Location
	// Unit forces the unit of numeric timestamps ("s", "ms", "us", "ns");
	// empty guesses from the magnitude (seconds up to 1e11, milliseconds
	// up to 1e14, then microseconds, then nanoseconds).
	Unit string
	// IndexStep, if set, reads the time column as a sample index: the
	// time is IndexStart + index * IndexStep (datasets that number their
	// rows instead of dating them).
	IndexStart time.Time
	IndexStep  time.Duration
}

var layouts = []string{
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04",
	"2006-01-02T15:04",
	"2006/01/02 15:04:05",
	"01/02/2006 15:04:05",
	"2006-01-02",
}

// ParseTime reads a timestamp in any of the spellings operators' files
// use: RFC 3339, "2006-01-02 15:04:05" (and a few relatives) in
// o.Location, or a Unix time in seconds, milliseconds, microseconds or
// nanoseconds.
func (o TimeOptions) ParseTime(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty timestamp")
	}
	if o.IndexStep > 0 {
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil || i < 0 {
			return 0, fmt.Errorf("index %q is not a non-negative integer", s)
		}
		return o.IndexStart.Add(time.Duration(i) * o.IndexStep).UnixMilli(), nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return 0, fmt.Errorf("timestamp %q is not a time", s)
		}
		unit := o.Unit
		if unit == "" {
			switch {
			case f < 1e11:
				unit = "s"
			case f < 1e14:
				unit = "ms"
			case f < 1e17:
				unit = "us"
			default:
				unit = "ns"
			}
		}
		switch unit {
		case "s":
			return int64(math.Round(f * 1e3)), nil
		case "ms":
			return int64(math.Round(f)), nil
		case "us":
			return int64(math.Round(f / 1e3)), nil
		case "ns":
			return int64(math.Round(f / 1e6)), nil
		}
		return 0, fmt.Errorf("unknown time unit %q (want s, ms, us or ns)", unit)
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UnixMilli(), nil
	}
	loc := o.Location
	if loc == nil {
		loc = time.UTC
	}
	for _, l := range layouts {
		if t, err := time.ParseInLocation(l, s, loc); err == nil {
			return t.UnixMilli(), nil
		}
	}
	return 0, fmt.Errorf("unrecognised timestamp %q (want RFC 3339, \"2006-01-02 15:04:05\" or Unix time)", s)
}

// parseValue reads a sample value; NaN and ±Inf are values.
func parseValue(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, fmt.Errorf("value %q is not a number", s)
	}
	return v, nil
}
