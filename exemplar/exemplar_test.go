package exemplar

import (
	"errors"
	"strings"
	"testing"

	"github.com/headroomdb/headroom/storage/series"
)

func ex(t int64, trace string) series.Exemplar {
	return series.Exemplar{Labels: series.FromStrings("trace_id", trace), Value: float64(t), T: t}
}

// TestStore: each series keeps its newest exemplars, a resent one is not
// kept twice, the series written to least recently lose theirs beyond
// the bound, and Select filters by time and by matchers.
func TestStore(t *testing.T) {
	s := New(3, 2)
	a := series.FromStrings("__name__", "rpc_seconds_bucket", "le", "0.5")
	b := series.FromStrings("__name__", "rpc_seconds_bucket", "le", "1")
	c := series.FromStrings("__name__", "other")
	for i := int64(1); i <= 5; i++ {
		if err := s.Add(a, ex(i*1000, "a")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Add(a, ex(5000, "again")); err != nil { // resent: dropped
		t.Fatal(err)
	}
	if err := s.Add(b, ex(1000, "b")); err != nil {
		t.Fatal(err)
	}
	all := []*series.Matcher{series.MustMatcher(series.MatchRegexp, "__name__", ".+")}
	got := s.Select(0, 1<<62, all)
	if len(got) != 2 || len(got[0].Exemplars) != 3 || got[0].Exemplars[0].T != 3000 || got[0].Exemplars[2].T != 5000 ||
		got[0].Exemplars[2].Labels.Get("trace_id") != "a" {
		t.Fatalf("newest three of a: %+v", got)
	}
	if r := s.Select(3500, 4500, all); len(r) != 1 || len(r[0].Exemplars) != 1 || r[0].Exemplars[0].T != 4000 {
		t.Errorf("[3.5 s, 4.5 s]: %+v", r)
	}
	le1 := []*series.Matcher{series.MustMatcher(series.MatchEqual, "le", "1")}
	if r := s.Select(0, 1<<62, le1); len(r) != 1 || r[0].Labels.Get("le") != "1" {
		t.Errorf("le=1: %+v", r)
	}
	// A third series: a was written before b's last write, so a goes.
	if err := s.Add(c, ex(9000, "c")); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range s.Select(0, 1<<62, all) {
		names[r.Labels.String()] = true
	}
	if names[a.String()] || !names[b.String()] || !names[c.String()] {
		t.Errorf("after the bound: %v", names)
	}
	long := series.Exemplar{Labels: series.FromStrings("trace_id", strings.Repeat("x", 130)), T: 10_000}
	if err := s.Add(c, long); !errors.Is(err, series.ErrInvalid) {
		t.Errorf("130-character labels: %v", err)
	}
	if err := New(0, 1).Add(a, ex(1, "x")); err != nil {
		t.Errorf("a store keeping none: %v", err)
	}
}
