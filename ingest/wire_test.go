package ingest

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	prompb "github.com/headroomdb/headroom/proto/prometheus"
	"github.com/headroomdb/headroom/storage/series"
)

// flatten renders a decoded batch for comparison.
func flatten(b batch) string {
	s := ""
	for i := 0; i < b.Len(); i++ {
		s += fmt.Sprint(b.Labels(i, nil)) + ":"
		for j := 0; j < b.NumSamples(i); j++ {
			t, v := b.Sample(i, j)
			s += fmt.Sprintf(" %d=%x", t, v)
		}
		s += "\n"
	}
	return s
}

func validUTF8(b batch) bool {
	for i := 0; i < b.Len(); i++ {
		for _, l := range b.Labels(i, nil) {
			if !utf8.ValidString(l.Name) || !utf8.ValidString(l.Value) {
				return false
			}
		}
	}
	return true
}

// FuzzWireDecode checks the hand-written decoder against the generated
// one on both schemas: whatever the generated decoder accepts, ours
// decodes to the same series, labels and samples. (Ours also accepts
// invalid UTF-8, which storage refuses when it first sees the series.)
func FuzzWireDecode(f *testing.F) {
	own, _ := proto.Marshal(&headroomv1.WriteRequest{Series: []*headroomv1.Series{
		{Labels: []*headroomv1.Label{{Name: "__name__", Value: "up"}, {Name: "a", Value: "1"}}, Samples: []*headroomv1.Sample{{TimestampMs: 5, Value: 1.5}, {TimestampMs: -1}}},
		{},
	}})
	prom, _ := proto.Marshal(&prompb.WriteRequest{Timeseries: []*prompb.TimeSeries{
		{Labels: []*prompb.Label{{Name: "__name__", Value: "up"}}, Samples: []*prompb.Sample{{Timestamp: 7, Value: 2}}},
	}})
	f.Add(own)
	f.Add(prom)
	// With metric metadata in field 3 (which the generated type, written
	// from the 1.0 specification, keeps as an unknown field).
	md := protowire.AppendTag(nil, 1, protowire.VarintType)
	md = protowire.AppendVarint(md, 1)
	md = protowire.AppendTag(md, 2, protowire.BytesType)
	md = protowire.AppendString(md, "up_total")
	f.Add(protowire.AppendBytes(protowire.AppendTag(append([]byte(nil), prom...), 3, protowire.BytesType), md))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, sc := range []wireSchema{ownSchema, promSchema} {
			fb := &flatBatch{}
			err := decodeWrite(body, sc, fb)
			var want string
			var perr error
			if sc == ownSchema {
				var m headroomv1.WriteRequest
				perr = proto.Unmarshal(body, &m)
				want = flatten(ownBatch(m.GetSeries()))
			} else {
				var m prompb.WriteRequest
				perr = proto.Unmarshal(body, &m)
				want = flatten(promBatch(m.GetTimeseries()))
			}
			if perr != nil {
				continue // ours may accept what proto refuses (UTF-8), or refuse too
			}
			if err != nil && sc == promSchema && strings.Contains(err.Error(), "metadata") {
				continue // ours reads the metadata proto leaves unknown, and refuses a bad entry
			}
			if err != nil {
				t.Fatalf("%s: proto decodes, ours fails: %v", sc.name, err)
			}
			if got := flatten(fb); got != want {
				t.Fatalf("%s: decoded\n%s\nproto decoded\n%s", sc.name, got, want)
			}
		}
	})
}

// promBatch reads a decoded remote-write request, for comparison.
type promBatch []*prompb.TimeSeries

func (b promBatch) Len() int { return len(b) }
func (b promBatch) Labels(i int, dst series.Labels) series.Labels {
	for _, l := range b[i].GetLabels() {
		dst = append(dst, series.Label{Name: l.GetName(), Value: l.GetValue()})
	}
	return dst
}
func (b promBatch) NumSamples(i int) int { return len(b[i].GetSamples()) }
func (b promBatch) Sample(i, j int) (int64, float64) {
	s := b[i].GetSamples()[j]
	return s.GetTimestamp(), s.GetValue()
}
