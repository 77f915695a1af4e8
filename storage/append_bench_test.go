package storage

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage/series"
)

// BenchmarkAppendLateHours: a backfill as concurrent writers send it, an
// hour of one-minute samples of 200 series a commit, each pair of hours
// committed later one first, so that every other hour lands inside the
// open chunk's range. ns/op is per sample.
func BenchmarkAppendLateHours(b *testing.B) {
	for _, late := range []bool{false, true} {
		name := "in-order"
		if late {
			name = "pairs-swapped"
		}
		b.Run(name, func(b *testing.B) {
			db, err := Open(b.TempDir(), Options{Retention: 400 * 24 * time.Hour, Tiers: []Tier{}, CheckpointInterval: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			const seriesN, perHour = 200, 60
			lss := make([]series.Labels, seriesN)
			for s := range lss {
				lss[s] = series.FromStrings("__name__", "backfill", "instance", fmt.Sprint(s))
			}
			start := time.Now().Add(-300 * 24 * time.Hour).Truncate(24 * time.Hour).UnixMilli()
			hours := b.N/(seriesN*perHour) + 1
			b.ResetTimer()
			for h := 0; h < hours; h++ {
				r := h
				if late {
					r = h ^ 1 // 1, 0, 3, 2, ...
				}
				a := db.Appender()
				for s, ls := range lss {
					for k := 0; k < perHour; k++ {
						m := r*perHour + k
						if err := a.Append(ls, start+int64(m)*60_000, float64(m*(s+1)%1000)); err != nil {
							b.Fatal(err)
						}
					}
				}
				if err := a.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(hours*seriesN*perHour), "ns/sample")
		})
	}
}

// TestLateRunsLastWriteWins: commits whose series' samples land inside
// the open chunk, before it, after it and on each other's timestamps,
// read back as the last write of each timestamp, whatever the mix (the
// run-level merge of applyRun against the per-sample rules).
func TestLateRunsLastWriteWins(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for iter := 0; iter < 40; iter++ {
		db := openTest(t, t.TempDir(), Options{Retention: 400 * 24 * time.Hour, Tiers: []Tier{}})
		ls := series.FromStrings("__name__", "late", "i", fmt.Sprint(iter))
		other := series.FromStrings("__name__", "late", "i", "other")
		base := time.Now().Add(-48 * time.Hour).Truncate(time.Hour).UnixMilli()
		want := map[int64]float64{}
		for c := 0; c < 1+r.IntN(12); c++ {
			a := db.Appender()
			for k := 0; k < 1+r.IntN(80); k++ {
				ts := base + int64(r.IntN(300))*30_000
				v := float64(r.IntN(1_000_000))
				if err := a.Append(ls, ts, v); err != nil {
					t.Fatal(err)
				}
				want[ts] = v
				if r.IntN(10) == 0 { // another series cuts the run
					a.Append(other, ts, v)
				}
			}
			if err := a.Commit(); err != nil {
				t.Fatal(err)
			}
			if r.IntN(4) == 0 {
				if err := db.Checkpoint(); err != nil {
					t.Fatal(err)
				}
			}
		}
		q, err := db.Querier(base-1, base+int64(24*time.Hour/time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		set, err := q.Series(series.MustMatcher(series.MatchEqual, "i", fmt.Sprint(iter)))
		if err != nil {
			t.Fatal(err)
		}
		got := map[int64]float64{}
		prev := int64(math.MinInt64)
		for set.Next() {
			_, it := set.At()
			for it.Next() {
				ts, v := it.At()
				if ts <= prev {
					t.Fatalf("iteration %d: %d after %d", iter, ts, prev)
				}
				prev = ts
				got[ts] = v
			}
		}
		q.Close()
		if !maps.Equal(got, want) {
			t.Fatalf("iteration %d: read %d samples, want %d (last write of each timestamp)", iter, len(got), len(want))
		}
		db.Close()
	}
}
