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
			fmt.Fprintf(&b, " h%d=%x", h.GetTimestamp(), h.GetSum())
		}
		b.WriteString("\n")
	}
	return b.String(), nil
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
			fmt.Fprintf(&sb, " h%d=%x", t, h.Sum)
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
