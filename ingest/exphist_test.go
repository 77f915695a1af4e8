package ingest

import (
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/headroomdb/headroom/storage/series"
)

// TestExpHistogram: OTLP exponential buckets map to native ones as the
// OpenTelemetry-to-Prometheus mapping says, checked against bounds worked
// out by hand.
func TestExpHistogram(t *testing.T) {
	for _, c := range []struct {
		name       string
		scale      int32
		pos, neg   expBuckets
		schema     int32
		posSpans   []series.Span
		posBuckets []float64
		negSpans   []series.Span
		negBuckets []float64
	}{
		// Scale 0: OTLP bucket 0 is (1, 2], Prometheus's bucket 1.
		{"shift by one", 0, expBuckets{0, []uint64{1, 2}}, expBuckets{}, 0, []series.Span{{Offset: 1, Length: 2}}, []float64{1, 2}, nil, nil},
		{"negative offset", 2, expBuckets{-3, []uint64{4}}, expBuckets{-1, []uint64{7}}, 2,
			[]series.Span{{Offset: -2, Length: 1}}, []float64{4}, []series.Span{{Offset: 0, Length: 1}}, []float64{7}},
		// Empty ends dropped; two empty buckets inside kept, three split.
		{"gaps", 1, expBuckets{0, []uint64{0, 1, 0, 0, 2, 0, 0, 0, 3, 0}}, expBuckets{}, 1,
			[]series.Span{{Offset: 2, Length: 4}, {Offset: 3, Length: 1}}, []float64{1, 0, 0, 2, 3}, nil, nil},
		// Scale 10 is brought down to 8: four buckets a bucket. OTLP
		// indices 4..11 at scale 10 are 1..2 at scale 8, then +1.
		{"downscale", 10, expBuckets{4, []uint64{1, 1, 1, 1, 2, 2, 2, 2}}, expBuckets{}, 8,
			[]series.Span{{Offset: 2, Length: 2}}, []float64{4, 8}, nil, nil},
		// Negative indices round down when merged: -1 at scale 9 is in
		// (base8^-1, base8^0], bucket -1 >> 1 = -1, Prometheus's 0.
		{"downscale below one", 9, expBuckets{-2, []uint64{5, 6, 7}}, expBuckets{}, 8,
			[]series.Span{{Offset: 0, Length: 2}}, []float64{11, 7}, nil, nil},
	} {
		h, err := expHistogram(c.scale, 1e-9, 3, 99, 12.5, true, c.pos, c.neg)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if h.Schema != c.schema || !reflect.DeepEqual(h.PositiveSpans, c.posSpans) || !reflect.DeepEqual(h.PositiveBuckets, c.posBuckets) ||
			!reflect.DeepEqual(h.NegativeSpans, c.negSpans) || !reflect.DeepEqual(h.NegativeBuckets, c.negBuckets) {
			t.Errorf("%s: schema %d, +%v %v, -%v %v", c.name, h.Schema, h.PositiveSpans, h.PositiveBuckets, h.NegativeSpans, h.NegativeBuckets)
		}
		if h.ZeroCount != 3 || h.Count != 99 || h.Sum != 12.5 || h.ZeroThreshold != 1e-9 {
			t.Errorf("%s: %+v", c.name, h)
		}
	}
	if _, err := expHistogram(-5, 0, 0, 0, 0, false, expBuckets{}, expBuckets{}); !errors.Is(err, series.ErrInvalid) {
		t.Errorf("scale -5: %v", err)
	}
	if h, _ := expHistogram(0, 0, 0, 0, 0, false, expBuckets{}, expBuckets{}); !math.IsNaN(h.Sum) {
		t.Errorf("no sum: %v", h.Sum)
	}
}
