package ingest_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/golang/snappy"
	"google.golang.org/protobuf/proto"

	"github.com/headroomdb/headroom/ingest"
	prompb "github.com/headroomdb/headroom/proto/prometheus"
	"github.com/headroomdb/headroom/storage"
)

// FuzzRemoteWrite sends arbitrary bodies (snappy, then protobuf) through
// the remote-write handler onto a real data directory: it must answer
// 204, 400, 413 or 429, never panic. Seed corpus:
// testdata/fuzz/FuzzRemoteWrite; raw protobuf seeds are also tried
// snappy-wrapped so that the fuzzer reaches the decoder behind snappy.
func FuzzRemoteWrite(f *testing.F) {
	good, _ := proto.Marshal(&prompb.WriteRequest{Timeseries: []*prompb.TimeSeries{promSeries("up", now)}})
	f.Add(snappy.Encode(nil, good), false)
	f.Add(good, true)
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f}, false)
	d, err := storage.Open(f.TempDir(), storage.Options{DisableBackground: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	h := ingest.NewRemoteWrite(db{d}, ingest.Options{})
	f.Fuzz(func(t *testing.T, body []byte, wrap bool) {
		if wrap {
			body = snappy.Encode(nil, body)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body)))
		switch rec.Code {
		case http.StatusNoContent, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}
