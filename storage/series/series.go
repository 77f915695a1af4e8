// Package series is the vocabulary shared by the storage engine and its
// clients (ingest, query): labels, matchers, samples, the sample iterator
// contract and the errors that cross package boundaries.
//
// It must stay a leaf: standard library only, no I/O, no knowledge of how
// or where samples are stored.
package series

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strings"
	"unicode/utf8"
)

// MetricName is the label that holds a series' metric name.
const MetricName = "__name__"

// Errors that callers branch on. Validation errors wrap ErrInvalid so that
// front ends can map them to InvalidArgument / HTTP 400 with one check.
var (
	// ErrInvalid marks input that can never be stored as given.
	ErrInvalid = errors.New("invalid input")
	// ErrOutOfRetention marks a sample older than anything the database keeps.
	ErrOutOfRetention = errors.New("sample is older than the retention")
	// ErrClosed is returned by operations on a closed database.
	ErrClosed = errors.New("database is closed")
	// ErrTooManySeries marks a sample that would create an active series
	// beyond a configured limit (in total or for one metric name).
	ErrTooManySeries = errors.New("too many active series")
	// ErrUnavailable marks a write refused for a while by the state of the
	// storage (its disk nearly full, or failed): the client should retry
	// later, and reads go on.
	ErrUnavailable = errors.New("storage unavailable for writes")
)

// Label is one name/value pair of a series.
type Label struct {
	Name, Value string
}

// Labels is a label set sorted by name with unique names. Constructors in
// this package keep it sorted; code that builds one by hand must call Sort.
type Labels []Label

// FromStrings builds Labels from name, value pairs and sorts them.
// It panics on an odd number of arguments: that is a programming error.
func FromStrings(nv ...string) Labels {
	if len(nv)%2 != 0 {
		panic("series.FromStrings: odd number of arguments")
	}
	ls := make(Labels, 0, len(nv)/2)
	for i := 0; i < len(nv); i += 2 {
		ls = append(ls, Label{nv[i], nv[i+1]})
	}
	ls.Sort()
	return ls
}

// Sort sorts the set by name (insertion sort: label sets are small and
// usually already sorted, where this is a single pass).
func (ls Labels) Sort() {
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j].Name < ls[j-1].Name; j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}

// Compare orders label sets as Prometheus does: label by label, by name
// then value; a prefix sorts first.
func Compare(a, b Labels) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := strings.Compare(a[i].Name, b[i].Name); c != 0 {
			return c
		}
		if c := strings.Compare(a[i].Value, b[i].Value); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}

// Get returns the value of name, or "" when the set has no such label.
func (ls Labels) Get(name string) string {
	for _, l := range ls {
		if l.Name == name {
			return l.Value
		}
	}
	return ""
}

// Equal reports whether two sets hold the same pairs.
func (ls Labels) Equal(o Labels) bool {
	if len(ls) != len(o) {
		return false
	}
	for i := range ls {
		if ls[i] != o[i] {
			return false
		}
	}
	return true
}

// Copy returns a deep copy whose strings do not alias caller buffers.
func (ls Labels) Copy() Labels {
	// One string holds every name and value, the labels its substrings:
	// two allocations a set, not two a label (a head of 100,000 series
	// keeps its copies, each allocation costing a header and rounding; a
	// cluster node copies each series of a request).
	n := 0
	for _, l := range ls {
		n += len(l.Name) + len(l.Value)
	}
	var b strings.Builder
	b.Grow(n)
	for _, l := range ls {
		b.WriteString(l.Name)
		b.WriteString(l.Value)
	}
	all := b.String()
	out := make(Labels, len(ls))
	off := 0
	for i, l := range ls {
		out[i].Name = all[off : off+len(l.Name)]
		off += len(l.Name)
		out[i].Value = all[off : off+len(l.Value)]
		off += len(l.Value)
	}
	return out
}

// String renders the set as {a="1", b="2"}, the way Prometheus prints it.
func (ls Labels) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(l.Name)
		b.WriteString("=")
		fmt.Fprintf(&b, "%q", l.Value)
	}
	b.WriteByte('}')
	return b.String()
}

// Hash returns a 64-bit FNV-1a hash of the set. It is part of the on-disk
// format (the series lookup key): never change it.
func (ls Labels) Hash() uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for _, l := range ls {
		for i := 0; i < len(l.Name); i++ {
			h = (h ^ uint64(l.Name[i])) * prime
		}
		h = (h ^ 0xff) * prime
		for i := 0; i < len(l.Value); i++ {
			h = (h ^ uint64(l.Value[i])) * prime
		}
		h = (h ^ 0xfe) * prime
	}
	return h
}

var memSeed = maphash.MakeSeed()

// MemHash hashes the set for maps that live in memory only (the head's
// series map, a request's duplicate check), probed once per sample. It is
// not Hash (FNV-1a, part of the on-disk format, byte at a time): maphash
// is several times faster, and its per-process seed is fine because the
// value is never stored. 0xff and 0xfe never occur in UTF-8, so the
// separators make the encoding unambiguous.
func (ls Labels) MemHash() uint64 {
	var h maphash.Hash
	h.SetSeed(memSeed)
	for _, l := range ls {
		h.WriteString(l.Name)
		h.WriteByte(0xff)
		h.WriteString(l.Value)
		h.WriteByte(0xfe)
	}
	return h.Sum64()
}

// Validate checks the rules of the data model and names the first broken
// one. The returned error wraps ErrInvalid.
func (ls Labels) Validate() error {
	if len(ls) == 0 {
		return fmt.Errorf("%w: empty label set", ErrInvalid)
	}
	hasName := false
	for i, l := range ls {
		if !ValidLabelName(l.Name) {
			return fmt.Errorf("%w: series %s: invalid label name %q", ErrInvalid, ls, l.Name)
		}
		if i > 0 {
			if l.Name == ls[i-1].Name {
				return fmt.Errorf("%w: series %s: duplicate label name %q", ErrInvalid, ls, l.Name)
			}
			if l.Name < ls[i-1].Name {
				return fmt.Errorf("%w: series %s: labels not sorted by name", ErrInvalid, ls)
			}
		}
		if strings.IndexByte(l.Value, 0) >= 0 {
			// The index separates values with 0x00; refusing it keeps every
			// lookup exact.
			return fmt.Errorf("%w: series %s: label %q has a value with a NUL byte", ErrInvalid, ls, l.Name)
		}
		if !utf8.ValidString(l.Value) {
			return fmt.Errorf("%w: series %s: label %q has a value that is not valid UTF-8", ErrInvalid, ls, l.Name)
		}
		if l.Name == MetricName {
			if l.Value == "" {
				return fmt.Errorf("%w: series %s: empty metric name (__name__)", ErrInvalid, ls)
			}
			hasName = true
		}
	}
	if !hasName {
		return fmt.Errorf("%w: series %s: missing metric name (__name__)", ErrInvalid, ls)
	}
	return nil
}

// ValidLabelName reports whether s can name a label: any non-empty UTF-8
// without control characters, as Prometheus 3 accepts names since it
// took UTF-8 names (service.name, http.route, le-quoted ones) from
// OpenTelemetry. Control characters (NUL, newlines, escapes) stay out:
// the index separates names with NUL, and no sender means the others.
func ValidLabelName(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return false
		}
	}
	return true
}

// LegacyLabelName reports whether s matches [a-zA-Z_][a-zA-Z0-9_]*: the
// names PromQL writes unquoted.
func LegacyLabelName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

// Sample is one point of a series.
// Set iterates selected series: what a reader (the query engine) sees of
// a selection.
type Set interface {
	Next() bool
	At() (Labels, Iterator)
	Err() error
}

// ChunkSource is an Iterator that can hand over the encoded chunks
// (storage/chunk) it reads, when they are all it reads: a cluster owner
// then sends a series' chunks as they are instead of decoding and
// encoding them again. The chunks may hold samples outside the
// iterator's range, which the receiver clips; ok is false when the
// iterator merges several sources (late samples, overlapping chunks) or
// has started: read it instead. The chunks are valid until the querier
// moves to another series.
type ChunkSource interface {
	Chunks() (chunks [][]byte, ok bool)
}

// SampleAppender is an Iterator that can hand over all its remaining
// samples in one call: a scan then pays a call per chunk instead of a
// chain of interface calls per sample.
type SampleAppender interface {
	// AppendSamples appends the remaining samples to dst and exhausts
	// the iterator; Err reports a failure.
	AppendSamples(dst []Sample) []Sample
}

type Sample struct {
	T int64 // milliseconds since the Unix epoch
	V float64
}

// StaleNaN is Prometheus's stale marker: a NaN with a specific payload that
// marks the end of a series. It must be stored and returned bit for bit.
var StaleNaN = math.Float64frombits(0x7ff0000000000002)

// IsStaleNaN reports whether v is the stale marker (by bits: any NaN
// compares unequal to itself).
func IsStaleNaN(v float64) bool { return math.Float64bits(v) == 0x7ff0000000000002 }

// Iterator walks the samples of one series in increasing time order.
//
// Contract: Next and Seek return false at the end or on an error, after
// which Err tells which. At is valid only after Next or Seek returned true,
// and until the next call to Next or Seek. Seek(t) moves to the first sample
// at or after t; it never moves backwards, so a Seek to a time before the
// current sample returns true and stays put. An Iterator is not safe for
// concurrent use.
type Iterator interface {
	Next() bool
	Seek(t int64) bool
	At() (t int64, v float64)
	Err() error
}

// Metadata is what an agent says of a metric beside its samples:
// Prometheus's type (counter, gauge, histogram, gaugehistogram, summary,
// info, stateset, unknown), its unit and its help text.
type Metadata struct {
	Type, Unit, Help string
}

// Histogram is one native histogram sample, as Prometheus defines it:
// exponential buckets of a schema (or, at schema -53, custom bounds), a
// zero bucket, and the counts of the buckets the spans say exist,
// absolute. Integer histograms (Float false) have whole-number counts.
type Histogram struct {
	// CounterReset is the sender's hint: 0 unknown, 1 a reset happened
	// before this sample, 2 none did, 3 a gauge histogram.
	CounterReset  uint8
	Float         bool
	Schema        int32
	ZeroThreshold float64
	ZeroCount     float64
	Count         float64
	Sum           float64
	// Spans say which buckets the counts are of: Offset is the gap to the
	// previous span (for the first, the index of its first bucket).
	PositiveSpans, NegativeSpans     []Span
	PositiveBuckets, NegativeBuckets []float64
	// CustomValues are the upper bounds of schema -53's buckets.
	CustomValues []float64
}

// Span is a run of consecutive buckets of a histogram.
type Span struct {
	Offset int32
	Length uint32
}

// Exemplar is a sample's example event, as agents attach them: the
// event's labels (a trace ID, a span ID), its value and time (ms).
type Exemplar struct {
	Labels Labels
	Value  float64
	T      int64
}

// SeriesExemplars are one series' exemplars, oldest first.
type SeriesExemplars struct {
	Labels    Labels
	Exemplars []Exemplar
}

// SliceIterator walks samples sorted by time, in memory.
func SliceIterator(s []Sample) Iterator { return &sliceIter{s: s, i: -1} }

type sliceIter struct {
	s []Sample
	i int
}

func (it *sliceIter) Next() bool { it.i++; return it.i < len(it.s) }
func (it *sliceIter) Seek(t int64) bool {
	if it.i < 0 {
		it.i = 0
	}
	for it.i < len(it.s) && it.s[it.i].T < t {
		it.i++
	}
	return it.i < len(it.s)
}
func (it *sliceIter) At() (int64, float64) { return it.s[it.i].T, it.s[it.i].V }
func (it *sliceIter) Err() error           { return nil }
