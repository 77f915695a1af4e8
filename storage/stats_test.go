package storage

import (
	"fmt"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage/series"
)

func TestHeadStats(t *testing.T) {
	c := &clock{now: day0}
	db := openTest(t, t.TempDir(), testOptions(c))
	defer db.Close()
	now := ms(c.now) - 6*3600_000 // inside one day: chunks are cut at midnight
	for i := 0; i < 3; i++ {
		mustAppend(t, db, series.FromStrings("__name__", "up", "job", "node", "i", fmt.Sprint(i)), series.Sample{T: now - 1000, V: 1}, series.Sample{T: now, V: 1})
	}
	mustAppend(t, db, series.FromStrings("__name__", "cpu", "job", "api"), series.Sample{T: now - int64(time.Hour/time.Millisecond), V: 1})
	st := db.HeadStats(2)
	if st.NumSeries != 4 || st.ChunkCount != 4 || st.MinTime != now-3600_000 || st.MaxTime != now {
		t.Errorf("head: %+v", st)
	}
	want := func(name string, got []NameCount, w string) {
		if fmt.Sprint(got) != w {
			t.Errorf("%s = %v, want %s", name, got, w)
		}
	}
	want("by metric", st.SeriesCountByMetricName, "[{up 3} {cpu 1}]")
	want("values by name", st.LabelValueCountByLabelName, "[{i 3} {__name__ 2}]")
	want("memory by name", st.MemoryInBytesByLabelName, "[{job 7} {__name__ 5}]")
	want("pairs", st.SeriesCountByLabelValuePair, "[{__name__=up 3} {job=node 3}]")
}
