package cluster

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/series"
)

// BenchmarkOwnerApply is an owner's work on one message: decode the batch
// of 1,000 series x 10 samples, append it to the store and commit it.
func BenchmarkOwnerApply(b *testing.B) {
	db, err := storage.Open(b.TempDir(), storage.Options{Retention: 30 * 24 * time.Hour, Tiers: []storage.Tier{}, DisableBackground: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	n := &Node{log: slog.New(slog.DiscardHandler)}
	base := time.Now().Add(-time.Hour).UnixMilli()
	msg := func(k int) []byte {
		bt := &Batch{}
		for s := 0; s < 1000; s++ {
			bs := BatchSeries{Labels: series.FromStrings("__name__", "bench", "instance", "host-"+strconv.Itoa(s), "job", "node")}
			for i := 0; i < 10; i++ {
				bs.Samples = append(bs.Samples, series.Sample{T: base + int64(k*10+i)*1000, V: float64(i)})
			}
			bt.Series = append(bt.Series, bs)
		}
		return AppendBatch(nil, bt)
	}
	msgs := make([][]byte, b.N)
	for i := range msgs {
		msgs[i] = msg(i)
	}
	app := db.Appender()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bt, err := DecodeBatch(msgs[i])
		if err != nil {
			b.Fatal(err)
		}
		n.apply(app, 0, uint64(i), bt)
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10_000, "ns/sample")
}
