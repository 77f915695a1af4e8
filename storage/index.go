package storage

import (
	"bytes"
	"encoding/binary"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/series"
)

// postings reads the series IDs of one day whose label name has a value
// accepted by match, sorted and unique. exact, when not nil, narrows the
// scan to one value.
func postings(it *pebble.Iterator, day uint32, name string, exact *string, match func(string) bool) ([]uint64, error) {
	var prefix []byte
	if exact != nil {
		prefix = postingPrefix(nil, day, name, *exact)
	} else {
		prefix = postingPrefix(nil, day, name, "")
		prefix = prefix[:len(prefix)-1] // 'P' day name 0x00
	}
	end := prefixEnd(prefix)
	var ids []uint64
	var lastVal []byte
	lastOK := false
	for valid := it.SeekGE(prefix); valid && bytes.Compare(it.Key(), end) < 0; valid = it.Next() {
		k := it.Key()
		if exact != nil {
			// A value holding 0x00 could extend the prefix; only exact
			// lengths are this value.
			if len(k) != len(prefix)+8 {
				continue
			}
			ids = append(ids, binary.BigEndian.Uint64(k[len(k)-8:]))
			continue
		}
		_, _, val, id, ok := parsePosting(k)
		if !ok {
			continue
		}
		if lastVal == nil || !bytes.Equal(val, lastVal) {
			lastVal = append(lastVal[:0], val...)
			lastOK = match(string(val))
		}
		if lastOK {
			ids = append(ids, id)
		}
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if exact == nil {
		slices.Sort(ids)
		ids = slices.Compact(ids)
	}
	return ids, nil
}

func intersect(a, b []uint64) []uint64 {
	out := a[:0:0]
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			i++
		case a[i] > b[j]:
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

func subtract(a, b []uint64) []uint64 {
	out := a[:0:0]
	j := 0
	for _, x := range a {
		for j < len(b) && b[j] < x {
			j++
		}
		if j < len(b) && b[j] == x {
			continue
		}
		out = append(out, x)
	}
	return out
}

func union(a, b []uint64) []uint64 {
	out := make([]uint64, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case a[i] > b[j]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// selectDay returns the series of one day that satisfy every matcher, with
// Prometheus's semantics: a series without the label has the value "".
func selectDay(it *pebble.Iterator, day uint32, ms []*series.Matcher) ([]uint64, error) {
	// Start from the most selective positive matchers; matchers that
	// accept "" are applied by subtraction from everything.
	sorted := append([]*series.Matcher(nil), ms...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return rank(sorted[i]) < rank(sorted[j])
	})
	var set []uint64
	have := false
	for _, m := range sorted {
		if m.Matches("") {
			// Matches series without the label: remove those whose value fails.
			if !have {
				all, err := postings(it, day, series.MetricName, nil, func(string) bool { return true })
				if err != nil {
					return nil, err
				}
				set, have = all, true
			}
			bad, err := postings(it, day, m.Name, nil, func(v string) bool { return !m.Matches(v) })
			if err != nil {
				return nil, err
			}
			set = subtract(set, bad)
		} else {
			var ids []uint64
			var err error
			if m.Type == series.MatchEqual {
				v := m.Value
				ids, err = postings(it, day, m.Name, &v, nil)
			} else {
				ids, err = postings(it, day, m.Name, nil, m.Matches)
			}
			if err != nil {
				return nil, err
			}
			if !have {
				set, have = ids, true
			} else {
				set = intersect(set, ids)
			}
		}
		if have && len(set) == 0 {
			return nil, nil
		}
	}
	if !have {
		return postings(it, day, series.MetricName, nil, func(string) bool { return true })
	}
	return set, nil
}

func rank(m *series.Matcher) int {
	switch {
	case m.Type == series.MatchEqual && m.Value != "":
		return 0
	case !m.Matches(""):
		return 1
	default:
		return 2
	}
}

// labelNamesDay adds the label names of one day to set, skipping from name
// to name so that the cost is one seek per name, not one step per series.
func labelNamesDay(it *pebble.Iterator, day uint32, set map[string]struct{}) error {
	prefix := binary.BigEndian.AppendUint32([]byte{kindPostings}, day)
	end := prefixEnd(prefix)
	for valid := it.SeekGE(prefix); valid && bytes.Compare(it.Key(), end) < 0; {
		_, name, _, _, ok := parsePosting(it.Key())
		if !ok {
			valid = it.Next()
			continue
		}
		set[string(name)] = struct{}{}
		next := append(append(append([]byte(nil), prefix...), name...), 1) // past name 0x00 ...
		valid = it.SeekGE(next)
	}
	return it.Error()
}

// labelValuesDay adds the values of label name in one day to set, one
// seek per value.
func labelValuesDay(it *pebble.Iterator, day uint32, name string, set map[string]struct{}) error {
	prefix := postingPrefix(nil, day, name, "")
	prefix = prefix[:len(prefix)-1]
	end := prefixEnd(prefix)
	for valid := it.SeekGE(prefix); valid && bytes.Compare(it.Key(), end) < 0; {
		k := it.Key()
		_, _, val, _, ok := parsePosting(k)
		if !ok {
			valid = it.Next()
			continue
		}
		set[string(val)] = struct{}{}
		// Skip the rest of this value: the key up to the value, then 0x01.
		next := append(append([]byte(nil), k[:len(k)-9]...), 1)
		valid = it.SeekGE(next)
	}
	return it.Error()
}

// setPostings adds series id's postings (one per label of ls) in
// postings partition part to b; buf is scratch space, returned for reuse.
func setPostings(b *pebble.Batch, part uint32, id uint64, ls series.Labels, buf []byte) ([]byte, error) {
	for _, l := range ls {
		buf = binary.BigEndian.AppendUint64(postingPrefix(buf[:0], part, l.Name, l.Value), id)
		if err := b.Set(buf, nil, nil); err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// deletePostings deletes what setPostings adds.
func deletePostings(b *pebble.Batch, part uint32, id uint64, ls series.Labels) error {
	var k []byte
	for _, l := range ls {
		k = binary.BigEndian.AppendUint64(postingPrefix(k[:0], part, l.Name, l.Value), id)
		if err := b.Delete(k, nil); err != nil {
			return err
		}
	}
	return nil
}
