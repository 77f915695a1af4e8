package ingest

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/headroomdb/headroom/proto/prometheus/writev2"
	"github.com/headroomdb/headroom/storage/series"
)

// v2Flatten renders what the generated decoder makes of a 2.0 request as
// the hand decoder's batch would: float series only, with their labels.
func v2Flatten(req *writev2.Request) (string, error) {
	sym := req.GetSymbols()
	var b strings.Builder
	for i, ts := range req.GetTimeseries() {
		refs := ts.GetLabelsRefs()
		if len(refs)%2 != 0 {
			return "", fmt.Errorf("series %d: odd references", i)
		}
		var ls series.Labels
		for j := 0; j < len(refs); j += 2 {
			if int(refs[j]) >= len(sym) || int(refs[j+1]) >= len(sym) {
				return "", fmt.Errorf("series %d: reference out of range", i)
			}
			ls = append(ls, series.Label{Name: sym[refs[j]], Value: sym[refs[j+1]]})
		}
		fmt.Fprint(&b, ls, ":")
		for _, s := range ts.GetSamples() {
			fmt.Fprintf(&b, " %d=%x", s.GetTimestamp(), s.GetValue())
		}
		for _, h := range ts.GetHistograms() {
			rh, err := refHistogram(h)
			if err != nil {
				return "", fmt.Errorf("series %d: histogram: %v", i, err)
			}
			fmt.Fprintf(&b, " h%d=%x", h.GetTimestamp(), series.AppendHistogramBinary(nil, rh))
		}
		b.WriteString("\n")
	}
	return b.String(), nil
}

// refHistogram converts a Histogram the generated decoder read, by the
// specification's rules, to check the hand decoder against.
func refHistogram(m *writev2.Histogram) (*series.Histogram, error) {
	h := &series.Histogram{Schema: m.GetSchema(), ZeroThreshold: m.GetZeroThreshold(), Sum: m.GetSum(), CustomValues: m.GetCustomValues()}
	if rh := m.GetResetHint(); rh < 0 || rh > 3 {
		return nil, fmt.Errorf("reset hint %d", rh)
	}
	h.CounterReset = uint8(m.GetResetHint())
	_, isFloat := m.GetCount().(*writev2.Histogram_CountFloat)
	_, zeroFloat := m.GetZeroCount().(*writev2.Histogram_ZeroCountFloat)
	if m.GetCount() != nil && m.GetZeroCount() != nil && isFloat != zeroFloat {
		return nil, fmt.Errorf("count and zero count of two kinds")
	}
	h.Float = isFloat
	h.Count = float64(m.GetCountInt()) + m.GetCountFloat()
	h.ZeroCount = float64(m.GetZeroCountInt()) + m.GetZeroCountFloat()
	for _, sp := range m.GetPositiveSpans() {
		h.PositiveSpans = append(h.PositiveSpans, series.Span{Offset: sp.GetOffset(), Length: sp.GetLength()})
	}
	for _, sp := range m.GetNegativeSpans() {
		h.NegativeSpans = append(h.NegativeSpans, series.Span{Offset: sp.GetOffset(), Length: sp.GetLength()})
	}
	abs := func(deltas []int64) ([]float64, error) {
		var out []float64
		c := int64(0)
		for _, d := range deltas {
			if c += d; c < 0 {
				return nil, fmt.Errorf("negative count")
			}
			out = append(out, float64(c))
		}
		return out, nil
	}
	var err error
	switch {
	case isFloat && (len(m.GetPositiveDeltas()) > 0 || len(m.GetNegativeDeltas()) > 0):
		return nil, fmt.Errorf("float histogram with deltas")
	case !isFloat && (len(m.GetPositiveCounts()) > 0 || len(m.GetNegativeCounts()) > 0):
		return nil, fmt.Errorf("integer histogram with float counts")
	case isFloat:
		h.PositiveBuckets, h.NegativeBuckets = m.GetPositiveCounts(), m.GetNegativeCounts()
	default:
		if h.PositiveBuckets, err = abs(m.GetPositiveDeltas()); err != nil {
			return nil, err
		}
		if h.NegativeBuckets, err = abs(m.GetNegativeDeltas()); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func v2FlattenBatch(b *v2Batch) string {
	var sb strings.Builder
	for i := 0; i < b.Len(); i++ {
		fmt.Fprint(&sb, b.Labels(i, nil), ":")
		for j := 0; j < b.NumSamples(i); j++ {
			t, v := b.Sample(i, j)
			fmt.Fprintf(&sb, " %d=%x", t, v)
		}
		for j := 0; j < b.NumHists(i); j++ {
			t, h := b.Hist(i, j)
			fmt.Fprintf(&sb, " h%d=%x", t, series.AppendHistogramBinary(nil, h))
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

// FuzzRemoteWrite2 checks the hand-written 2.0 decoder against the
// generated one: whatever the generated decoder accepts, ours decodes to
// the same float series, or refuses for a rule of the specification that
// the generated types cannot check (symbol references, symbols[0], a
// series with both samples and histograms, metric types).
func FuzzRemoteWrite2(f *testing.F) {
	seed, _ := proto.Marshal(&writev2.Request{
		Symbols: []string{"", "__name__", "up", "job", "a", "Help text.", "seconds"},
		Timeseries: []*writev2.TimeSeries{
			{LabelsRefs: []uint32{1, 2, 3, 4}, Samples: []*writev2.Sample{{Value: 1, Timestamp: 5}, {Value: 2, Timestamp: 6}},
				Metadata:  &writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE, HelpRef: 5, UnitRef: 6},
				Exemplars: []*writev2.Exemplar{{LabelsRefs: []uint32{3, 4}, Value: 1, Timestamp: 5}}},
			{LabelsRefs: []uint32{1, 2}, Histograms: []*writev2.Histogram{{Count: &writev2.Histogram_CountInt{CountInt: 3}, Timestamp: 5}}},
		},
	})
	f.Add(seed)
	hists, _ := proto.Marshal(&writev2.Request{
		Symbols: []string{"", "__name__", "lat"},
		Timeseries: []*writev2.TimeSeries{{LabelsRefs: []uint32{1, 2}, Histograms: []*writev2.Histogram{
			{Count: &writev2.Histogram_CountInt{CountInt: 9}, ZeroCount: &writev2.Histogram_ZeroCountInt{ZeroCountInt: 1}, Sum: 4.5, Schema: -2, ZeroThreshold: 1e-9,
				PositiveSpans: []*writev2.BucketSpan{{Offset: -3, Length: 2}, {Offset: 1, Length: 1}}, PositiveDeltas: []int64{1, 2, -1},
				NegativeSpans: []*writev2.BucketSpan{{Offset: 2, Length: 1}}, NegativeDeltas: []int64{3}, ResetHint: writev2.Histogram_RESET_HINT_NO, Timestamp: 7},
			{Count: &writev2.Histogram_CountFloat{CountFloat: 2.5}, Sum: 1, Schema: -53, CustomValues: []float64{0.1, 1},
				PositiveSpans: []*writev2.BucketSpan{{Offset: 0, Length: 2}}, PositiveCounts: []float64{1.5, 1}, ResetHint: writev2.Histogram_RESET_HINT_GAUGE, Timestamp: 8},
		}}},
	})
	f.Add(hists)
	f.Fuzz(func(t *testing.T, body []byte) {
		var b v2Batch
		err := decodeV2(body, &b)
		var req writev2.Request
		if perr := proto.Unmarshal(body, &req); perr != nil {
			return // ours may accept what proto refuses (UTF-8), or refuse too
		}
		want, ferr := v2Flatten(&req)
		if err != nil {
			if ferr != nil || strings.Contains(err.Error(), "symbols[0]") || strings.Contains(err.Error(), "both float samples and histograms") ||
				strings.Contains(err.Error(), "unknown metric type") || strings.Contains(err.Error(), "outside the") || strings.Contains(err.Error(), "exemplar:") || strings.Contains(err.Error(), "histogram") {
				return
			}
			t.Fatalf("proto decodes, ours fails: %v", err)
		}
		if ferr != nil {
			t.Fatalf("ours accepts what breaks the specification: %v", ferr)
		}
		if got := v2FlattenBatch(&b); got != want {
			t.Fatalf("decoded\n%s\nproto decoded\n%s", got, want)
		}
	})
}
