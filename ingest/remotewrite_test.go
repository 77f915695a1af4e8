package ingest_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"google.golang.org/protobuf/proto"

	"github.com/headroomdb/headroom/ingest"
	prompb "github.com/headroomdb/headroom/proto/prometheus"
	"github.com/headroomdb/headroom/storage"
)

func promSeries(name string, ts int64) *prompb.TimeSeries {
	return &prompb.TimeSeries{
		Labels:  []*prompb.Label{{Name: "__name__", Value: name}, {Name: "job", Value: "node"}},
		Samples: []*prompb.Sample{{Value: 1, Timestamp: ts}},
	}
}

func encodeRW(t *testing.T, ss ...*prompb.TimeSeries) []byte {
	t.Helper()
	b, err := proto.Marshal(&prompb.WriteRequest{Timeseries: ss})
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

func TestRemoteWrite(t *testing.T) {
	d, err := storage.Open(t.TempDir(), storage.Options{DisableBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	h := ingest.NewRemoteWrite(db{d}, ingest.Options{Limits: ingest.Limits{SeriesPerRequest: 2}})
	h.MaxBodyBytes, h.MaxDecodedBytes = 4096, 1<<16
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(body []byte) (int, string) {
		resp, err := http.Post(srv.URL, "application/x-protobuf", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(msg)
	}
	if code, msg := post(encodeRW(t, promSeries("up", now), promSeries("load", now))); code != http.StatusNoContent {
		t.Fatalf("good request: %d %s", code, msg)
	}
	// A decompression bomb: a small body whose snappy header promises a lot.
	bomb := snappy.Encode(nil, bytes.Repeat([]byte{0}, 80_000)) // ~4 KB that expands 20x
	good, _ := proto.Marshal(&prompb.WriteRequest{Timeseries: []*prompb.TimeSeries{promSeries("x", now)}})
	f := func(name string, body []byte, code int, msg string) {
		t.Helper()
		got, gotMsg := post(body)
		if got != code || !strings.Contains(gotMsg, msg) {
			t.Errorf("%s: %d %q, want %d mentioning %q", name, got, strings.TrimSpace(gotMsg), code, msg)
		}
	}
	f("not snappy", []byte("hello, this is not snappy at all"), 400, "snappy")
	f("raw protobuf", good, 400, "snappy")
	f("truncated protobuf", snappy.Encode(nil, good[:len(good)-3]), 400, "protobuf")
	f("decompression bomb", bomb, 413, "decodes to")
	f("oversized body", make([]byte, 5000), 413, "over 4096 bytes")
	f("empty labels", encodeRW(t, promSeries("ok", now), &prompb.TimeSeries{Samples: []*prompb.Sample{{Timestamp: now}}}), 400, "empty label set")
	f("too many series", encodeRW(t, promSeries("a", now), promSeries("b", now), promSeries("c", now)), 413, "limit is 2")
	f("timestamp out of range", encodeRW(t, &prompb.TimeSeries{Labels: []*prompb.Label{{Name: "__name__", Value: "x"}}, Samples: []*prompb.Sample{{Timestamp: -1}}}), 400, "outside the range")
	if n := countSeries(t, d); n != 2 {
		t.Fatalf("%d series stored, want the first request's 2 only", n)
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET = %d, want 405", resp.StatusCode)
	}
}
