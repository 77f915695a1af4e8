package ingest_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"google.golang.org/protobuf/proto"

	"github.com/headroomdb/headroom/ingest"
	prompb "github.com/headroomdb/headroom/proto/prometheus"
	"github.com/headroomdb/headroom/storage"
)

// cpuTime is the process's user and system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkRemoteWriteScrape is the hot path of the scrape shape in
// process: a remote-write body of one sample for each of 5,000 existing
// series, decoded, appended and committed (fsync included) on a real data
// directory. bench/ measures the same over the network.
func BenchmarkRemoteWriteScrape(b *testing.B) {
	d, err := storage.Open(b.TempDir(), storage.Options{Retention: 30 * 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	h := ingest.NewRemoteWrite(db{d}, ingest.Options{})
	const nSeries = 5000
	base := time.Now().Add(-24 * time.Hour).UnixMilli()
	body := func(i int) []byte {
		req := &prompb.WriteRequest{}
		for s := 0; s < nSeries; s++ {
			req.Timeseries = append(req.Timeseries, &prompb.TimeSeries{
				Labels: []*prompb.Label{{Name: "__name__", Value: fmt.Sprintf("node_metric_%d", s%100)}, {Name: "env", Value: "prod"},
					{Name: "host", Value: fmt.Sprintf("h%d", s/100)}, {Name: "instance", Value: fmt.Sprintf("10.0.%d.1:9100", s/100)},
					{Name: "job", Value: "node"}, {Name: "region", Value: "eu-west-1"}},
				Samples: []*prompb.Sample{{Timestamp: base + int64(i)*10_000, Value: float64(s % 97)}},
			})
		}
		raw, _ := proto.Marshal(req)
		return snappy.Encode(nil, raw)
	}
	bodies := make([][]byte, b.N+1)
	for i := range bodies {
		bodies[i] = body(i)
	}
	post := func(body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body)))
		if rec.Code != http.StatusNoContent {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
	post(bodies[0]) // the series exist before the clock starts
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 1; i <= b.N; i++ {
		post(bodies[i])
	}
	// CPU per sample says more than time per sample, which the disk's
	// fsync latency dominates on a shared machine.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*nSeries), "cpu-ns/sample")
	b.ReportMetric(float64(b.N*nSeries)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*nSeries), "ns/sample")
}
