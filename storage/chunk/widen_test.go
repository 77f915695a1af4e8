package chunk

import (
	"fmt"
	"testing"

	"github.com/headroomdb/headroom/storage/series"
)

// WidenLayouts keeps every sample's counts (by bucket index), gives a run
// one layout so that it encodes into one chunk, and never joins a counter
// reset or a change of schema into a run.
func TestWidenLayouts(t *testing.T) {
	mk := func(t int64, schema int32, spans []series.Span, b ...float64) series.HistSample {
		n := 0.0
		for _, x := range b {
			n += x
		}
		return series.HistSample{T: t, H: &series.Histogram{Schema: schema, Count: n, PositiveSpans: spans, PositiveBuckets: b}}
	}
	in := []series.HistSample{
		mk(1, 0, []series.Span{{Offset: 0, Length: 2}}, 1, 2),
		mk(2, 0, []series.Span{{Offset: 0, Length: 2}, {Offset: 3, Length: 1}}, 2, 2, 1), // a tail bucket opens
		mk(3, 0, []series.Span{{Offset: -1, Length: 3}, {Offset: 3, Length: 1}}, 1, 3, 3, 1),
		mk(4, 0, []series.Span{{Offset: 0, Length: 1}}, 1), // a reset: a new run
		mk(5, 1, []series.Span{{Offset: 0, Length: 1}}, 2), // another schema: a new run
	}
	out := WidenLayouts(in, 100, 1000)
	key := func(h *series.Histogram) string {
		s := ""
		EachBucket(h.PositiveSpans, h.PositiveBuckets, func(i int32, c float64) {
			if c != 0 {
				s += fmt.Sprintf("%d:%v ", i, c)
			}
		})
		return s
	}
	for k := range in {
		if key(in[k].H) != key(out[k].H) || in[k].T != out[k].T {
			t.Errorf("sample %d: %s became %s", k, key(in[k].H), key(out[k].H))
		}
	}
	a := NewHistogramAppender()
	for k, x := range out[:3] {
		if err := a.Append(x.T, x.H); err != nil {
			t.Fatalf("sample %d of the widened run does not join its chunk: %v", k, err)
		}
	}
	if err := a.Append(out[3].T, out[3].H); err != ErrLayout {
		t.Errorf("the reset joined the chunk: %v", err)
	}
	if got := fmt.Sprint(out[3].H.PositiveSpans, out[4].H.PositiveSpans); got != "[{0 1}] [{0 1}]" {
		t.Errorf("runs of one sample changed layout: %s", got)
	}
}
