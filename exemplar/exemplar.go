// Package exemplar keeps the exemplars agents send beside their samples
// (a trace ID on a latency sample), so that a dashboard can link a spike
// to a trace: the newest few of each series, in memory, with a bound on
// the series kept (the least recently written go first). It owns nothing
// on disk: exemplars do not survive a restart, as they only point at
// traces that are themselves short-lived. It must not import the storage
// engine, the query engine or the protocols.
package exemplar

import (
	"container/list"
	"fmt"
	"sort"
	"sync"
	"unicode/utf8"

	"github.com/headroomdb/headroom/storage/series"
)

// MaxLabelRunes bounds an exemplar's label set (names and values), as
// OpenMetrics does.
const MaxLabelRunes = 128

// Store is the exemplar store. The zero value is not usable: call New.
type Store struct {
	perSeries, maxSeries int

	mu  sync.Mutex
	m   map[string]*entry // by the series' labels
	lru list.List         // of *entry, most recently written first
}

type entry struct {
	key  string
	ls   series.Labels
	ring []series.Exemplar // oldest at next when full
	next int
	n    int
	elem *list.Element
}

// New returns a store of perSeries exemplars for each of at most
// maxSeries series.
func New(perSeries, maxSeries int) *Store {
	return &Store{perSeries: perSeries, maxSeries: maxSeries, m: map[string]*entry{}}
}

// Add keeps e for the series ls (sorted labels). An exemplar not newer
// than the series' newest is dropped (agents resend them), and one whose
// labels are over MaxLabelRunes is refused.
func (s *Store) Add(ls series.Labels, e series.Exemplar) error {
	if s == nil || s.perSeries <= 0 {
		return nil
	}
	n := 0
	for _, l := range e.Labels {
		n += utf8.RuneCountInString(l.Name) + utf8.RuneCountInString(l.Value)
	}
	if n > MaxLabelRunes {
		return fmt.Errorf("%w: exemplar labels of %d characters, the limit is %d", series.ErrInvalid, n, MaxLabelRunes)
	}
	key := ls.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	en, ok := s.m[key]
	if !ok {
		if len(s.m) >= s.maxSeries {
			old := s.lru.Back().Value.(*entry)
			s.lru.Remove(old.elem)
			delete(s.m, old.key)
		}
		en = &entry{key: key, ls: ls.Copy(), ring: make([]series.Exemplar, s.perSeries)}
		en.elem = s.lru.PushFront(en)
		s.m[key] = en
	} else {
		s.lru.MoveToFront(en.elem)
		if newest := en.ring[(en.next+len(en.ring)-1)%len(en.ring)]; en.n > 0 && e.T <= newest.T {
			return nil
		}
	}
	e.Labels = e.Labels.Copy()
	en.ring[en.next] = e
	en.next = (en.next + 1) % len(en.ring)
	en.n = min(en.n+1, len(en.ring))
	return nil
}

// Select returns the exemplars in [start, end] (ms) of the series any of
// the matcher sets selects, by series labels.
func (s *Store) Select(start, end int64, sets ...[]*series.Matcher) []series.SeriesExemplars {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []series.SeriesExemplars
	for _, en := range s.m {
		if !matchesAny(en.ls, sets) {
			continue
		}
		var es []series.Exemplar
		for i := range en.n {
			e := en.ring[(en.next-en.n+i+len(en.ring))%len(en.ring)]
			if e.T >= start && e.T <= end {
				es = append(es, e)
			}
		}
		if len(es) > 0 {
			out = append(out, series.SeriesExemplars{Labels: en.ls, Exemplars: es})
		}
	}
	sort.Slice(out, func(i, j int) bool { return series.Compare(out[i].Labels, out[j].Labels) < 0 })
	return out
}

func matchesAny(ls series.Labels, sets [][]*series.Matcher) bool {
	for _, ms := range sets {
		all := true
		for _, m := range ms {
			if !m.Matches(ls.Get(m.Name)) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}
